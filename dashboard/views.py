from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.publish import latest


@require_GET
def page(request: HttpRequest) -> HttpResponse:
    return render(request, "infra.html", {"metrics": latest("metrics"), "pods": latest("pods")})


@require_GET
def snapshot_api(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"metrics": latest("metrics"), "pods": latest("pods"), "chaos": None})
