"""Where the seconds of one recovery went: its phases, from what the pod watcher saw.

A recovery is a chain of moments, each ending one phase:

    killed -> created (ReplicaSet controller) -> scheduled (scheduler)
           -> started (kubelet) -> ready (readiness probe)

and, beside them, the victim's own shutdown: killed -> terminated (grace period).

`killed` is the moment the chaos service asked for the deletion (the same anchor as the
event's recovery_s); the others are the pod watcher's own clock at the watch event that
showed each change. A moment the watcher did not see happen (it was re-listing after a 410,
restarting, or reconnecting after a gap) is not guessed from the API's second-truncated
stamps: it is unknown, and so is every phase it bounds. A moment that would come before the
one preceding it (clocks of two processes that disagree) is not trusted either. So each
phase is either measured or said to be unknown, never made up; and since the durations of
measured consecutive phases are differences of the same moments, the phases of a complete
timeline add up to recovery_s exactly (to the rounding of the numbers shown).

Pure code over datetimes: chaos/recovery.py gathers the moments, the watcher stores the
result on the ChaosEvent (`phases`) and sends it in the `chaos` frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypedDict

# The moments, in the order they happen; each names the phase it ends.
PHASES = ("created", "scheduled", "started", "ready")
TERMINATED = "terminated"
DIGITS = 2

State = Literal["done", "pending", "unknown"]


class Step(TypedDict):
    name: str
    # done: measured; pending: not happened yet; unknown: happened, but unseen.
    state: State
    # The phase's duration, when measured.
    s: float | None
    # When the phase ended, counted from the kill, whenever that moment is known (also for
    # an unknown phase whose start was missed: it bounds the gap before it).
    end_s: float | None


class Termination(TypedDict):
    state: State
    s: float | None


class Phases(TypedDict):
    # Every phase measured, the victim's termination included.
    complete: bool
    # Names of phases (and "terminated") that happened unseen: they will stay unknown.
    unknown: list[str]
    steps: list[Step]
    terminated: Termination


@dataclass(frozen=True)
class Mark:
    """One moment of a recovery as the watcher knows it."""

    # It has happened (the replacement shows it, or shows a later one).
    reached: bool = False
    # When, on the watcher's clock, if the watcher saw it happen; None if not.
    at: datetime | None = None


PENDING = Mark()
MISSED = Mark(reached=True)


def seen(at: datetime) -> Mark:
    return Mark(reached=True, at=at)


def _offset(at: datetime, killed: datetime) -> float:
    return round((at - killed).total_seconds(), DIGITS)


def build(
    *,
    killed: datetime,
    marks: Mapping[str, Mark],
    terminated: Mark = PENDING,
    final: bool = False,
) -> Phases:
    """The timeline of one kill from its moments. `final`: nothing more will be seen (the
    watcher gave up on it), so moments still pending are unknown for good."""
    # A later moment reached means every earlier one was reached too (a Ready pod has
    # been scheduled), whatever the caller managed to tell.
    reached = [marks.get(name, PENDING).reached for name in PHASES]
    for i in range(len(PHASES) - 2, -1, -1):
        reached[i] = reached[i] or reached[i + 1]

    steps: list[Step] = []
    previous: datetime | None = killed
    previous_end = 0.0
    last = killed
    for name, was_reached in zip(PHASES, reached, strict=True):
        at = marks.get(name, PENDING).at if was_reached else None
        if at is not None and at < last:
            at = None  # before a moment that precedes it: one of the two clocks is off
        if at is None:
            state: State = "unknown" if was_reached or final else "pending"
            steps.append(Step(name=name, state=state, s=None, end_s=None))
            previous = None
            continue
        end = _offset(at, killed)
        if previous is None:
            steps.append(Step(name=name, state="unknown", s=None, end_s=end))
        else:
            steps.append(
                Step(name=name, state="done", s=round(end - previous_end, DIGITS), end_s=end)
            )
        previous, previous_end, last = at, end, at

    pending = Termination(state="pending", s=None)
    return with_termination(
        Phases(complete=False, unknown=[], steps=steps, terminated=pending),
        killed=killed,
        terminated=terminated,
        final=final,
    )


def with_termination(
    phases: Phases, *, killed: datetime, terminated: Mark, final: bool = False
) -> Phases:
    """`phases` with the victim's termination as now known (it may end after the heal)."""
    if terminated.reached and terminated.at is not None and terminated.at >= killed:
        termination = Termination(state="done", s=_offset(terminated.at, killed))
    elif terminated.reached or final:
        termination = Termination(state="unknown", s=None)
    else:
        termination = Termination(state="pending", s=None)
    steps = phases["steps"]
    unknown = [step["name"] for step in steps if step["state"] == "unknown"]
    if termination["state"] == "unknown":
        unknown.append(TERMINATED)
    complete = all(step["state"] == "done" for step in steps) and termination["state"] == "done"
    return Phases(complete=complete, unknown=unknown, steps=steps, terminated=termination)


def measured_total(phases: Phases) -> float | None:
    """The sum of the phases when all four were measured (equal to recovery_s), else None."""
    durations = [step["s"] for step in phases["steps"]]
    if any(s is None for s in durations):
        return None
    return round(sum(s for s in durations if s is not None), DIGITS)


# What did each phase, as the page and the admin name them.
LABELS = {
    "created": "controller",
    "scheduled": "scheduler",
    "started": "kubelet",
    "ready": "probe",
    TERMINATED: "evicted pod's shutdown",
}


def phases_text(phases: object) -> str:
    """One line for staff: "controller 0.41 s · scheduler 0.01 s · … (partial: …)"."""
    if not isinstance(phases, dict) or not isinstance(phases.get("steps"), list):
        return "—"
    parts = []
    for step in phases["steps"]:
        if not isinstance(step, dict):
            continue
        label = LABELS.get(str(step.get("name")), str(step.get("name")))
        s = step.get("s")
        parts.append(
            f"{label} {s:.2f} s" if isinstance(s, int | float) else f"{label} {step.get('state')}"
        )
    terminated = phases.get("terminated")
    if isinstance(terminated, dict):
        s = terminated.get("s")
        label = LABELS[TERMINATED]
        parts.append(
            f"{label} {s:.2f} s"
            if isinstance(s, int | float)
            else f"{label} {terminated.get('state')}"
        )
    text = " · ".join(parts)
    unknown = phases.get("unknown")
    if phases.get("complete") is not True and isinstance(unknown, list) and unknown:
        text += f" (partial: {', '.join(str(name) for name in unknown)} not seen)"
    return text
