from __future__ import annotations

from django.urls import path

from chaos import views

urlpatterns = [path("api/infra/chaos", views.chaos_api, name="chaos")]
