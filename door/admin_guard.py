"""The admin's two guards: who may reach it at all, and how often a login may fail.

- `AdminNetworkMiddleware`: the admin (everything under `ADMIN_URL`) answers only clients
  inside `ADMIN_ALLOWED_NETWORKS`; everyone else gets the same 404 as any unknown URL, so
  the admin's existence is not advertised. The client address is the one the chaos
  limits use (door/clientip.py); an unknown client (a forwarding chain shorter
  than TRUSTED_PROXY_COUNT) is never allowed.
- Failed logins are counted by django-axes (settings: `AXES_*`, set from
  `ADMIN_LOGIN_FAILURE_LIMIT` and `ADMIN_LOGIN_COOLOFF_MINUTES`), per client and per
  username: after the limit, further attempts are refused with 429 and this module's
  page until the cool-down has passed since the last failure. Each failure is a row in
  the admin ("Axes" section) and a log line (address and username masked by axes).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.deprecation import MiddlewareMixin

from door.clientip import rate_key, request_client_ip


def client_allowed(request: HttpRequest) -> bool:
    """Is the request's client inside ADMIN_ALLOWED_NETWORKS? Unknown clients are not."""
    try:
        client = ipaddress.ip_address(request_client_ip(request))
    except ValueError:
        return False
    return any(client in network for network in settings.ADMIN_ALLOWED_NETWORKS)


class AdminNetworkMiddleware(MiddlewareMixin):
    """404 for the admin's URLs unless the client is in ADMIN_ALLOWED_NETWORKS."""

    def process_request(self, request: HttpRequest) -> None:
        if request.path_info.startswith(f"/{settings.ADMIN_URL}") and not client_allowed(request):
            raise Http404


def axes_client_ip(request: HttpRequest) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: the address failures are counted against.

    One IPv6 subscriber holds a whole prefix, so an IPv6 client is counted as its prefix
    (`rate_key`, CLIENT_IPV6_PREFIX), stored as the prefix's first address (axes keeps an
    IP address, not a network). None for an unknown client; the middleware above has
    already refused those.
    """
    key = rate_key(request_client_ip(request))
    try:
        return str(ipaddress.ip_network(key).network_address)
    except ValueError:
        return None


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: Mapping[str, Any] | None = None,
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: 429, a page saying how long to wait, and Retry-After.

    The wait is the whole cool-down: axes restarts it with every attempt made while
    locked out, so hammering the form only keeps it shut.
    """
    cool_off: timedelta = settings.AXES_COOLOFF_TIME
    minutes = math.ceil(cool_off.total_seconds() / 60)
    response = render(
        request,
        "admin_locked_out.html",
        {"minutes": minutes, "failure_limit": settings.AXES_FAILURE_LIMIT},
        status=429,
    )
    response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response
