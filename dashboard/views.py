"""The `/infra` page and its JSON twin. Both read what the workers already published;
neither ever queries Prometheus or Kubernetes, so viewers add no load upstream."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import cache_control, never_cache
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe
from redis import RedisError

from chaos.selectors import chaos_summary
from live.publish import latest

log = logging.getLogger(__name__)


def _snapshot() -> dict[str, Any]:
    """Snapshot API body (docs/contract.md, "HTTP"); raises RedisError / DatabaseError."""
    return {"metrics": latest("metrics"), "pods": latest("pods"), "chaos": chaos_summary()}


def _or_none(read: Callable[[], Any], what: str) -> Any:
    try:
        return read()
    except (RedisError, DatabaseError):
        # The page still loads (and goes live once the websocket gets through): an outage
        # of one store must not turn a visitor away with a 500.
        log.exception("rendering /infra without %s: its store is unreachable", what)
        return None


@require_safe
@ensure_csrf_cookie  # the chaos button posts with the CSRF cookie's token
# Always revalidated: a cached copy would paint numbers from whenever it was cached.
@cache_control(no_cache=True)
def page(request: HttpRequest) -> HttpResponse:
    snapshot = {
        "metrics": _or_none(lambda: latest("metrics"), "metrics"),
        "pods": _or_none(lambda: latest("pods"), "pods"),
        "chaos": _or_none(chaos_summary, "chaos history"),
    }
    chaos = snapshot["chaos"]
    context = {
        **snapshot,
        "chaos_enabled": bool(chaos["enabled"] if chaos else settings.CHAOS_ENABLED),
        # Everything the script starts from, as inert JSON (allowed by a strict CSP).
        "initial_state": {
            **snapshot,
            "poll_interval_s": settings.POLL_INTERVAL,
            "snapshot_url": reverse("snapshot"),
        },
    }
    return render(request, "infra.html", context)


@require_safe
@never_cache
def snapshot_api(request: HttpRequest) -> JsonResponse:
    try:
        return JsonResponse(_snapshot())
    except (RedisError, DatabaseError):
        log.exception("the dashboard's store is unreachable")
        return JsonResponse({"error": "store_unavailable"}, status=503)
