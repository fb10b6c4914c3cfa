"""Reads of chaos history for the page, the snapshot API and the websocket frames.

The history part of the summary (the last kills with their phases, recovery p50/p95 and
the chart's recoveries over 24 h) is computed
in SQL by a bounded handful of queries whatever the table's size, where the history
changes (the chaos service on each kill, the pod watcher on each heal), and kept in the
cache, so a page view normally reads no table at all. The cached copy also expires after
HISTORY_TTL_S, so kills age out of the 24 h window without a write, and a lost update
(two writers racing, a cache flushed) heals by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from chaos.models import ChaosEvent
from chaos.recovery import Kill

log = logging.getLogger(__name__)

RECENT_COUNT = 20
RECOVERY_WINDOW = timedelta(hours=24)
# The chart draws one mark per kill: beyond this many in a day, the newest ones.
CHART_MAX = 240
HISTORY_KEY = "chaos:history"
HISTORY_TTL_S = 60


def chaos_event_frame(*, event: ChaosEvent) -> dict[str, Any]:
    """The `chaos` websocket frame's data for one event; `phases` is its recovery timeline
    so far (chaos/timeline.py), null until the watcher has followed it."""
    return {
        "id": event.pk,
        "pod": event.pod_name,
        "at": event.at.isoformat(),
        "outcome": event.outcome,
        "recovery_s": None if event.recovery_s is None else round(event.recovery_s, 2),
        "phases": event.phases,
    }


def kills_to_follow(*, since: datetime, following: Iterable[int]) -> list[Kill]:
    """The kills since `since` whose recovery the watcher must still follow, other than
    those it already does: unhealed ones, and healed ones whose victim was still shutting
    down (after a restart, say), so their timeline gets its last phase or says it was
    missed."""
    fresh = (
        ChaosEvent.objects.filter(outcome=ChaosEvent.Outcome.DELETED, deleted_at__gte=since)
        .filter(Q(ready_at__isnull=True) | Q(phases__terminated__state="pending"))
        .exclude(pk__in=list(following))
    )
    return [
        Kill(
            event_id=event.pk,
            pod_uid=event.pod_uid,
            pod_name=event.pod_name,
            replicaset_uid=event.replicaset_uid,
            deleted_at=event.deleted_at or event.at,
            healed=event.phases if event.ready_at is not None else None,
        )
        for event in fresh
    ]


def _durations(phases: Any) -> list[float | None] | None:
    steps = phases.get("steps") if isinstance(phases, dict) else None
    if not isinstance(steps, list):
        return None
    return [step.get("s") if isinstance(step, dict) else None for step in steps]


def recovery_chart() -> list[list[Any]]:
    """The last 24 h of recoveries, oldest first, for the chart: `[id, epoch_s, recovery_s,
    [created_s, scheduled_s, started_s, ready_s] or null]`, a phase null when unknown."""
    rows = (
        ChaosEvent.objects.filter(
            outcome=ChaosEvent.Outcome.DELETED,
            at__gte=timezone.now() - RECOVERY_WINDOW,
            recovery_s__isnull=False,
        )
        .order_by("-at", "-id")
        .values_list("pk", "at", "recovery_s", "phases")[:CHART_MAX]
    )
    return [
        [pk, round(at.timestamp(), 3), round(recovery_s, 2), _durations(phases)]
        for pk, at, recovery_s, phases in reversed(rows)
        if recovery_s is not None
    ]


def recovery_stats() -> dict[str, Any]:
    """Recovery p50/p95 over the last 24 h: `{"p50_s", "p95_s", "count"}`.

    Percentiles by linear interpolation between the closest ranks, read in SQL: one
    count, then the (at most) two values around each rank, so no query returns more than
    two rows however many kills the window holds."""
    healed = ChaosEvent.objects.filter(
        outcome=ChaosEvent.Outcome.DELETED,
        at__gte=timezone.now() - RECOVERY_WINDOW,
        recovery_s__isnull=False,
    )
    count = healed.count()

    def percentile(q: float) -> float | None:
        if count == 0:
            return None
        rank = (count - 1) * q
        low = int(rank)
        ordered = healed.order_by("recovery_s").values_list("recovery_s", flat=True)
        values = [v for v in ordered[low : low + 2] if v is not None]
        if not values:  # rows healed or aged out between the two queries
            return None
        high = values[1] if len(values) > 1 else values[0]
        return round(values[0] + (high - values[0]) * (rank - low), 2)

    return {"p50_s": percentile(0.50), "p95_s": percentile(0.95), "count": count}


def _history() -> dict[str, Any]:
    # Refused and failed attempts are for staff (the admin), not public history.
    recent = ChaosEvent.objects.filter(outcome=ChaosEvent.Outcome.DELETED)[:RECENT_COUNT]
    return {
        "recovery": recovery_stats(),
        "recent": [chaos_event_frame(event=event) for event in recent],
        "chart": recovery_chart(),
    }


def refresh_history() -> dict[str, Any]:
    """Recomputes the history and caches it; for whoever just changed it."""
    history = _history()
    try:
        cache.set(HISTORY_KEY, history, HISTORY_TTL_S)
    except (redis.RedisError, OSError):
        log.warning("chaos history: could not cache it", exc_info=True)
    return history


def chaos_summary() -> dict[str, Any]:
    """ChaosSummary: switch state, the per-visitor rate, recovery p50/p95 over the last
    24 h, the last kills (newest first) and the 24 h chart's recoveries. From the cache;
    computed on a miss."""
    try:
        history = cache.get(HISTORY_KEY)
    except (redis.RedisError, OSError):
        log.warning("chaos history: cache unreachable, reading the database", exc_info=True)
        history = None
    if history is None:
        history = refresh_history()
    return {
        "enabled": settings.CHAOS_ENABLED,
        "rate_per_ip": settings.CHAOS_RATE_PER_IP,
        **history,
    }
