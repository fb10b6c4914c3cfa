"""The chaos history the page shows: right numbers, and a page view that reads no table."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from chaos.models import ChaosEvent
from chaos.selectors import (
    HISTORY_KEY,
    RECENT_COUNT,
    chaos_summary,
    kills_to_follow,
    recovery_stats,
)
from chaos.services import chaos_unleash
from tests.chaos.fakes import FakeApi

pytestmark = pytest.mark.django_db
HISTORY = 50_000


def reference(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, the textbook way, in Python."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 2)


def deleted(recovery_s: float | None = None, **fields: Any) -> ChaosEvent:
    return ChaosEvent(
        outcome=ChaosEvent.Outcome.DELETED,
        pod_name=fields.pop("pod_name", "chaos-demo-x"),
        client_hash="h",
        recovery_s=recovery_s,
        **fields,
    )


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 101])
def test_sql_percentiles_match_the_textbook(size: int) -> None:
    rng = random.Random(size)
    values = [round(rng.uniform(1.5, 9.0), 3) for _ in range(size)]
    ChaosEvent.objects.bulk_create([deleted(v) for v in values])
    # Not counted: not healed yet, refused, or older than 24 h.
    ChaosEvent.objects.bulk_create([deleted(None), ChaosEvent(outcome="refused", client_hash="h")])
    old = ChaosEvent.objects.create(outcome="deleted", client_hash="h", recovery_s=99.0)
    ChaosEvent.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(hours=25))

    stats = recovery_stats()
    assert stats == {
        "p50_s": reference(values, 0.50),
        "p95_s": reference(values, 0.95),
        "count": size,
    }


@pytest.fixture
def big_history() -> list[float]:
    """HISTORY events: most in the last 24 h and healed, some older, some refused."""
    rng = random.Random(8)
    recent = [round(rng.uniform(1.5, 9.0), 3) for _ in range(HISTORY * 8 // 10)]
    rows = [deleted(v, pod_name=f"chaos-demo-{i}") for i, v in enumerate(recent)]
    rows += [deleted(50.0) for _ in range(HISTORY // 10)]
    rows += [ChaosEvent(outcome="refused", client_hash="h") for _ in range(HISTORY // 10)]
    ChaosEvent.objects.bulk_create(rows, batch_size=5000)
    cutoff = ChaosEvent.objects.filter(recovery_s=50.0)
    cutoff.update(at=timezone.now() - timedelta(days=2))
    assert ChaosEvent.objects.count() == HISTORY
    return recent


@pytest.mark.parametrize("path", ["/infra", "/api/infra/snapshot"])
def test_a_page_view_reads_no_history_table(
    big_history: list[float], path: str, django_assert_max_num_queries: Any
) -> None:
    client = Client()
    cache.clear()
    # The first view after the cache expired computes the summary: a few bounded queries
    # (count, two two-row percentile reads, the last 20, the chart's newest CHART_MAX),
    # never the whole table.
    with django_assert_max_num_queries(5):
        first = client.get(path)
    assert first.status_code == 200
    # Every other view reads the cache only.
    with django_assert_max_num_queries(0):
        for _ in range(5):
            assert client.get(path).status_code == 200

    summary = client.get("/api/infra/snapshot").json()["chaos"]
    assert summary["recovery"] == {
        "p50_s": reference(big_history, 0.50),
        "p95_s": reference(big_history, 0.95),
        "count": len(big_history),
    }
    assert len(summary["recent"]) == RECENT_COUNT


def test_a_kill_refreshes_the_cached_history_at_once(cluster: FakeApi) -> None:
    ChaosEvent.objects.bulk_create([deleted(2.0, pod_name="chaos-demo-old")])
    assert [e["pod"] for e in chaos_summary()["recent"]] == ["chaos-demo-old"]
    assert cache.get(HISTORY_KEY) is not None

    event = chaos_unleash(client_hash="h", namespace="chaos-demo", selector="app=chaos-demo")
    assert event.outcome == "deleted"
    assert [e["pod"] for e in chaos_summary()["recent"]] == [event.pod_name, "chaos-demo-old"]


def test_without_the_cache_the_history_still_comes_from_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis

    from chaos import selectors

    class Down:
        def get(self, *args: Any) -> Any:
            raise redis.ConnectionError("down")

        def set(self, *args: Any) -> Any:
            raise redis.ConnectionError("down")

    ChaosEvent.objects.bulk_create([deleted(3.0)])
    monkeypatch.setattr(selectors, "cache", Down())
    assert chaos_summary()["recovery"]["count"] == 1


def test_the_watcher_follows_recent_unhealed_kills_and_healed_ones_still_terminating() -> None:
    now = timezone.now()
    ago = now - timedelta(seconds=5)
    events = ChaosEvent.objects.bulk_create(
        [
            deleted(pod_name="unhealed", deleted_at=ago),
            deleted(
                2.0,
                pod_name="victim-closing",
                deleted_at=ago,
                ready_at=now,
                phases={"terminated": {"state": "pending"}},
            ),
            deleted(2.0, pod_name="done", deleted_at=ago, ready_at=now, phases={}),
            deleted(pod_name="too-old", deleted_at=now - timedelta(hours=1)),
            deleted(pod_name="followed", deleted_at=ago),
            ChaosEvent(outcome=ChaosEvent.Outcome.REFUSED, reason="busy", client_hash="h"),
        ]
    )
    followed = next(e.pk for e in events if e.pod_name == "followed")
    kills = kills_to_follow(since=now - timedelta(minutes=10), following={followed})
    assert sorted((k.pod_name, k.healed is not None) for k in kills) == [
        ("unhealed", False),
        ("victim-closing", True),
    ]
