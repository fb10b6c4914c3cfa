"""The recovery timeline over generated histories: each phase it reports is the one that
happened (to the rounding shown), or it says the phase is unknown; never a made-up one.

Two levels: `timeline.build` over moments seen, missed or out of order; and the watcher's
pure state (PodState + RecoveryTracker) fed generated watch histories of one kill, with
re-lists after a 410, watcher restarts, a kill learned late and replacements that never
get Ready.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos import timeline
from chaos.pods import Pod
from chaos.recovery import MAX_TRACKED, Kill, PodState, RecoveryTracker
from chaos.timeline import MISSED, PENDING, PHASES, Mark, Phases, build, phases_text
from tests.chaos.fakes import T0

# Rounding of the numbers shown (two decimals) on each end of a phase.
ROUNDING = 0.011


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def truncated(moment: datetime) -> datetime:
    """The API's stamps: whole seconds."""
    return moment.replace(microsecond=0)


def check_invariants(phases: Phases) -> None:
    """What holds for any input: measured phases are non-negative and sit between known
    moments in order; `complete` and `unknown` say exactly what is missing."""
    steps = phases["steps"]
    assert [s["name"] for s in steps] == list(PHASES)
    ends = [s["end_s"] for s in steps if s["end_s"] is not None]
    assert ends == sorted(ends)
    assert all(end >= 0 for end in ends)
    previous_end: float | None = 0.0
    for step in steps:
        if step["state"] == "done":
            assert step["s"] is not None
            assert step["s"] >= 0
            assert previous_end is not None
            assert step["end_s"] is not None
            assert step["s"] == pytest.approx(step["end_s"] - previous_end, abs=1e-9)
        else:
            assert step["s"] is None
        if step["state"] == "pending":
            assert step["end_s"] is None
        previous_end = step["end_s"]
    states = [s["state"] for s in steps]
    # Nothing is measured or missed after a moment still to come.
    if "pending" in states:
        assert all(s == "pending" for s in states[states.index("pending") :])
    unknown = [s["name"] for s in steps if s["state"] == "unknown"]
    if phases["terminated"]["state"] == "unknown":
        unknown.append("terminated")
    assert phases["unknown"] == unknown
    assert phases["complete"] == (
        all(s == "done" for s in states) and phases["terminated"]["state"] == "done"
    )
    if phases["complete"]:
        total = timeline.measured_total(phases)
        assert total == pytest.approx(steps[-1]["end_s"], abs=1e-6)
    assert phases_text(phases)


# -- build() over moments

gaps = st.lists(st.floats(0, 5, allow_nan=False), min_size=4, max_size=4)
# How the watcher came by each moment: saw it (with a delivery delay), missed it, or got a
# time that contradicts the order of events (a wrong clock).
how = st.sampled_from(["seen", "seen", "seen", "missed", "garbled"])


@given(
    gaps=gaps,
    modes=st.lists(how, min_size=4, max_size=4),
    reached=st.integers(0, 4),
    delays=st.lists(st.floats(0, 0.004), min_size=4, max_size=4),
    termination=st.tuples(st.sampled_from(["seen", "missed", "pending"]), st.floats(0, 8)),
    final=st.booleans(),
)
def test_each_phase_is_measured_right_or_said_to_be_unknown(
    gaps: list[float],
    modes: list[str],
    reached: int,
    delays: list[float],
    termination: tuple[str, float],
    final: bool,
) -> None:
    killed = at(100)
    truth: list[datetime] = []
    moment = killed
    for gap in gaps:
        moment += timedelta(seconds=gap)
        truth.append(moment)
    marks: dict[str, Mark] = {}
    # One watch stream delivers changes in order, each a little after it happened.
    observed = killed
    for i, name in enumerate(PHASES[:reached]):
        observed = max(observed, truth[i] + timedelta(seconds=delays[i]))
        if modes[i] == "seen":
            marks[name] = timeline.seen(observed)
        elif modes[i] == "missed":
            marks[name] = MISSED
        else:
            marks[name] = timeline.seen(killed - timedelta(seconds=1 + gaps[i]))
    kind, gone_after = termination
    terminated = {
        "seen": timeline.seen(killed + timedelta(seconds=gone_after)),
        "missed": MISSED,
        "pending": PENDING,
    }[kind]

    phases = build(killed=killed, marks=marks, terminated=terminated, final=final)
    check_invariants(phases)

    offsets = [(t - killed).total_seconds() for t in truth]
    for i, step in enumerate(phases["steps"]):
        if i >= reached:
            assert step["state"] == ("unknown" if final else "pending")
            continue
        if modes[i] != "seen":
            assert step["state"] == "unknown", (modes[i], step)
        if step["state"] == "done":
            start = offsets[i - 1] if i else 0.0
            # Two delivery delays and the rounding of both ends.
            assert step["s"] == pytest.approx(offsets[i] - start, abs=0.008 + 2 * ROUNDING)
            assert all(modes[j] == "seen" for j in range(i + 1) if j >= i - 1)
        if step["end_s"] is not None:
            assert step["end_s"] == pytest.approx(offsets[i], abs=0.004 + ROUNDING)
    if kind == "seen":
        assert phases["terminated"] == {"state": "done", "s": round(gone_after, 2)}
    all_seen = reached == 4 and all(m == "seen" for m in modes)
    assert phases["complete"] == (all_seen and kind == "seen")
    if all_seen:
        assert timeline.measured_total(phases) == pytest.approx(offsets[-1], abs=0.004 + ROUNDING)


def test_a_moment_before_the_kill_is_not_trusted_nor_the_phase_after_it() -> None:
    killed = at(100)
    marks = {
        "created": timeline.seen(at(99.7)),  # the web process's clock runs ahead
        "scheduled": timeline.seen(at(100.2)),
        "started": timeline.seen(at(101.2)),
        "ready": timeline.seen(at(101.5)),
    }
    phases = build(killed=killed, marks=marks, terminated=timeline.seen(at(103)))
    states = [(s["name"], s["state"], s["s"]) for s in phases["steps"]]
    assert states == [
        ("created", "unknown", None),
        ("scheduled", "unknown", None),
        ("started", "done", 1.0),
        ("ready", "done", 0.3),
    ]
    assert phases["complete"] is False
    assert phases["unknown"] == ["created", "scheduled"]
    assert "partial" in phases_text(phases)


# -- the watcher's state over generated watch histories


@dataclass(frozen=True)
class History:
    """One kill as it really happened, in seconds after T0, and how the watcher saw it."""

    killed: float
    created: float
    scheduled: float
    started: float
    ready: float | None  # None: the replacement never gets Ready
    gone: float
    # When the watcher lost the stream and re-listed (410 Gone) or restarted afresh: the
    # changes between losing it and the re-list are never seen happen.
    blind: tuple[float, float] | None
    restart: bool
    # When the watcher's tracker learns of the kill from the database.
    learned: float


@st.composite
def histories(draw: st.DrawFn) -> History:
    killed = 100.0 + draw(st.floats(0, 0.99))
    step = st.floats(0.0, 2.5)
    created = killed + draw(st.floats(0.01, 1.0))
    scheduled = created + draw(step)
    started = scheduled + draw(step)
    ready = None if draw(st.integers(0, 5)) == 0 else started + draw(step)
    gone = killed + draw(st.floats(0.5, 6.0))
    blind = None
    if draw(st.booleans()):
        lost = killed + draw(st.floats(0, 6))
        blind = (lost, lost + draw(st.floats(0.3, 3)))
    learned = killed + draw(st.sampled_from([0.05, 0.5, 3.0, 9.0]))
    return History(
        killed=killed,
        created=created,
        scheduled=scheduled,
        started=started,
        ready=ready,
        gone=gone,
        blind=blind,
        restart=draw(st.booleans()),
        learned=learned,
    )


def victim(t: float, h: History) -> Pod | None:
    if t >= h.gone:
        return None
    return Pod(
        uid="victim",
        name="web-victim",
        namespace="chaos-demo",
        phase="Running",
        ready=True,
        deleting=t >= h.killed,
        replicaset_uid="rs-1",
        node="kwok-node-0",
        created_at=at(0),
        scheduled_at=at(0),
        ready_at=at(0),
    )


def replacement(t: float, h: History) -> Pod | None:
    if t < h.created:
        return None
    scheduled = t >= h.scheduled
    started = t >= h.started
    ready = h.ready is not None and t >= h.ready
    return Pod(
        uid="new",
        name="web-new",
        namespace="chaos-demo",
        phase="Running" if started else "Pending",
        ready=ready,
        deleting=False,
        replicaset_uid="rs-1",
        node="kwok-node-1" if scheduled else None,
        created_at=truncated(at(h.created)),
        scheduled_at=truncated(at(h.scheduled)) if scheduled else None,
        ready_at=truncated(at(h.ready)) if ready and h.ready is not None else None,
    )


def others() -> list[Pod]:
    return [
        Pod(
            uid=f"o{i}",
            name=f"web-o{i}",
            namespace="chaos-demo",
            phase="Running",
            ready=True,
            deleting=False,
            replicaset_uid="rs-1",
            node="kwok-node-2",
            created_at=at(0),
            scheduled_at=at(0),
            ready_at=at(0),
        )
        for i in range(2)
    ]


def cluster(t: float, h: History) -> list[Pod]:
    return [p for p in (victim(t, h), replacement(t, h)) if p is not None] + others()


def kill(h: History) -> Kill:
    return Kill(
        event_id=1,
        pod_uid="victim",
        pod_name="web-victim",
        replicaset_uid="rs-1",
        deleted_at=at(h.killed),
    )


def follow(h: History) -> tuple[Phases | None, float | None]:
    """Runs the watcher's state over the history; returns the last timeline it reported
    and the recovery_s it measured (None if never healed)."""
    state = PodState()
    tracker = RecoveryTracker()
    view = cluster(0, h)
    state.reset(view, now=at(0))
    stored: Phases | None = None
    healed_s: float | None = None
    learned = False
    moments = {h.killed, h.created, h.scheduled, h.started, h.gone, h.learned}
    if h.ready is not None:
        moments.add(h.ready)
    if h.blind is not None:
        moments.update(h.blind)
    # Long after: a kill that never healed has been given up on by then.
    moments.add(h.killed + 60 * 15)
    for t in sorted(moments):
        now = at(t)
        if h.blind is not None and h.blind[0] <= t < h.blind[1]:
            continue  # nothing reaches the watcher
        current = cluster(t, h)
        if h.blind is not None and t == h.blind[1]:
            if h.restart:
                state, tracker, learned = PodState(), RecoveryTracker(), False
            state.reset(current, now=now)
        else:
            before = {p.uid: p for p in view}
            for pod in current:
                if before.get(pod.uid) != pod:
                    state.apply("MODIFIED" if pod.uid in before else "ADDED", pod, now=now)
            for pod in view:
                if pod.uid not in {p.uid for p in current}:
                    state.apply("DELETED", pod, now=now)
        view = current
        if t >= h.learned and not learned:
            # From the database, as the watcher's query finds it: not healed yet, or healed
            # with the victim's termination still to come.
            learned = True
            if healed_s is None:
                tracker.track([kill(h)])
            elif stored is not None and stored["terminated"]["state"] == "pending":
                tracker.track([replace(kill(h), healed=stored)])
        for progress in tracker.expire(now=now, state=state):
            stored = progress.phases
        for recovery in tracker.recoveries(state):
            healed_s = recovery.recovery_s
            stored = recovery.phases
        for progress in tracker.progress(state):
            stored = progress.phases
    return stored, healed_s


@settings(max_examples=300, deadline=None)
@given(h=histories())
def test_the_watcher_reports_each_kill_right_or_explicitly_partial(h: History) -> None:
    phases, recovery_s = follow(h)
    assert phases is not None, "every kill gets a timeline"
    check_invariants(phases)
    truth = {
        "created": h.created,
        "scheduled": h.scheduled,
        "started": h.started,
        "ready": h.ready,
    }
    previous = h.killed
    for step in phases["steps"]:
        happened = truth[step["name"]]
        if step["end_s"] is not None:
            assert happened is not None
            assert step["end_s"] == pytest.approx(happened - h.killed, abs=ROUNDING)
        if step["state"] == "done":
            assert happened is not None
            assert step["s"] == pytest.approx(happened - previous, abs=2 * ROUNDING)
        previous = happened if happened is not None else previous
        # Seen happen only if the watcher was looking when it did.
        if h.blind is not None and happened is not None and h.blind[0] <= happened < h.blind[1]:
            assert step["end_s"] is None
    if h.ready is None:
        assert recovery_s is None
        assert phases["complete"] is False
        # Given up after MAX_TRACKED: what never happened is unknown for good, not pending.
        assert all(s["state"] != "pending" for s in phases["steps"])
    else:
        assert recovery_s is not None
    if phases["complete"]:
        assert recovery_s is not None
        assert timeline.measured_total(phases) == pytest.approx(recovery_s, abs=ROUNDING)
    if phases["terminated"]["state"] == "done":
        assert phases["terminated"]["s"] == pytest.approx(h.gone - h.killed, abs=ROUNDING)
    watched_throughout = h.blind is None or h.blind[0] > max(
        h.gone, h.ready or h.started, h.learned
    )
    if watched_throughout and h.ready is not None:
        assert phases["complete"] is True, phases


def test_a_quiet_history_is_complete_and_adds_up() -> None:
    h = History(
        killed=100.3,
        created=100.35,
        scheduled=100.36,
        started=102.1,
        ready=102.1,
        gone=103.4,
        blind=None,
        restart=False,
        learned=100.35,
    )
    phases, recovery_s = follow(h)
    assert phases is not None
    assert recovery_s == pytest.approx(1.8)
    assert [s["s"] for s in phases["steps"]] == [0.05, 0.01, 1.74, 0.0]
    assert phases["terminated"] == {"state": "done", "s": 3.1}
    assert phases["complete"] is True
    assert timedelta(seconds=10) < MAX_TRACKED
