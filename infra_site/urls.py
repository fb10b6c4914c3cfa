from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from infra_site import views

urlpatterns = [
    path("healthz", views.healthz),
    path("readyz", views.readyz),
    path("metrics", views.metrics),
    path(settings.ADMIN_URL, admin.site.urls),
    path("", include("dashboard.urls")),
    path("", include("chaos.urls")),
]
