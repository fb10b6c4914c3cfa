from __future__ import annotations

from django.apps import AppConfig


class ChaosConfig(AppConfig):
    name = "chaos"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The Kubernetes client's generated API module takes about a second to import.
        # Pay that when the process starts, not on the first visitor's press (the
        # URLconf, and so the chaos view, is otherwise imported by the first request).
        from chaos import kube

        kube.preload()
