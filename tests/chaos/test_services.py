"""The chaos service under a crowd: the kill lock, and what gets recorded.

Threads stand in for ASGI requests (Django runs each sync view in a thread of its own);
the fake apiserver keeps the rules a real one does (tests/chaos/fakes.py), and the lock
lives in the cache, here the in-process LocMem one (atomic `add`, like Redis' SET NX).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection

from chaos import kube, services
from chaos.models import ChaosEvent
from chaos.services import KILL_LOCK_KEY, KillLockBusy, chaos_unleash, kill_lock
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
                min_ready=2,
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
def test_a_crowd_of_presses_kills_exactly_one_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    # A slow list widens the window between list and delete, where presses used to race.
    api = FakeApi(pods=three_healthy(), list_delay_s=0.05)
    results = crowd_presses(api, monkeypatch)
    assert sorted(set(results)) <= ["busy", "deleted", "refused"], results
    assert results.count("deleted") == 1
    assert len(api.deleted) == 1
    assert len(api.terminating()) == 1
    deleted = ChaosEvent.objects.filter(outcome="deleted")
    assert [(e.pod_name, e.pod_uid) for e in deleted] == [api.deleted[0][1:]]
    assert cache.get(KILL_LOCK_KEY) is None


@pytest.mark.django_db(transaction=True)
def test_without_the_lock_the_same_crowd_stacks_kills(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test above can fail: with the lock taken away, the fake sees several kills.
    @contextlib.contextmanager
    def no_lock() -> Iterator[float]:
        yield float("inf")

    monkeypatch.setattr(services, "kill_lock", no_lock)
    api = FakeApi(pods=three_healthy(), list_delay_s=0.05)
    results = crowd_presses(api, monkeypatch)
    assert len(api.terminating()) > 1, results


def test_the_lock_is_exclusive_and_released() -> None:
    with kill_lock(), pytest.raises(KillLockBusy), kill_lock():
        pass
    with kill_lock():
        pass
    assert cache.get(KILL_LOCK_KEY) is None


def test_an_expired_lock_is_not_released_by_its_old_holder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Past its TTL the key may be another press's: the old holder leaves it alone.
    real = time.monotonic
    with kill_lock():
        cache.set(KILL_LOCK_KEY, "the next press", 30)
        monkeypatch.setattr(
            services.time, "monotonic", lambda: real() + services.KILL_LOCK_TTL_S + 1
        )
    assert cache.get(KILL_LOCK_KEY) == "the next press"


def test_a_lock_taken_over_after_a_store_restart_is_left_alone() -> None:
    with kill_lock():
        cache.set(KILL_LOCK_KEY, "someone after a restart", 30)
    assert cache.get(KILL_LOCK_KEY) == "someone after a restart"


@pytest.mark.django_db
def test_no_delete_without_enough_lock_left(monkeypatch: pytest.MonkeyPatch) -> None:
    # A list that took so long that the slowest delete could outlive the lock: refuse.
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
        min_ready=2,
    )
    assert (event.outcome, event.reason) == ("failed", "timeout")
    assert api.deleted == []
