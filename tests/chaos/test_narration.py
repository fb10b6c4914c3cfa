from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from chaos import kube
from chaos.eventwatch import FORBIDDEN_PAUSE_S, EventWatch
from chaos.narration import MAX_SHOWN, EventFeed, narrate
from chaos.pods import pod_from_dict
from tests.chaos.fakes import T0, pod, pod_dict, stamp


def k8s_event(
    reason: str,
    *,
    kind: str = "Pod",
    name: str = "chaos-demo-abc-x1",
    uid: str = "e1",
    seconds: int = 0,
    message: str = "Successfully assigned chaos-demo/chaos-demo-abc-x1 to kwok-node-1",
) -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "creationTimestamp": stamp(T0)},
        "involvedObject": {"kind": kind, "name": name, "namespace": "chaos-demo"},
        "reason": reason,
        "message": message,
        "lastTimestamp": stamp(T0 + timedelta(seconds=seconds)),
        "source": {"component": "default-scheduler", "host": "kwok-node-1"},
    }


def test_events_are_told_from_reason_and_object_only() -> None:
    told = narrate(k8s_event("Scheduled"))
    assert told is not None
    assert told.frame() == {
        "at": (T0).isoformat(),
        "reason": "Scheduled",
        "text": "chaos-demo-abc-x1 was given a node",
    }
    created = narrate(k8s_event("SuccessfulCreate", kind="ReplicaSet", name="chaos-demo-abc"))
    assert created is not None
    assert created.text == "chaos-demo-abc created a pod"


@pytest.mark.parametrize("reason", ["Scheduled", "Pulled", "Killing", "SomethingNew"])
def test_messages_and_hosts_never_leak(reason: str) -> None:
    told = narrate(k8s_event(reason, message="pulled registry.example/nginx on kwok-node-1"))
    assert told is not None
    assert "kwok-node" not in repr(told.frame())
    assert "registry" not in repr(told.frame())


def test_odd_events_are_skipped() -> None:
    assert narrate(k8s_event("Not a word!")) is None
    assert narrate({"metadata": {"uid": "x"}}) is None
    broken = k8s_event("Scheduled")
    broken["lastTimestamp"] = None
    broken["metadata"]["creationTimestamp"] = "yesterday"
    assert narrate(broken) is None


def test_the_feed_shows_the_latest_oldest_first() -> None:
    feed = EventFeed()
    assert feed.recent() is None  # not read yet: the page hides the panel
    feed.reset([k8s_event("Scheduled", uid=f"e{i}", seconds=i) for i in range(20)])
    shown = feed.recent()
    assert shown is not None
    assert len(shown) == MAX_SHOWN
    assert [e["at"] for e in shown] == sorted(e["at"] for e in shown)
    assert feed.apply("ADDED", k8s_event("Killing", uid="new", seconds=99)) is True
    assert feed.recent()[-1]["reason"] == "Killing"  # type: ignore[index]
    assert feed.apply("ADDED", k8s_event("Killing", uid="old", seconds=-5)) is False
    feed.unavailable()
    assert feed.recent() is None


def test_an_evicted_pod_is_told_once_and_survives_a_relist_of_events() -> None:
    # The Eviction API writes no Event; the pod's DisruptionTarget condition says it.
    feed = EventFeed()
    victim = pod("chaos-demo-abc-x1", uid="v1")
    evicted = pod_from_dict(
        {
            **pod_dict("chaos-demo-abc-x1", uid="v1"),
            "status": {
                "phase": "Running",
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "EvictionByEvictionAPI",
                    }
                ],
            },
        }
    )
    assert evicted.evicted
    assert not victim.evicted
    assert feed.note_eviction(evicted, T0) is False, "told before the feed can be shown"
    feed.reset([k8s_event("Scheduled", uid="e1")])
    assert feed.note_eviction(victim, T0) is False
    assert feed.note_eviction(evicted, T0 + timedelta(seconds=1)) is True
    assert feed.note_eviction(evicted, T0 + timedelta(seconds=2)) is False
    told = feed.recent()
    assert told is not None
    assert told[-1] == {
        "at": (T0 + timedelta(seconds=1)).isoformat(),
        "reason": "Evicted",
        "text": "chaos-demo-abc-x1 was evicted: its disruption budget allowed it",
    }
    feed.reset([k8s_event("Scheduled", uid="e1")])
    assert feed.recent() == told


class ScriptedEvents:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = [k8s_event("Scheduled", uid="a")]
        self.watches: list[list[tuple[str, dict[str, Any], str]] | kube.KubeError] = []
        self.lists = 0
        self.list_error: kube.KubeError | None = None

    def list_events(self, api: Any, **kwargs: Any) -> kube.EventSnapshot:
        self.lists += 1
        if self.list_error:
            raise self.list_error
        return kube.EventSnapshot(items=self.items, resource_version="5")

    def watch_events(self, api: Any, **kwargs: Any) -> Iterator[tuple[str, dict[str, Any], str]]:
        call = self.watches.pop(0) if self.watches else []
        if isinstance(call, kube.KubeError):
            raise call
        yield from call


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> ScriptedEvents:
    events = ScriptedEvents()
    monkeypatch.setattr(kube, "core_api", lambda: object())
    monkeypatch.setattr(kube, "list_events", events.list_events)
    monkeypatch.setattr(kube, "watch_events", events.watch_events)
    return events


def test_the_event_watch_lists_then_follows(scripted: ScriptedEvents) -> None:
    feed = EventFeed()
    changes: list[int] = []
    watch = EventWatch(
        namespace="chaos-demo",
        feed=feed,
        on_change=lambda: changes.append(1),
        stopped=lambda: False,
    )
    assert watch.step() == 0
    assert [e["reason"] for e in feed.recent() or []] == ["Scheduled"]
    scripted.watches = [
        [("ADDED", k8s_event("Killing", uid="b", seconds=3), "6"), ("BOOKMARK", {}, "7")]
    ]
    watch.step()
    assert [e["reason"] for e in feed.recent() or []] == ["Scheduled", "Killing"]
    assert watch.resource_version == "7"
    assert len(changes) == 2
    scripted.watches = [kube.KubeError("gone", status=410)]
    watch.step()
    watch.step()
    assert scripted.lists == 2


def test_without_rbac_on_events_the_feed_is_hidden(scripted: ScriptedEvents) -> None:
    feed = EventFeed()
    feed.reset([k8s_event("Scheduled")])
    scripted.list_error = kube.KubeError("forbidden", status=403)
    watch = EventWatch(
        namespace="chaos-demo", feed=feed, on_change=lambda: None, stopped=lambda: False
    )
    assert watch.step() == FORBIDDEN_PAUSE_S
    assert feed.recent() is None
