from __future__ import annotations

import ipaddress
import logging

import pytest
from django.test import RequestFactory, override_settings
from hypothesis import given
from hypothesis import strategies as st

from door import clientip
from door.clientip import (
    UNKNOWN,
    pick_client_ip,
    rate_key,
    request_client_ip,
    scope_client_ip,
)


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "expected"),
    [
        # No proxy: the header is whatever the client wrote, so it is ignored.
        ("198.51.100.9", ["203.0.113.7"], 0, "198.51.100.9"),
        # One proxy (the ingress) appends the peer it saw: the last entry is the client,
        # anything to its left was sent by the client and is not believed.
        ("10.0.0.5", ["1.2.3.4, 203.0.113.7"], 1, "203.0.113.7"),
        # Two proxies: the load balancer appended the client, the ingress the balancer.
        ("10.0.0.5", ["1.2.3.4, 203.0.113.7, 10.0.0.9"], 2, "203.0.113.7"),
        # Two X-Forwarded-For headers count as one list, in order.
        ("10.0.0.5", ["1.2.3.4", "203.0.113.7"], 1, "203.0.113.7"),
        # Fewer hops than trusted proxies: the client is unknown, never the socket peer
        # (behind a proxy that is the proxy itself).
        ("10.0.0.5", ["203.0.113.7"], 2, UNKNOWN),
        ("10.0.0.5", [], 1, UNKNOWN),
        ("10.0.0.5", [" , "], 1, UNKNOWN),
        # Garbage where the proxy's entry should be: unknown, never the garbage.
        ("10.0.0.5", ["1.2.3.4, not-an-ip"], 1, UNKNOWN),
        # Ports and brackets some proxies add.
        ("10.0.0.5", ["203.0.113.7:51234"], 1, "203.0.113.7"),
        ("10.0.0.5", ["[2001:db8::1]:443"], 1, "2001:db8::1"),
        # A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6.
        ("::ffff:198.51.100.9", [], 0, "198.51.100.9"),
        (None, [], 0, UNKNOWN),
        ("not-an-ip", [], 0, UNKNOWN),
    ],
)
def test_pick_client_ip(
    remote: str | None, forwarded: list[str], trusted: int, expected: str
) -> None:
    assert pick_client_ip(remote, forwarded, trusted_proxies=trusted) == expected


def test_request_and_scope_agree() -> None:
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7"
    )
    scope = {
        "type": "websocket",
        "client": ["10.0.0.5", 40000],
        "headers": [(b"host", b"x"), (b"x-forwarded-for", b"6.6.6.6, 203.0.113.7")],
    }
    for trusted, expected in [(0, "10.0.0.5"), (1, "203.0.113.7"), (2, "6.6.6.6")]:
        assert request_client_ip(request, trusted_proxies=trusted) == expected
        assert scope_client_ip(scope, trusted_proxies=trusted) == expected


def test_settings_decide_the_trusted_proxy_count() -> None:
    scope = {"client": ("10.0.0.5", 1), "headers": [(b"X-Forwarded-For", b"203.0.113.7")]}
    with override_settings(TRUSTED_PROXY_COUNT=0):
        assert scope_client_ip(scope) == "10.0.0.5"
    with override_settings(TRUSTED_PROXY_COUNT=1):
        assert scope_client_ip(scope) == "203.0.113.7"


def test_scope_without_client_is_unknown() -> None:
    assert scope_client_ip({"type": "websocket", "headers": []}, trusted_proxies=0) == UNKNOWN


def test_rate_key_groups_ipv6_by_56_by_default() -> None:
    assert rate_key("203.0.113.7") == "203.0.113.7"
    assert rate_key("2001:db8:1:2:aaaa::1") == "2001:db8:1::/56"
    # A home's /56 holds 256 /64s: they are one visitor.
    assert rate_key("2001:db8:1:ff::9") == rate_key("2001:db8:1:2:aaaa::1")
    assert rate_key("2001:db8:1:100::1") != rate_key("2001:db8:1:2::1")
    assert rate_key(UNKNOWN) == UNKNOWN


@override_settings(CLIENT_IPV6_PREFIX=48)
def test_the_ipv6_prefix_is_a_setting() -> None:
    assert rate_key("2001:db8:1:ff00::1") == "2001:db8:1::/48"
    assert rate_key("2001:db8:1:ff00::1", ipv6_prefix=64) == "2001:db8:1:ff00::/64"
    assert rate_key("198.51.100.9") == "198.51.100.9"


@given(
    st.integers(min_value=0, max_value=2**128 - 1),
    st.integers(min_value=0, max_value=2**128 - 1),
    st.integers(min_value=32, max_value=64),
)
def test_two_ipv6_addresses_share_a_bucket_exactly_when_their_prefixes_match(
    a: int, b: int, prefix: int
) -> None:
    first, second = ipaddress.IPv6Address(a), ipaddress.IPv6Address(b)
    if first.ipv4_mapped or second.ipv4_mapped:
        return  # those are IPv4 clients (see _parse), not IPv6 ones
    same = (a >> (128 - prefix)) == (b >> (128 - prefix))
    key_a = rate_key(str(first), ipv6_prefix=prefix)
    assert (key_a == rate_key(str(second), ipv6_prefix=prefix)) == same
    assert key_a.endswith(f"/{prefix}")


def test_a_short_chain_is_logged_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    clientip._warned = False
    with caplog.at_level(logging.WARNING, logger="door.clientip"):
        for _ in range(3):
            assert pick_client_ip("10.0.0.5", [], trusted_proxies=1) == UNKNOWN
        assert pick_client_ip("10.0.0.5", ["203.0.113.7"], trusted_proxies=1) == "203.0.113.7"
    warnings = [r for r in caplog.records if "TRUSTED_PROXY_COUNT" in r.getMessage()]
    assert len(warnings) == 1
    assert "10.0.0.5" not in warnings[0].getMessage()


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_a_forwarded_ipv6_client_is_limited_by_its_prefix() -> None:
    request = RequestFactory().post(
        "/api/infra/chaos", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="2001:db8::7"
    )
    assert rate_key(request_client_ip(request)) == "2001:db8::/56"
