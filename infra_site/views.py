"""Probes for the orchestrator: liveness has no dependencies, readiness needs Redis."""

from __future__ import annotations

import redis
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from infra_site.leader import redis_client


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    # Prometheus being down only makes the numbers stale; Redis down means no live
    # updates, no rate limits and so no chaos button: not ready.
    try:
        redis_client().ping()
    except redis.RedisError:
        return JsonResponse({"ok": False, "redis": "unreachable"}, status=503)
    return JsonResponse({"ok": True})
