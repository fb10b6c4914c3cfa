"""Two budgets on the shared Redis cache: one per visitor, one for the whole cluster.

django-ratelimit does the counting (`get_usage`, fixed windows whose edges are jittered
per key); this module decides the order and turns its answer into a Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from django.conf import settings
from django.http import HttpRequest
from django_ratelimit.core import get_usage

PER_IP_GROUP = "chaos.per_ip"
GLOBAL_GROUP = "chaos.global"


class RateLimitUnavailable(Exception):
    """The counters could not be read or written (Redis down): refuse, never let through."""


@dataclass(frozen=True)
class RateDecision:
    limited: bool
    # Seconds until the window that refused this request is over; 0 when not limited.
    retry_after: int = 0
    scope: str = ""  # "ip" or "global" when limited


def _usage(request: HttpRequest, *, group: str, value: str, rate: str) -> tuple[bool, int]:
    try:
        usage = get_usage(
            request,
            group=group,
            key=lambda _group, _request: value,
            rate=rate,
            method="POST",
            increment=True,
        )
    except (redis.RedisError, OSError) as exc:
        raise RateLimitUnavailable(str(exc)) from exc
    if usage is None:
        # Only when ratelimiting is switched off in settings (RATELIMIT_ENABLE=False).
        return False, 0
    if usage["time_left"] < 0:
        # django-ratelimit's fail-closed answer (RATELIMIT_FAIL_OPEN=False): the cache
        # neither added nor incremented the counter.
        raise RateLimitUnavailable("rate-limit counter unavailable")
    # The counter's key is tied to the window ending at second `now + time_left`, and is
    # still used throughout that second: a fresh one starts one second later.
    return bool(usage["should_limit"]), int(usage["time_left"]) + 1


def chaos_rate_check(request: HttpRequest, *, identity: str) -> RateDecision:
    """Counts one press against the visitor's budget, then, if that allows it, against the
    cluster-wide one. A visitor over their own limit does not spend the shared budget, so
    one person hammering the button cannot lock everybody else out."""
    limited, retry_after = _usage(
        request, group=PER_IP_GROUP, value=identity, rate=settings.CHAOS_RATE_PER_IP
    )
    if limited:
        return RateDecision(limited=True, retry_after=retry_after, scope="ip")
    limited, retry_after = _usage(
        request, group=GLOBAL_GROUP, value="cluster", rate=settings.CHAOS_RATE_GLOBAL
    )
    if limited:
        return RateDecision(limited=True, retry_after=retry_after, scope="global")
    return RateDecision(limited=False)
