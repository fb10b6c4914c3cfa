"""The websocket Origin check: scheme, host and port, exactly (door/wsorigin.py)."""

from __future__ import annotations

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from dashboard.routing import websocket_urlpatterns
from door.wsorigin import ExactOriginValidator, origin_allowed, parse_origin

HOSTS = ["127.0.0.1", "localhost", "[::1]", "chaos.example.com"]


def allowed(
    origin: str | None, host: str | None, *, secure: bool = False, trusted: list[str] | None = None
) -> bool:
    return origin_allowed(
        origin, host=host, secure=secure, allowed_hosts=HOSTS, trusted_origins=trusted or []
    )


@pytest.mark.parametrize(
    ("origin", "host", "secure", "expected"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", False, True),
        ("http://127.0.0.1:8000/", "127.0.0.1:8000", False, True),
        ("HTTP://LOCALHOST:8000", "localhost:8000", False, True),
        ("http://[::1]:8000", "[::1]:8000", False, True),
        ("https://chaos.example.com", "chaos.example.com", True, True),
        ("https://chaos.example.com:443", "chaos.example.com", True, True),
        ("http://chaos.example.com", "chaos.example.com:80", False, True),
        # Another port of the same host: another origin.
        ("http://127.0.0.1:9999", "127.0.0.1:8000", False, False),
        ("http://127.0.0.1", "127.0.0.1:8000", False, False),
        # Another scheme: https://127.0.0.1 against a plain-http page.
        ("https://127.0.0.1", "127.0.0.1:8000", False, False),
        ("https://127.0.0.1:8000", "127.0.0.1:8000", False, False),
        ("http://chaos.example.com", "chaos.example.com", True, False),
        # Another host, or a host we do not serve (DNS rebinding: Host and Origin agree).
        ("http://localhost:8000", "127.0.0.1:8000", False, False),
        ("http://evil.example:8000", "evil.example:8000", False, False),
        # Not an origin at all.
        (None, "127.0.0.1:8000", False, False),
        ("null", "127.0.0.1:8000", False, False),
        ("", "127.0.0.1:8000", False, False),
        ("http://127.0.0.1:8000/infra", "127.0.0.1:8000", False, False),
        ("http://user@127.0.0.1:8000", "127.0.0.1:8000", False, False),
        ("http://127.0.0.1:99999", "127.0.0.1:8000", False, False),
        ("ws://127.0.0.1:8000", "127.0.0.1:8000", False, False),
        ("http://127.0.0.1:8000", None, False, False),
        ("http://127.0.0.1:8000", "127.0.0.1:8000/x", False, False),
    ],
)
def test_origin_must_match_scheme_host_and_port(
    origin: str | None, host: str | None, secure: bool, expected: bool
) -> None:
    assert allowed(origin, host, secure=secure) is expected


def test_csrf_trusted_origins_are_allowed_exactly() -> None:
    trusted = ["https://www.chaos.example.com", "http://127.0.0.1:3000"]
    assert allowed("https://www.chaos.example.com", "chaos.example.com", trusted=trusted)
    assert allowed("http://127.0.0.1:3000", "127.0.0.1:8000", trusted=trusted)
    assert not allowed("http://www.chaos.example.com", "chaos.example.com", trusted=trusted)
    assert not allowed("http://127.0.0.1:3001", "127.0.0.1:8000", trusted=trusted)


@given(
    scheme=st.sampled_from(["http", "https"]),
    port=st.integers(min_value=1, max_value=65535),
    other_scheme=st.sampled_from(["http", "https"]),
    other_port=st.integers(min_value=1, max_value=65535),
    secure=st.booleans(),
)
def test_exactly_the_own_origin_passes(
    scheme: str, port: int, other_scheme: str, other_port: int, secure: bool
) -> None:
    host = f"chaos.example.com:{port}"
    own = f"{'https' if secure else 'http'}://{host}"
    assert allowed(own, host, secure=secure)
    other = parse_origin(f"{other_scheme}://chaos.example.com:{other_port}")
    expected = other == parse_origin(own)
    assert allowed(f"{other_scheme}://chaos.example.com:{other_port}", host, secure=secure) is (
        expected
    )


def refused(reason: str) -> float:
    value = REGISTRY.get_sample_value("infra_websockets_refused_total", {"reason": reason})
    return value or 0.0


async def handshake(headers: list[tuple[bytes, bytes]], scheme: str = "ws") -> bool:
    app = ExactOriginValidator(URLRouter(websocket_urlpatterns))
    communicator = WebsocketCommunicator(app, "/ws/infra/", headers=headers)
    communicator.scope["scheme"] = scheme
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return bool(connected)


async def test_the_middleware_refuses_a_foreign_port_and_counts_it() -> None:
    before = refused("origin")
    assert await handshake([(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000")])
    assert not await handshake(
        [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:9999")]
    )
    assert refused("origin") == before + 1


async def test_two_origin_headers_are_refused() -> None:
    assert not await handshake(
        [
            (b"host", b"127.0.0.1:8000"),
            (b"origin", b"http://127.0.0.1:8000"),
            (b"origin", b"http://evil.example"),
        ]
    )


async def test_wss_means_an_https_origin() -> None:
    headers = [(b"host", b"localhost"), (b"origin", b"https://localhost")]
    assert await handshake(headers, scheme="wss")
    assert not await handshake(headers, scheme="ws")


@override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
async def test_behind_a_tls_proxy_the_forwarded_proto_decides() -> None:
    page = [(b"host", b"localhost"), (b"origin", b"https://localhost")]
    assert await handshake([*page, (b"x-forwarded-proto", b"https")])
    assert not await handshake([*page, (b"x-forwarded-proto", b"http")])
    assert not await handshake(page)


async def test_without_the_proxy_setting_x_forwarded_proto_is_not_believed() -> None:
    page = [(b"host", b"localhost"), (b"origin", b"https://localhost")]
    assert not await handshake([*page, (b"x-forwarded-proto", b"https")])
