"""The websocket Origin check: the page's own origin, exactly (scheme, host and port).

A browser sends the Origin of the page that opens a websocket, and a page on any other
site could otherwise open one to us with the visitor's cookies (cross-site websocket
hijacking). Channels' AllowedHostsOriginValidator only compares host names: a page at
http://127.0.0.1:9999 or https://127.0.0.1 passed against a site at
http://127.0.0.1:8000. Here the allowed origins are:

- the origin the connection itself was made to: `http://` + the Host header for ws,
  `https://` for wss, or when `SECURE_PROXY_SSL_HEADER` says the proxy in front spoke
  TLS (X-Forwarded-Proto: https); the Host must be in ALLOWED_HOSTS, so a DNS-rebinding
  page with a Host of its own is still refused;
- each entry of `CSRF_TRUSTED_ORIGINS` (`DJANGO_CSRF_TRUSTED_ORIGINS`), compared the same
  way: the origins allowed to POST may open the websocket too.

Default ports are normalised (http://h = http://h:80). A missing or unparsable Origin is
refused: browsers always send one, and a script may send anything anyway (the caps and
the frame budget are what limit scripts). Refusals close the handshake (HTTP 403) and are
counted in infra_websockets_refused_total{reason="origin"}.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from runtime.metrics import WEBSOCKETS_REFUSED

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]  # scheme, host (lower case, IPv6 without brackets), port


def parse_origin(text: str) -> Origin | None:
    """("https", "example.com", 443) for "https://example.com"; None for anything that is
    not a bare http(s) origin (a path, user info, a bad port, "null")."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def origin_allowed(
    origin: str | None,
    *,
    host: str | None,
    secure: bool,
    allowed_hosts: Iterable[str],
    trusted_origins: Iterable[str],
) -> bool:
    """Whether a websocket with this Origin header may connect to `host` (the Host
    header) over TLS (`secure`) or not."""
    if origin is None:
        return False
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    if any(parse_origin(trusted) == parsed for trusted in trusted_origins):
        return True
    if not host:
        return False
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, list(allowed_hosts)):
        return False
    own = parse_origin(("https://" if secure else "http://") + host)
    return own is not None and own == parsed


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", ()) if k.lower() == name]
    # Two Origin or Host headers are not something a browser sends: treat as missing.
    return values[0].decode("latin-1") if len(values) == 1 else None


def _secure(scope: Mapping[str, Any]) -> bool:
    if scope.get("scheme") == "wss":
        return True
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if not proxy_header:
        return False
    meta_name, secure_value = proxy_header
    name = meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode()
    value = _header(scope, name)
    # As Django's HttpRequest.is_secure: the first value, when a proxy appended several.
    return value is not None and value.split(",", 1)[0].strip() == secure_value


def scope_origin_allowed(scope: Mapping[str, Any]) -> bool:
    return origin_allowed(
        _header(scope, b"origin"),
        host=_header(scope, b"host"),
        secure=_secure(scope),
        allowed_hosts=settings.ALLOWED_HOSTS,
        trusted_origins=settings.CSRF_TRUSTED_ORIGINS,
    )


class ExactOriginValidator:
    """ASGI middleware for websockets: refuses the handshake unless the Origin is allowed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and not scope_origin_allowed(scope):
            WEBSOCKETS_REFUSED.labels(reason="origin").inc()
            log.info("websocket refused: origin not allowed")
            # Closing before accepting makes daphne answer the handshake with 403.
            message = await receive()
            if message.get("type") == "websocket.connect":
                await send({"type": "websocket.close"})
            return
        await self.app(scope, receive, send)
