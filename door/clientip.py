"""Who is the client? One answer for HTTP views and websocket connections alike.

Behind an ingress the socket peer is the proxy, and the real client is in
X-Forwarded-For. That header is a list anyone can prepend to, so only the entries that our
own proxies appended can be believed: with `TRUSTED_PROXY_COUNT = n` the client is the
n-th entry counted from the right. With 0 (no proxy) the socket address is the client.

When the list is shorter than `n`, or the entry our proxy should have written is not an
address, the client is UNKNOWN. Never the socket peer: behind a proxy that is the proxy's
own private address, which would open `/metrics` to the internet and put every visitor in
one shared bucket. Unknown clients may not press the chaos button, do not get `/metrics`,
and share one websocket cap; the first one is logged (once per process), so a deploy whose
proxy count is wrong is obvious at once rather than a flood of lines.

Limits are applied per `rate_key(ip)`, not per address: one IPv6 subscriber usually gets
a whole prefix (a /56 or /48 for a home), so counting single IPv6 addresses or /64s would
let one visitor be hundreds. `CLIENT_IPV6_PREFIX` says how long that prefix is.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest

log = logging.getLogger(__name__)

# What a client without a usable address is. Never a rate-limit bucket to share out:
# callers refuse it (chaos, /metrics) or cap it as one client (websockets).
UNKNOWN = "unknown"

_warned = False
_warned_lock = threading.Lock()


def _warn_once(hops: int, trusted_proxies: int) -> None:
    global _warned
    with _warned_lock:
        if _warned:
            return
        _warned = True
    log.warning(
        "X-Forwarded-For holds %d usable entries but TRUSTED_PROXY_COUNT is %d: such "
        "clients are treated as unknown (no chaos presses, no /metrics, one shared "
        "websocket cap). Check that every trusted proxy appends to X-Forwarded-For. "
        "Logged once per process.",
        hops,
        trusted_proxies,
    )


def _parse(value: str) -> str | None:
    """The normalised address in one X-Forwarded-For entry, or None if it is not one."""
    text = value.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:51234", some proxies add the port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; they are IPv4 clients.
        address = address.ipv4_mapped
    return str(address)


def pick_client_ip(
    remote_addr: str | None, forwarded_for: Iterable[str], *, trusted_proxies: int
) -> str:
    """The client address given the socket peer and the X-Forwarded-For header values,
    or UNKNOWN: a client must never be able to choose its own rate-limit bucket, and a
    missing proxy entry must never make the proxy the client."""
    if trusted_proxies <= 0:
        return (_parse(remote_addr) if remote_addr else None) or UNKNOWN
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    found = _parse(hops[-trusted_proxies]) if len(hops) >= trusted_proxies else None
    if found is None:
        _warn_once(len(hops), trusted_proxies)
        return UNKNOWN
    return found


def _trusted(trusted_proxies: int | None) -> int:
    return int(settings.TRUSTED_PROXY_COUNT) if trusted_proxies is None else trusted_proxies


def request_client_ip(request: HttpRequest, *, trusted_proxies: int | None = None) -> str:
    """The client address of a Django request (REMOTE_ADDR + HTTP_X_FORWARDED_FOR)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    return pick_client_ip(
        request.META.get("REMOTE_ADDR"),
        [forwarded] if forwarded else [],
        trusted_proxies=_trusted(trusted_proxies),
    )


def scope_client_ip(scope: Mapping[str, Any], *, trusted_proxies: int | None = None) -> str:
    """The client address of an ASGI connection scope (`client` + raw headers)."""
    client = scope.get("client")
    remote = str(client[0]) if client else None
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name.lower() == b"x-forwarded-for"
    ]
    return pick_client_ip(remote, forwarded, trusted_proxies=_trusted(trusted_proxies))


def rate_key(ip: str, *, ipv6_prefix: int | None = None) -> str:
    """The bucket an address is limited in: itself for IPv4, its prefix for IPv6
    (`CLIENT_IPV6_PREFIX` bits, /56 by default). UNKNOWN stays UNKNOWN."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        prefix = int(settings.CLIENT_IPV6_PREFIX) if ipv6_prefix is None else ipv6_prefix
        return str(ipaddress.IPv6Network((address, prefix), strict=False))
    return str(address)
