"""Who is the client? One answer for HTTP views and websocket connections alike.

Behind an ingress the socket peer is the proxy, and the real client is in
X-Forwarded-For. That header is a list anyone can prepend to, so only the entries that our
own proxies appended can be believed: with `TRUSTED_PROXY_COUNT = n` the client is the
n-th entry counted from the right. With 0 (no proxy) the socket address is the client.

Limits are applied per `rate_key(ip)`, not per address: one IPv6 subscriber usually gets
a whole /64, so counting single IPv6 addresses would let one visitor be millions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest

# What a client without a usable address (a unix socket, a test harness) is grouped as.
# They share one bucket, which errs on the side of limiting.
UNKNOWN = "unknown"
IPV6_PREFIX = 64


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
    """The client address given the socket peer and the X-Forwarded-For header values.

    Falls back to the socket peer when the header has fewer entries than there are
    trusted proxies (the request did not come through them) or the entry is not an IP:
    a client must never be able to choose its own rate-limit bucket.
    """
    remote = _parse(remote_addr) if remote_addr else None
    if trusted_proxies > 0:
        hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
        if len(hops) >= trusted_proxies:
            found = _parse(hops[-trusted_proxies])
            if found is not None:
                return found
    return remote or UNKNOWN


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


def rate_key(ip: str) -> str:
    """The bucket an address is limited in: itself for IPv4, its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


def ratelimit_key(group: str, request: HttpRequest) -> str:
    """A django-ratelimit `key=` callable: the request's rate-limit bucket."""
    return rate_key(request_client_ip(request))
