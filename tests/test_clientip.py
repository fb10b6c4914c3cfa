from __future__ import annotations

import pytest
from django.test import RequestFactory, override_settings

from infra_site.clientip import (
    UNKNOWN,
    pick_client_ip,
    rate_key,
    ratelimit_key,
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
        # Fewer hops than trusted proxies: the request bypassed them; use the socket.
        ("10.0.0.5", ["203.0.113.7"], 2, "10.0.0.5"),
        ("10.0.0.5", [], 1, "10.0.0.5"),
        # Garbage where the proxy's entry should be: the socket, never the garbage.
        ("10.0.0.5", ["1.2.3.4, not-an-ip"], 1, "10.0.0.5"),
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


def test_rate_key_groups_ipv6_by_64() -> None:
    assert rate_key("203.0.113.7") == "203.0.113.7"
    assert rate_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert rate_key("2001:db8:1:2:bbbb::9") == rate_key("2001:db8:1:2:aaaa::1")
    assert rate_key("2001:db8:1:3::1") != rate_key("2001:db8:1:2::1")
    assert rate_key(UNKNOWN) == UNKNOWN


@override_settings(TRUSTED_PROXY_COUNT=1)
def test_ratelimit_key_uses_the_forwarded_client() -> None:
    request = RequestFactory().post(
        "/api/infra/chaos", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="2001:db8::7"
    )
    assert ratelimit_key("chaos", request) == "2001:db8::/64"
