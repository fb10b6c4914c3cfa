from __future__ import annotations

from django.urls import path

from dashboard import views

urlpatterns = [
    path("infra", views.page, name="infra"),
    path("api/infra/snapshot", views.snapshot_api, name="snapshot"),
]
