from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from chaos.recovery import Kill, PodState, RecoveryTracker, precise
from tests.chaos.fakes import T0, pod


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def labels(real: str | None) -> str | None:
    return {"kwok-node-0": "Node 1", "kwok-node-1": "Node 2"}.get(real or "")


def healthy_state() -> PodState:
    state = PodState()
    state.reset([pod(f"web-{i}", uid=f"u{i}") for i in range(3)], now=at(60))
    return state


def kill_of(uid: str, *, deleted: float, event_id: int = 1) -> Kill:
    return Kill(
        event_id=event_id,
        pod_uid=uid,
        pod_name=f"web-{uid}",
        replicaset_uid="rs-1",
        deleted_at=at(deleted),
    )


def test_precise_prefers_the_watchers_clock_within_the_stamps_second() -> None:
    assert precise(at(10), at(10.4)) == at(10.4)
    assert precise(at(10), at(11.9)) == at(11.9)  # truncation + delivery
    assert precise(at(10), at(15)) == at(10)  # seen late (a re-list): the stamp
    assert precise(at(10), at(9)) == at(10)  # clocks disagree: the stamp
    assert precise(None, at(3)) == at(3)
    assert precise(at(3), None) == at(3)


def test_changes_a_viewer_sees_are_reported_and_others_are_not() -> None:
    state = healthy_state()
    assert state.apply("MODIFIED", pod("web-0", uid="u0"), now=at(61)) is False
    assert state.apply("MODIFIED", pod("web-0", uid="u0", deleting=True), now=at(62)) is True
    assert state.apply("ADDED", pod("web-3", uid="u3", created=at(62)), now=at(62.1)) is True
    assert state.apply("DELETED", pod("web-0", uid="u0", deleting=True), now=at(65)) is True
    assert state.apply("DELETED", pod("web-0", uid="u0", deleting=True), now=at(65)) is False


def test_the_pod_list_frame_shows_statuses_and_only_node_labels() -> None:
    state = healthy_state()
    state.apply("MODIFIED", pod("web-0", uid="u0", deleting=True), now=at(62))
    state.apply(
        "ADDED",
        pod("web-3", uid="u3", phase="Pending", ready=False, node=None, created=at(62)),
        now=at(62.3),
    )
    state.apply("MODIFIED", pod("web-1", uid="u1", node="kwok-node-1"), now=at(62.4))
    frame = state.pod_list(namespace="chaos-demo", now=at(63), node_label=labels)
    assert frame["namespace"] == "chaos-demo"
    assert frame["desired"] == 3
    assert frame["ready"] == 2
    by_name = {p["name"]: p for p in frame["pods"]}
    assert by_name["web-0"]["status"] == "Terminating"
    assert by_name["web-0"]["ready"] is False
    assert by_name["web-3"] == {
        "name": "web-3",
        "status": "Pending",
        "ready": False,
        "node": None,
        "age_s": 0,
    }
    assert by_name["web-1"]["node"] == "Node 2"
    assert by_name["web-2"]["age_s"] == 63
    assert "kwok-node" not in repr(frame)
    # Newest last, so the dots keep their places and a replacement appears at the end.
    assert [p["name"] for p in frame["pods"]][-1] == "web-3"


def test_desired_holds_through_a_kill_and_follows_a_scale_down() -> None:
    state = healthy_state()
    assert state.desired == 3
    state.apply("MODIFIED", pod("web-0", uid="u0", deleting=True), now=at(61))
    assert state.desired == 3  # before the replacement exists
    state.apply("ADDED", pod("web-3", uid="u3", created=at(61)), now=at(61.1))
    state.apply("DELETED", pod("web-0", uid="u0", deleting=True), now=at(64))
    assert state.desired == 3
    # Scaled to 1: two pods terminate; the count drops once they are gone.
    state.apply("MODIFIED", pod("web-1", uid="u1", deleting=True), now=at(70))
    state.apply("MODIFIED", pod("web-2", uid="u2", deleting=True), now=at(70))
    assert state.desired == 3
    state.apply("DELETED", pod("web-1", uid="u1", deleting=True), now=at(73))
    state.apply("DELETED", pod("web-2", uid="u2", deleting=True), now=at(73))
    assert state.desired == 1


def heal(state: PodState, *, victim: str, new: str, killed: float) -> None:
    """What the watch reports after a kill: victim terminating, replacement created,
    scheduled, Ready (kwok: Pending ~1 s, then Ready)."""
    state.apply("MODIFIED", pod(f"web-{victim}", uid=victim, deleting=True), now=at(killed + 0.05))
    created = at(int(killed + 0.1))  # the API's stamp, truncated
    pending = dict(uid=new, phase="Pending", ready=False, created=created)
    state.apply("ADDED", pod(f"web-{new}", node=None, **pending), now=at(killed + 0.1))
    state.apply("MODIFIED", pod(f"web-{new}", **pending), now=at(killed + 0.2))
    ready_stamp = at(int(killed + 1.5))
    state.apply(
        "MODIFIED",
        pod(f"web-{new}", uid=new, created=created, ready_since=ready_stamp),
        now=at(killed + 1.5),
    )


def test_a_kill_heals_with_sub_second_timing() -> None:
    state = healthy_state()
    tracker = RecoveryTracker()
    tracker.track([kill_of("u0", deleted=100.3)])
    state.apply("MODIFIED", pod("web-u0", uid="u0", deleting=True), now=at(100.35))
    assert tracker.recoveries(state) == []
    heal(state, victim="u0", new="n1", killed=100.3)
    [recovery] = tracker.recoveries(state)
    assert recovery.replacement_uid == "n1"
    assert recovery.recovery_s == pytest.approx(1.5)
    assert recovery.replacement_created_at == at(100.4)
    assert recovery.scheduled_at == at(100.5)
    assert recovery.ready_at == at(101.8)
    assert tracker.kills == {}
    assert tracker.recoveries(state) == []  # announced once


def test_a_kill_learned_after_its_replacement_was_ready_still_heals() -> None:
    state = healthy_state()
    heal(state, victim="u0", new="n1", killed=100.3)
    tracker = RecoveryTracker()
    tracker.track([kill_of("u0", deleted=100.3)])
    [recovery] = tracker.recoveries(state)
    assert recovery.recovery_s == pytest.approx(1.5)


def test_pods_that_existed_before_the_kill_are_not_replacements() -> None:
    state = healthy_state()  # created at T0
    tracker = RecoveryTracker()
    tracker.track([kill_of("u0", deleted=100)])
    state.apply("MODIFIED", pod("web-0", uid="u0", deleting=True), now=at(100.1))
    assert tracker.recoveries(state) == []
    assert tracker.kills[1].replacement_uid is None


def test_another_replicasets_pod_is_not_a_replacement() -> None:
    state = healthy_state()
    tracker = RecoveryTracker()
    tracker.track([kill_of("u0", deleted=100)])
    state.apply("ADDED", pod("other", uid="x", owner="rs-2", created=at(100)), now=at(100.2))
    assert tracker.recoveries(state) == []


def test_two_kills_in_flight_are_paired_in_order() -> None:
    state = healthy_state()
    tracker = RecoveryTracker()
    tracker.track(
        [kill_of("u0", deleted=100.0, event_id=1), kill_of("u1", deleted=100.6, event_id=2)]
    )
    for victim in ("u0", "u1"):
        state.apply("MODIFIED", pod(victim, uid=victim, deleting=True), now=at(100.7))
    state.apply("ADDED", pod("a", uid="a", ready=False, created=at(100)), now=at(100.1))
    state.apply("ADDED", pod("b", uid="b", ready=False, created=at(100)), now=at(100.7))
    state.apply("MODIFIED", pod("b", uid="b", created=at(100), ready_since=at(101)), now=at(101.9))
    state.apply("MODIFIED", pod("a", uid="a", created=at(100), ready_since=at(102)), now=at(102.2))
    healed = {r.event_id: r for r in tracker.recoveries(state)}
    assert healed[1].replacement_uid == "a"
    assert healed[2].replacement_uid == "b"
    assert healed[1].recovery_s == pytest.approx(2.2)
    assert healed[2].recovery_s == pytest.approx(1.3)


def test_a_replacement_that_dies_before_ready_is_replaced_in_the_pairing() -> None:
    state = healthy_state()
    tracker = RecoveryTracker()
    tracker.track([kill_of("u0", deleted=100)])
    state.apply("MODIFIED", pod("web-0", uid="u0", deleting=True), now=at(100.1))
    state.apply("ADDED", pod("a", uid="a", ready=False, created=at(100)), now=at(100.2))
    assert tracker.recoveries(state) == []
    assert tracker.kills[1].replacement_uid == "a"
    state.apply("MODIFIED", pod("a", uid="a", ready=False, deleting=True), now=at(100.5))
    state.apply("ADDED", pod("b", uid="b", ready=False, created=at(100)), now=at(100.6))
    state.apply("MODIFIED", pod("b", uid="b", created=at(100), ready_since=at(101)), now=at(101.4))
    [recovery] = tracker.recoveries(state)
    assert recovery.replacement_uid == "b"


def test_kills_that_never_heal_are_dropped_after_a_while() -> None:
    tracker = RecoveryTracker()
    tracker.track([kill_of("u0", deleted=0)])
    assert tracker.expire(now=at(60)) == []
    assert [k.event_id for k in tracker.expire(now=at(11 * 60))] == [1]
    assert tracker.kills == {}


def test_a_relist_keeps_what_the_watcher_saw_of_surviving_pods() -> None:
    state = PodState()
    state.apply("ADDED", pod("a", uid="a", created=at(10)), now=at(10.4))
    state.reset([pod("a", uid="a", created=at(10)), pod("b", uid="b", created=at(5))], now=at(30))
    assert state.created_at(state.pods["a"]) == at(10.4)
    # Met first in the list: the API's stamp, not the moment of the re-list.
    assert state.created_at(state.pods["b"]) == at(5)
