"""Site-wide views: probes for the orchestrator (liveness has no dependencies, readiness
needs Redis), the process's own metrics for Prometheus, and the CSRF failure answer."""

from __future__ import annotations

import ipaddress

import redis
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import csrf
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from door.clientip import request_client_ip
from runtime.redisclient import redis_client

API_PREFIX = "/api/"


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


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    # Internal numbers are for the scraper only. Through the ingress the client address is
    # the one the chaos limits use, so an internet visitor cannot pass for a pod. A request
    # with no X-Forwarded-For at all did not come through the proxies (they always add it):
    # it is Prometheus scraping the pod directly, and its own address is the one to check.
    if "HTTP_X_FORWARDED_FOR" in request.META:
        address = request_client_ip(request)
    else:
        address = request.META.get("REMOTE_ADDR") or ""
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        raise Http404 from None
    if not any(client in network for network in settings.METRICS_ALLOWED_NETWORKS):
        raise Http404
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: JSON for the API (the page's script reads it), Django's usual
    page everywhere else (the admin login)."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"ok": False, "error": "csrf_failed"}, status=403)
    return csrf.csrf_failure(request, reason=reason)
