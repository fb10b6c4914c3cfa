"""HTTP for the chaos button: check the method, the switch and the budgets, call the
service, translate its outcome (the answers: docs/contract.md). Sync: the Kubernetes
client, Redis and the ORM all block, and Django runs each sync view in a thread of its own.

The budgets are django-ratelimit's fixed windows, counted in the shared Redis cache so
every web replica counts alike:

- per visitor (an IPv4 address or an IPv6 prefix, `rate_key`), a long window
  (`CHAOS_RATE_PER_IP`) and a short one (`CHAOS_BURST_PER_IP`): a burst across the long
  window's edge is held to the short one's pace;
- for everyone (`CHAOS_RATE_GLOBAL`), a budget of kills: looked at first, and spent only
  once a press has won the kill lock, so a crowd answered "busy" spends none of it, and
  the lock makes that spend one at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST
from django_ratelimit.core import get_usage

from chaos.models import ChaosEvent
from chaos.services import KillLockBusy, KillLockUnavailable, chaos_unleash, client_hash
from door.clientip import UNKNOWN, rate_key, request_client_ip
from runtime.metrics import CHAOS_ATTEMPTS

log = logging.getLogger(__name__)

# A press holds the kill lock for a list and an eviction: tens of milliseconds, usually.
BUSY_RETRY_AFTER_S = 1

# django-ratelimit groups: each is a counter of its own in the cache.
GROUP_VISITOR = "chaos.visitor"
GROUP_BURST = "chaos.visitor-burst"
GROUP_KILLS = "chaos.kills"
EVERYONE = "everyone"

# What refused a press, as the 429 body's "scope" says it to the page.
SCOPE_VISITOR = "visitor"  # this visitor's own budget
SCOPE_GLOBAL = "global"  # everyone's budget of kills is spent


class BudgetUnavailable(Exception):
    """The budgets could not be read or written (Redis down): refuse, never let through."""


class BudgetSpent(Exception):
    def __init__(self, scope: str, retry_after: int) -> None:
        super().__init__(scope)
        self.scope = scope
        self.retry_after = retry_after


@dataclass(frozen=True)
class Window:
    """One django-ratelimit counter: a group, its rate and whose it is."""

    group: str
    rate: str
    key: str

    def usage(self, request: HttpRequest, *, increment: bool) -> dict[str, Any]:
        try:
            usage: dict[str, Any] | None = get_usage(
                request,
                group=self.group,
                key=lambda _group, _request: self.key,
                rate=self.rate,
                increment=increment,
            )
        except (redis.RedisError, OSError) as exc:
            raise BudgetUnavailable(str(exc)) from exc
        if usage is None or usage["limit"] == 0:
            # None: RATELIMIT_ENABLE is off, which this view never runs without. A limit
            # of 0 is django-ratelimit's answer when the count could not be read or written.
            raise BudgetUnavailable(self.group)
        return usage


def _retry_after(spent: list[dict[str, Any]]) -> int:
    # A window is named by the whole second it ends in and counts until that second is
    # over; time_left is that second minus the current whole second. So the window is
    # certainly over after time_left + 1 seconds, and possibly only then.
    return max(int(usage["time_left"]) for usage in spent) + 1


def _look(request: HttpRequest, windows: list[Window], scope: str) -> None:
    """Refuses, spending nothing, when any window has no press left."""
    usages = [window.usage(request, increment=False) for window in windows]
    spent = [usage for usage in usages if usage["count"] >= usage["limit"]]
    if spent:
        raise BudgetSpent(scope, _retry_after(spent))


def _spend(request: HttpRequest, windows: list[Window], scope: str) -> None:
    """Counts the press in every window; refuses if that took one over (presses that
    raced past the look together)."""
    usages = [window.usage(request, increment=True) for window in windows]
    spent = [usage for usage in usages if usage["should_limit"]]
    if spent:
        raise BudgetSpent(scope, _retry_after(spent))


def _error(status: int, error: str, **extra: object) -> JsonResponse:
    return JsonResponse({"ok": False, "error": error, **extra}, status=status)


def _unavailable() -> JsonResponse:
    CHAOS_ATTEMPTS.labels(outcome="failed").inc()
    return _error(503, "cluster_unavailable")


def _rate_limited(spent: BudgetSpent) -> JsonResponse:
    CHAOS_ATTEMPTS.labels(outcome="rate_limited").inc()
    response = _error(429, "rate_limited", retry_after=spent.retry_after, scope=spent.scope)
    response["Retry-After"] = str(spent.retry_after)
    return response


@require_POST
def chaos_api(request: HttpRequest) -> HttpResponse:
    if not settings.CHAOS_ENABLED:
        return _error(403, "chaos_disabled")
    # The visitor's bucket: their IPv4 address or IPv6 prefix, from the socket or the part
    # of X-Forwarded-For our own proxies wrote (door/clientip.py).
    identity = rate_key(request_client_ip(request))
    if identity == UNKNOWN:
        # A forwarding chain shorter than TRUSTED_PROXY_COUNT: no one to count the press
        # against, and the proxy's own address must not stand in for everybody.
        return _error(400, "client_unknown")
    kills = [Window(GROUP_KILLS, settings.CHAOS_RATE_GLOBAL, EVERYONE)]
    visitor = [
        Window(GROUP_VISITOR, settings.CHAOS_RATE_PER_IP, identity),
        Window(GROUP_BURST, settings.CHAOS_BURST_PER_IP, identity),
    ]
    try:
        # Looked at first, spending nothing: while everyone's kills are spent a press
        # spends nothing of the visitor's own, and a press its own budget refuses spends
        # none of it either.
        _look(request, kills, SCOPE_GLOBAL)
        _look(request, visitor, SCOPE_VISITOR)
        _spend(request, visitor, SCOPE_VISITOR)
        event = chaos_unleash(
            client_hash=client_hash(identity),
            namespace=settings.CHAOS_NAMESPACE,
            selector=settings.CHAOS_SELECTOR,
            # Called under the kill lock: one press at a time spends it, "busy" never does.
            spend=lambda: _spend(request, kills, SCOPE_GLOBAL),
        )
    except BudgetSpent as spent:
        return _rate_limited(spent)
    except BudgetUnavailable:
        log.warning("chaos: rate-limit store unavailable", exc_info=True)
        return _unavailable()
    except KillLockBusy:
        # Another press is between its list and its eviction right now. Answered at once,
        # not after a wait: the next look will see that press's outcome.
        CHAOS_ATTEMPTS.labels(outcome="busy").inc()
        return _error(409, "busy", retry_after=BUSY_RETRY_AFTER_S)
    except KillLockUnavailable:
        log.warning("chaos: kill-lock store unavailable", exc_info=True)
        return _unavailable()
    except DatabaseError:
        # The kill may have happened but could not be recorded; the watcher still shows
        # it to everyone. The visitor gets an honest "try later", not a 500.
        log.exception("chaos: could not record the attempt")
        return _unavailable()
    CHAOS_ATTEMPTS.labels(outcome=event.outcome).inc()
    if event.outcome == ChaosEvent.Outcome.DELETED:
        return JsonResponse({"ok": True, "pod": event.pod_name, "event_id": event.pk})
    if event.outcome == ChaosEvent.Outcome.BUDGET_REFUSED:
        # Kubernetes refused the eviction: its disruption budget allows no more pods down.
        return _error(409, "disruption_budget")
    if event.outcome == ChaosEvent.Outcome.REFUSED:
        return _error(409, "not_enough_healthy", reason=event.reason)
    return _error(503, "cluster_unavailable")
