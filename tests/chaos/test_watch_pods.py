"""The watcher command, one step at a time, against a scripted Kubernetes seam."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from chaos import kube
from chaos.eventwatch import EventWatch
from chaos.management.commands import watch_pods
from chaos.models import ChaosEvent
from chaos.pods import Pod
from live.nodes import remember
from tests.chaos.fakes import pod

pytestmark = pytest.mark.django_db

Call = list[kube.PodEvent] | kube.KubeError


@dataclass
class ScriptedCluster:
    """What kube.list_pods returns, and what each successive watch call yields."""

    pods: list[Pod]
    watches: list[Call] = field(default_factory=list)
    lists: int = 0
    list_error: kube.KubeError | None = None
    watched_from: list[str] = field(default_factory=list)

    def list_pods(self, api: Any, **kwargs: Any) -> kube.PodSnapshot:
        self.lists += 1
        if self.list_error is not None:
            raise self.list_error
        return kube.PodSnapshot(pods=list(self.pods), resource_version=f"list-{self.lists}")

    def watch_pods(
        self, api: Any, *, resource_version: str, **kwargs: Any
    ) -> Iterator[kube.PodEvent]:
        assert kwargs["timeout_s"] <= 5, (
            "each watch call must be short: the lock is renewed between"
        )
        self.watched_from.append(resource_version)
        call = self.watches.pop(0) if self.watches else []
        if isinstance(call, kube.KubeError):
            raise call
        yield from call


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> ScriptedCluster:
    now = timezone.now()
    scripted = ScriptedCluster(
        pods=[pod(f"web-{i}", uid=f"u{i}", created=now - timedelta(minutes=5)) for i in range(3)]
    )
    monkeypatch.setattr(kube, "core_api", lambda: object())
    # The worker closes stale connections each step; inside a test's transaction that
    # would close the transaction's connection (as Django's own test client avoids).
    monkeypatch.setattr(watch_pods, "close_old_connections", lambda: None)
    # The events feed has its own tests (test_narration.py); no thread here.
    monkeypatch.setattr(EventWatch, "start", lambda self: None)
    monkeypatch.setattr(kube, "list_pods", scripted.list_pods)
    monkeypatch.setattr(kube, "watch_pods", scripted.watch_pods)
    return scripted


@pytest.fixture
def frames(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    published: list[tuple[str, Any]] = []
    monkeypatch.setattr(watch_pods, "publish", lambda kind, data: published.append((kind, data)))
    return published


def event(kind: str, p: Pod, version: str) -> kube.PodEvent:
    return kube.PodEvent(type=kind, pod=p, resource_version=version)


def test_first_step_lists_and_publishes_the_pods(
    cluster: ScriptedCluster, frames: list[tuple[str, Any]]
) -> None:
    remember({"kwok-node-0": "Node 1"})
    command = watch_pods.Command()
    assert command.step() is True
    assert cluster.lists == 1
    [(kind, data)] = frames
    assert kind == "pods"
    assert (data["desired"], data["ready"]) == (3, 3)
    assert {p["node"] for p in data["pods"]} == {"Node 1"}
    assert "kwok-node" not in repr(frames)


def test_watch_resumes_from_the_last_version_and_publishes_each_change(
    cluster: ScriptedCluster, frames: list[tuple[str, Any]]
) -> None:
    command = watch_pods.Command()
    command.step()
    cluster.watches = [
        [
            event("MODIFIED", pod("web-0", uid="u0", deleting=True), "7"),
            kube.PodEvent(type="BOOKMARK", pod=None, resource_version="8"),
        ],
        [],
    ]
    assert command.step() is True
    assert command.step() is False  # a quiet watch call: nothing to publish
    assert cluster.watched_from == ["list-1", "8"]
    statuses = [[p["status"] for p in data["pods"]] for kind, data in frames if kind == "pods"]
    assert statuses[-1].count("Terminating") == 1
    assert len(frames) == 2


def test_a_gone_resource_version_relists(
    cluster: ScriptedCluster, frames: list[tuple[str, Any]]
) -> None:
    command = watch_pods.Command()
    command.step()
    cluster.watches = [kube.KubeError("gone", status=410)]
    command.step()
    assert command.resource_version is None
    cluster.pods = cluster.pods[:2]
    command.step()
    assert cluster.lists == 2
    assert command.failures == 0
    assert len(frames[-1][1]["pods"]) == 2


def test_a_stalled_watch_reconnects_from_where_it_was(cluster: ScriptedCluster) -> None:
    command = watch_pods.Command()
    command.step()
    cluster.watches = [kube.KubeError("timeout"), []]
    command.step()
    command.step()
    assert cluster.lists == 1
    assert cluster.watched_from == ["list-1", "list-1"]


def test_api_failures_back_off_up_to_a_cap(
    cluster: ScriptedCluster, frames: list[tuple[str, Any]]
) -> None:
    command = watch_pods.Command()
    command.step()
    cluster.watches = [kube.KubeError("forbidden", status=403)]
    cluster.list_error = kube.KubeError("forbidden", status=403)
    waits = []
    for _ in range(10):
        command.step()
        waits.append(command.interval())
    assert waits == sorted(waits)
    assert waits[0] > 0
    assert waits[-1] == watch_pods.MAX_BACKOFF_S
    # After a failure the next step starts from a fresh list; success ends the backoff.
    cluster.list_error = None
    command.step()
    assert cluster.lists == 11
    assert command.interval() == 0


def test_losing_leadership_forgets_the_state(cluster: ScriptedCluster) -> None:
    command = watch_pods.Command()
    command.step()
    command.on_leadership_lost()
    assert command.resource_version is None
    assert command.state.pods == {}


def test_a_publish_failure_is_retried_next_step(
    cluster: ScriptedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[str] = []
    outage = [True]

    def flaky(kind: str, data: Any) -> None:
        if outage[0]:
            raise ConnectionError("redis down")
        published.append(kind)

    monkeypatch.setattr(watch_pods, "publish", flaky)
    command = watch_pods.Command()
    command.step()
    assert command.unpublished
    outage[0] = False
    command.step()
    assert published == ["pods"]


def test_a_kill_gets_its_recovery_recorded_and_announced(
    cluster: ScriptedCluster, frames: list[tuple[str, Any]]
) -> None:
    command = watch_pods.Command()
    command.step()
    killed = timezone.now()
    kill = ChaosEvent.objects.create(
        outcome="deleted",
        pod_name="web-0",
        pod_uid="u0",
        replicaset_uid="rs-1",
        client_hash="h",
        deleted_at=killed,
    )
    before = REGISTRY.get_sample_value("infra_chaos_recovery_seconds_count") or 0
    fresh = dict(uid="n1", created=killed)
    cluster.watches = [
        [
            event("MODIFIED", pod("web-0", uid="u0", deleting=True), "10"),
            event("ADDED", pod("web-n1", phase="Pending", ready=False, node=None, **fresh), "11"),
            event("MODIFIED", pod("web-n1", phase="Pending", ready=False, **fresh), "12"),
        ],
        [
            event("MODIFIED", pod("web-n1", ready_since=killed, **fresh), "13"),
            event("DELETED", pod("web-0", uid="u0", deleting=True), "14"),
        ],
    ]
    command.step()
    kill.refresh_from_db()
    assert kill.recovery_s is None
    # The kill is announced once the watcher has shown the victim Terminating.
    kinds = [kind for kind, _ in frames]
    terminating_frame = next(
        i
        for i, (kind, data) in enumerate(frames)
        if kind == "pods" and any(p["status"] == "Terminating" for p in data["pods"])
    )
    announced = kinds.index("chaos")
    assert terminating_frame < announced
    first = frames[announced][1]
    assert {k: first[k] for k in ("id", "pod", "at", "outcome", "recovery_s")} == {
        "id": kill.pk,
        "pod": "web-0",
        "at": kill.at.isoformat(),
        "outcome": "deleted",
        "recovery_s": None,
    }
    assert [step["state"] for step in first["phases"]["steps"]] == ["pending"] * 4
    command.step()
    kill.refresh_from_db()
    assert kill.replacement_uid == "n1"
    assert kill.replacement_name == "web-n1"
    assert kill.replacement_created_at is not None
    assert kill.scheduled_at is not None
    assert kill.ready_at is not None
    assert kill.recovery_s is not None
    assert 0 <= kill.recovery_s < 5
    assert kill.replacement_created_at <= kill.scheduled_at <= kill.ready_at
    chaos = [data for kind, data in frames if kind == "chaos"]
    # The kill, each phase as it ends (created, scheduled), the recovery, the victim gone.
    assert [sum(s["state"] == "done" for s in f["phases"]["steps"]) for f in chaos] == [
        0,
        1,
        2,
        4,
        4,
    ]
    healed = next(f for f in chaos if f["recovery_s"] is not None)
    assert healed["id"] == kill.pk
    assert healed["recovery_s"] == round(kill.recovery_s, 2)
    assert healed["recovery"]["count"] == 1
    assert chaos[-1]["phases"]["complete"] is True
    assert chaos[-1]["phases"] == kill.phases
    assert sum(s["s"] for s in kill.phases["steps"]) == pytest.approx(kill.recovery_s, abs=0.02)
    assert (REGISTRY.get_sample_value("infra_chaos_recovery_seconds_count") or 0) == before + 1
    # The replacement shows Running in the pods frame before the victim is gone.
    pods_frames = [data for kind, data in frames if kind == "pods"]
    assert any(
        {p["name"]: p["status"] for p in f["pods"]}.get("web-n1") == "Running"
        and {p["name"]: p["status"] for p in f["pods"]}.get("web-0") == "Terminating"
        for f in pods_frames
    )
    command.step()
    assert len([kind for kind, _ in frames if kind == "chaos"]) == 5, "announced once each"


def test_an_events_thread_from_a_lost_leadership_never_publishes(
    cluster: ScriptedCluster, frames: list[tuple[str, Any]]
) -> None:
    command = watch_pods.Command()
    command.step()
    old_watch = command.event_watch
    assert old_watch is not None
    old_watch.on_change()
    assert len(frames) == 2  # while leading, a feed change publishes the pods frame
    command.on_leadership_lost()
    old_watch.on_change()
    assert len(frames) == 2


def test_only_the_watcher_keeps_a_persistent_database_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.conf import settings
    from django.db import connection

    from runtime.worker import WorkerCommand

    # The web process: every request closes its connection (threads come and go).
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] == 0
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)  # restored after
    monkeypatch.setattr(WorkerCommand, "handle", lambda self, *args, **options: None)
    watch_pods.Command().handle()
    assert connection.settings_dict["CONN_MAX_AGE"] == settings.WORKER_CONN_MAX_AGE > 0
