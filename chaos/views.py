"""HTTP for the chaos button: check the method, the switch and the budget, call the
service, translate its outcome (the answers: docs/contract.md). Sync: the Kubernetes
client, Redis and the ORM all block, and Django runs each sync view in a thread of its own."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST

from chaos.models import ChaosEvent
from chaos.ratelimit import RateLimitUnavailable, chaos_rate_check
from chaos.services import KillLockBusy, KillLockUnavailable, chaos_unleash, client_hash
from infra_site.clientip import UNKNOWN, rate_key, request_client_ip
from infra_site.metrics import CHAOS_ATTEMPTS

log = logging.getLogger(__name__)

# A press holds the kill lock for a list and a delete: tens of milliseconds, usually.
BUSY_RETRY_AFTER_S = 1


def _error(status: int, error: str, **extra: object) -> JsonResponse:
    return JsonResponse({"ok": False, "error": error, **extra}, status=status)


def _unavailable() -> JsonResponse:
    CHAOS_ATTEMPTS.labels(outcome="failed").inc()
    return _error(503, "cluster_unavailable")


@require_POST
def chaos_api(request: HttpRequest) -> HttpResponse:
    if not settings.CHAOS_ENABLED:
        return _error(403, "chaos_disabled")
    # The visitor's bucket: their IPv4 address or IPv6 prefix, from the socket or the part
    # of X-Forwarded-For our own proxies wrote (infra_site/clientip.py).
    identity = rate_key(request_client_ip(request))
    if identity == UNKNOWN:
        # A forwarding chain shorter than TRUSTED_PROXY_COUNT: no one to count the press
        # against, and the proxy's own address must not stand in for everybody.
        return _error(400, "client_unknown")
    try:
        decision = chaos_rate_check(identity=identity)
    except RateLimitUnavailable:
        log.warning("chaos: rate-limit store unavailable", exc_info=True)
        return _unavailable()
    if decision.limited:
        CHAOS_ATTEMPTS.labels(outcome="rate_limited").inc()
        response = _error(
            429, "rate_limited", retry_after=decision.retry_after, scope=decision.scope
        )
        response["Retry-After"] = str(decision.retry_after)
        return response
    try:
        event = chaos_unleash(
            client_hash=client_hash(identity),
            namespace=settings.CHAOS_NAMESPACE,
            selector=settings.CHAOS_SELECTOR,
            min_ready=settings.CHAOS_MIN_READY,
        )
    except KillLockBusy:
        # Another press is between its list and its delete right now. Answered at once,
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
    if event.outcome == ChaosEvent.Outcome.REFUSED:
        return _error(409, "not_enough_healthy", reason=event.reason)
    return _error(503, "cluster_unavailable")
