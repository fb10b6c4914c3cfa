"""Reads of chaos history for the page, the snapshot API and the websocket frames."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from chaos.models import ChaosEvent

RECENT_COUNT = 20
RECOVERY_WINDOW = timedelta(hours=24)


def chaos_event_frame(*, event: ChaosEvent) -> dict[str, Any]:
    """The `chaos` websocket frame's data for one event (DESIGN.md, "Websocket")."""
    return {
        "id": event.pk,
        "pod": event.pod_name,
        "at": event.at.isoformat(),
        "outcome": event.outcome,
        "recovery_s": None if event.recovery_s is None else round(event.recovery_s, 2),
    }


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def recovery_stats() -> dict[str, Any]:
    """Recovery p50/p95 over the last 24 h: `{"p50_s", "p95_s", "count"}`."""
    since = timezone.now() - RECOVERY_WINDOW
    recoveries = [
        value
        for value in ChaosEvent.objects.filter(
            outcome=ChaosEvent.Outcome.DELETED, at__gte=since, recovery_s__isnull=False
        ).values_list("recovery_s", flat=True)
        if value is not None
    ]
    p50 = percentile(recoveries, 0.50)
    p95 = percentile(recoveries, 0.95)
    return {
        "p50_s": None if p50 is None else round(p50, 2),
        "p95_s": None if p95 is None else round(p95, 2),
        "count": len(recoveries),
    }


def chaos_summary() -> dict[str, Any]:
    """ChaosSummary: switch state, the per-visitor rate, recovery p50/p95 over the last
    24 h, and the last kills, newest first. Refused and failed attempts are for staff (the
    admin), not public history."""
    recent = ChaosEvent.objects.filter(outcome=ChaosEvent.Outcome.DELETED)[:RECENT_COUNT]
    return {
        "enabled": settings.CHAOS_ENABLED,
        "rate_per_ip": settings.CHAOS_RATE_PER_IP,
        "recovery": recovery_stats(),
        "recent": [chaos_event_frame(event=event) for event in recent],
    }
