"""The chaos service under a crowd: the kill lock, and what gets recorded.

Threads stand in for ASGI requests (Django runs each sync view in a thread of its own);
the fake apiserver keeps the rules a real one does (tests/chaos/fakes.py), its disruption
budget included, and the lock is redis-py's on an in-process fakeredis.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
from django.db import connection

from chaos import kube, services
from chaos.models import ChaosEvent
from chaos.services import (
    KILL_LOCK_KEY,
    KillLockBusy,
    KillLockUnavailable,
    chaos_unleash,
    kill_lock,
)
from stackkit.stack import free_port
from tests.chaos.fakes import FakeApi, three_healthy

CROWD = 12


def crowd_presses(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """CROWD presses released at once; each result is an outcome, "busy" or an error."""
    monkeypatch.setattr(kube, "core_api", lambda: api)
    start = threading.Barrier(CROWD)
    results: list[str] = []

    def one(i: int) -> None:
        try:
            start.wait()
            event = chaos_unleash(
                client_hash=f"visitor-{i}",
                namespace="chaos-demo",
                selector="app=chaos-demo",
            )
            results.append(event.outcome)
        except KillLockBusy:
            results.append("busy")
        except Exception as exc:
            results.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CROWD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.mark.django_db(transaction=True)
def test_a_crowd_of_presses_kills_exactly_one_pod(
    monkeypatch: pytest.MonkeyPatch, lock_redis: fakeredis.FakeRedis
) -> None:
    # A slow list widens the window between list and eviction, where presses used to race.
    # A lax budget: the lock alone is what keeps this crowd to one kill.
    api = FakeApi(pods=three_healthy(), list_delay_s=0.05, max_unavailable=3)
    results = crowd_presses(api, monkeypatch)
    assert sorted(set(results)) <= ["busy", "deleted", "refused"], results
    assert results.count("deleted") == 1
    assert len(api.deleted) == 1
    assert len(api.terminating()) == 1
    deleted = ChaosEvent.objects.filter(outcome="deleted")
    assert [(e.pod_name, e.pod_uid) for e in deleted] == [api.deleted[0][1:]]
    assert lock_redis.get(KILL_LOCK_KEY) is None


@pytest.mark.django_db(transaction=True)
def test_without_the_lock_a_lax_budget_lets_the_crowd_stack_kills(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The test above can fail: with the lock taken away, the fake sees several kills.
    monkeypatch.setattr(services, "kill_lock", no_lock)
    api = FakeApi(pods=three_healthy(), list_delay_s=0.05, max_unavailable=3)
    results = crowd_presses(api, monkeypatch)
    assert len(api.terminating()) > 1, results


@pytest.mark.django_db(transaction=True)
def test_without_the_lock_the_budget_alone_keeps_one_pod_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another copy of the app with its own lock is this: presses no lock orders. The
    # apiserver's budget lets one eviction through; the others are recorded as its refusal.
    monkeypatch.setattr(services, "kill_lock", no_lock)
    api = FakeApi(pods=three_healthy(), list_delay_s=0.05)
    results = crowd_presses(api, monkeypatch)
    # The fake apiserver is the ground truth; a row may fail to be written when SQLite's
    # in-memory test database meets twelve writers at once, which is not under test.
    assert len(api.deleted) == 1, results
    assert len(api.terminating()) == 1
    assert results.count("deleted") <= 1, results
    assert results.count("budget_refused") >= 1, results
    refused = ChaosEvent.objects.filter(outcome="budget_refused")
    assert {e.reason for e in refused} == {"disruption_budget"}
    assert all(e.pod_name and e.deleted_at is None for e in refused)
    assert set(results) <= {"deleted", "budget_refused", "refused"} | {
        r for r in results if "database table is locked" in r
    }


@contextlib.contextmanager
def no_lock() -> Iterator[float]:
    yield float("inf")


def test_the_lock_is_exclusive_and_released(lock_redis: fakeredis.FakeRedis) -> None:
    with kill_lock(), pytest.raises(KillLockBusy), kill_lock():
        pass
    with kill_lock():
        assert lock_redis.ttl(KILL_LOCK_KEY) > 0, "a lock that a crash would never free"
    assert lock_redis.get(KILL_LOCK_KEY) is None


def test_a_lock_taken_over_by_another_press_is_left_alone(
    lock_redis: fakeredis.FakeRedis,
) -> None:
    # Ours expired (or Redis restarted) and the next press holds the key now: releasing
    # ours must not free theirs.
    with kill_lock():
        lock_redis.set(KILL_LOCK_KEY, "the next press", ex=30)
    assert lock_redis.get(KILL_LOCK_KEY) == b"the next press"


def test_an_unreachable_lock_store_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    monkeypatch.setattr(services, "lock_store", lambda: dead)
    with pytest.raises(KillLockUnavailable), kill_lock():
        pytest.fail("entered without a lock")


@pytest.mark.django_db
def test_the_budget_is_spent_only_by_the_press_that_holds_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi(pods=three_healthy())
    monkeypatch.setattr(kube, "core_api", lambda: api)
    spent: list[str] = []
    with kill_lock(), pytest.raises(KillLockBusy):
        chaos_unleash(
            client_hash="h",
            namespace="chaos-demo",
            selector="app=chaos-demo",
            spend=lambda: spent.append("busy press"),
        )
    assert spent == []

    class Spent(Exception):
        pass

    def refuse() -> None:
        spent.append("lock holder")
        raise Spent

    with pytest.raises(Spent):
        chaos_unleash(
            client_hash="h", namespace="chaos-demo", selector="app=chaos-demo", spend=refuse
        )
    assert spent == ["lock holder"]
    assert api.deleted == []
    assert not ChaosEvent.objects.exists()
    assert [c["call"] for c in api.calls] == [], "the cluster was asked after the budget said no"


@pytest.mark.django_db
def test_no_eviction_without_enough_lock_left(monkeypatch: pytest.MonkeyPatch) -> None:
    # A list that took so long that the slowest eviction could outlive the lock: refuse.
    api = FakeApi(pods=three_healthy())
    real = time.monotonic
    clock = {"skew": 0.0}
    monkeypatch.setattr(services.time, "monotonic", lambda: real() + clock["skew"])

    def slow_list(namespace: str, **kwargs: Any) -> Any:
        response = FakeApi.list_namespaced_pod(api, namespace, **kwargs)
        clock["skew"] = services.KILL_LOCK_TTL_S - services.CALL_MAX_S
        return response

    monkeypatch.setattr(api, "list_namespaced_pod", slow_list)
    monkeypatch.setattr(kube, "core_api", lambda: api)
    event = chaos_unleash(
        client_hash="h",
        namespace="chaos-demo",
        selector="app=chaos-demo",
    )
    assert (event.outcome, event.reason) == ("failed", "timeout")
    assert api.deleted == []
