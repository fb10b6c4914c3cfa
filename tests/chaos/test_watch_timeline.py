"""The watcher command's side of recovery timelines: what a restarted or resumed watcher
stores and announces, one step at a time against a scripted Kubernetes seam."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from chaos import timeline
from chaos.management.commands import watch_pods
from chaos.models import ChaosEvent
from chaos.timeline import PENDING
from tests.chaos.fakes import pod
from tests.chaos.test_watch_pods import ScriptedCluster, cluster, event, frames  # noqa: F401

pytestmark = pytest.mark.django_db


def healed_kill() -> ChaosEvent:
    killed = timezone.now() - timedelta(seconds=5)
    marks = {
        name: timeline.seen(killed + timedelta(seconds=s))
        for name, s in (("created", 0.1), ("scheduled", 0.2), ("started", 2.0), ("ready", 2.5))
    }
    phases = timeline.build(killed=killed, marks=marks, terminated=PENDING)
    return ChaosEvent.objects.create(
        outcome="deleted",
        pod_name="web-v",
        pod_uid="victim",
        replicaset_uid="rs-1",
        client_hash="h",
        deleted_at=killed,
        ready_at=killed + timedelta(seconds=2.5),
        recovery_s=2.5,
        phases=phases,
    )


def test_a_restarted_watcher_says_the_victim_s_end_was_not_seen(
    cluster: ScriptedCluster,  # noqa: F811
    frames: list[tuple[str, Any]],  # noqa: F811
) -> None:
    kill = healed_kill()
    # The victim went while no watcher was looking: the first list no longer has it.
    watch_pods.Command().step()
    kill.refresh_from_db()
    assert kill.phases["terminated"] == {"state": "unknown", "s": None}
    assert kill.phases["unknown"] == ["terminated"]
    assert kill.phases["complete"] is False
    # The measured phases are kept as they were.
    assert [s["s"] for s in kill.phases["steps"]] == [0.1, 0.1, 1.8, 0.5]
    [chaos] = [data for kind, data in frames if kind == "chaos"]
    assert chaos["phases"] == kill.phases
    assert chaos["recovery_s"] == 2.5


def test_a_restarted_watcher_sees_a_slow_victim_go_and_completes_its_timeline(
    cluster: ScriptedCluster,  # noqa: F811
    frames: list[tuple[str, Any]],  # noqa: F811
) -> None:
    kill = healed_kill()
    victim = pod("web-v", uid="victim", deleting=True, created=timezone.now() - timedelta(hours=1))
    cluster.pods = [*cluster.pods, victim]
    cluster.watches = [[event("DELETED", victim, "20")]]
    command = watch_pods.Command()
    command.step()  # the list: still there, so still pending, nothing to announce
    assert [kind for kind, _ in frames if kind == "chaos"] == []
    command.step()  # its DELETED event, seen live
    kill.refresh_from_db()
    assert kill.phases["terminated"]["state"] == "done"
    assert kill.phases["terminated"]["s"] >= 5
    assert kill.phases["complete"] is True
    assert [data["phases"]["complete"] for kind, data in frames if kind == "chaos"] == [True]
    command.step()
    assert len([kind for kind, _ in frames if kind == "chaos"]) == 1, "announced once"


def test_an_old_leader_s_late_timeline_never_overwrites_the_healed_one() -> None:
    from chaos.services import chaos_event_record_phases

    kill = healed_kill()
    stale = timeline.build(killed=kill.deleted_at or kill.at, marks={})
    assert chaos_event_record_phases(event_id=kill.pk, phases=stale, healed=False) is None
    kill.refresh_from_db()
    assert kill.phases["steps"][0]["state"] == "done"
