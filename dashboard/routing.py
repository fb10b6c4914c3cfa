from __future__ import annotations

from django.urls import path

from dashboard.consumers import InfraConsumer

websocket_urlpatterns = [path("ws/infra/", InfraConsumer.as_asgi())]
