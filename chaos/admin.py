"""Chaos history for staff: read-only, because it is a record of what happened."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest

from chaos.models import ChaosEvent
from chaos.timeline import phases_text

# ModelAdmin is generic only in django-stubs; at run time it is a plain class.
if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[ChaosEvent]
else:
    _ModelAdmin = admin.ModelAdmin


@admin.register(ChaosEvent)
class ChaosEventAdmin(_ModelAdmin):
    list_display = ["at", "outcome", "reason", "pod_name", "recovery_s", "timeline", "client_hash"]
    list_filter = ["outcome", "reason", "at"]
    search_fields = ["pod_name", "pod_uid", "replacement_name", "client_hash", "reason"]
    date_hierarchy = "at"
    # The stored JSON stays readable on the detail page; the list shows it in words.
    readonly_fields = ["timeline"]

    @admin.display(description="phases")
    def timeline(self, obj: ChaosEvent) -> str:
        return phases_text(obj.phases)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
