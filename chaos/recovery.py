"""The pod watcher's memory: what the namespace looks like, and how each kill is healing.

Pure code over `Pod` values and timestamps, so every rule here is tested without a
cluster. The watcher command feeds it watch events and persists what it concludes; the
phases of each recovery are put together by chaos/timeline.py from the moments noted here.

Times: the API stamps creation and condition changes with one-second resolution, which
would make a 2.4 s recovery read as 2 or 3 s. The watcher therefore also notes when it saw
each change itself, and trusts its own clock when that note is consistent with the API's
stamp (within the same second, plus delivery slack); otherwise, e.g. for pods it only met
in a re-list, it falls back to the API's stamp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chaos import timeline
from chaos.pods import Pod
from chaos.timeline import MISSED, PENDING, Mark, Phases

# An observation this much later than the API's (truncated) stamp is not of the change
# itself: one second of truncation plus delivery delay.
OBSERVATION_SLACK = timedelta(seconds=2)
# creationTimestamp is truncated to the second, so a replacement created 0.3 s after the
# kill may carry a stamp up to a second before it.
CREATION_SLACK = timedelta(seconds=1)
# A kill whose replacement is not Ready after this long stops being tracked; its event
# keeps an empty recovery (the page shows "no recovery measured").
MAX_TRACKED = timedelta(minutes=10)


def precise(server: datetime | None, observed: datetime | None) -> datetime | None:
    """The better of the API's stamp and the watcher's own observation of one change."""
    if observed is None:
        return server
    if server is None:
        return observed
    if server <= observed < server + OBSERVATION_SLACK:
        return observed
    return server


@dataclass
class Seen:
    """When the watcher itself saw a pod appear, get a node, become Ready."""

    created: datetime | None = None
    scheduled: datetime | None = None
    ready: datetime | None = None
    # The moments of the recovery timeline the watcher saw happen, at the watch event that
    # showed them (not noticed later in a re-list, nor in events replayed after a gap).
    exact: dict[str, datetime] = field(default_factory=dict)


def _started(pod: Pod) -> bool:
    # Running: the kubelet has started the pod's containers.
    return pod.phase in {"Running", "Succeeded", "Failed"}


@dataclass
class PodState:
    """The chaos namespace as the watch has reported it."""

    pods: dict[str, Pod] = field(default_factory=dict)
    seen: dict[str, Seen] = field(default_factory=dict)
    # What the ReplicaSet is aiming for. The chaos account may not read Deployments or
    # ReplicaSets, so this is inferred: the number of pods not being deleted, held at its
    # last value while any pod is terminating, because then a kill (to be replaced) and a
    # scale-down (not to be) look the same until the terminating pods are gone.
    desired: int = 0
    # Whether a list has filled the state: before that, a pod missing from it says nothing.
    listed: bool = False
    # When the watcher saw pods go (their DELETED event), for the victims' termination.
    gone: dict[str, datetime] = field(default_factory=dict)

    def reset(self, pods: Iterable[Pod], *, now: datetime) -> None:
        """Replaces the state with a fresh list (start, or re-list after 410 Gone)."""
        fresh = {pod.uid: pod for pod in pods}
        previous = self.pods
        self.pods = {}
        self.seen = {uid: seen for uid, seen in self.seen.items() if uid in fresh}
        for pod in fresh.values():
            before = previous.get(pod.uid)
            self.pods[pod.uid] = pod
            # Pods first met in a list were not seen being created; their other
            # transitions are noted if they happened between two looks at them.
            self._note(before, pod, now=now, live=before is not None, exact=False)
        self._update_desired(settled=not self.pods)
        self.listed = True

    def apply(self, kind: str, pod: Pod, *, now: datetime, exact: bool = True) -> bool:
        """Applies one watch event; returns whether anything a viewer sees changed.

        `exact`: the event is news of a change that just happened, so `now` is when it
        happened. False for an event that may be a replay of one missed while the watch
        was away (the watcher knows when it reconnected)."""
        before = self.pods.get(pod.uid)
        if kind == "DELETED":
            if before is None:
                return False
            del self.pods[pod.uid]
            self.seen.pop(pod.uid, None)
            self.gone = {uid: at for uid, at in self.gone.items() if now - at <= MAX_TRACKED}
            if exact:
                self.gone[pod.uid] = now
            self._update_desired()
            return True
        self.pods[pod.uid] = pod
        self._note(before, pod, now=now, live=True, exact=exact)
        self._update_desired()
        return before is None or _visible(before) != _visible(pod)

    def _note(
        self, before: Pod | None, pod: Pod, *, now: datetime, live: bool, exact: bool
    ) -> None:
        seen = self.seen.setdefault(pod.uid, Seen())
        if before is None and live and seen.created is None:
            seen.created = now
        if pod.node and (before is None or not before.node) and (live or before is not None):
            seen.scheduled = seen.scheduled or now
        if pod.ready and (before is None or not before.ready) and (live or before is not None):
            seen.ready = seen.ready or now
        if not exact:
            return
        # Exact only when a live event shows the change against the pod as the watcher last
        # saw it: what a pod had already passed when first met in a list or a replay stays
        # unknown.
        # A pod new to a live watch was created just now, with whatever it shows already
        # (a replacement that the controller created, the scheduler bound and so on within
        # one delivery).
        changes = {
            "created": before is None,
            "scheduled": bool(pod.node) and (before is None or not before.node),
            "started": _started(pod) and (before is None or not _started(before)),
            "ready": pod.ready and (before is None or not before.ready),
        }
        for name, happened in changes.items():
            if happened and name not in seen.exact:
                seen.exact[name] = now

    def _update_desired(self, *, settled: bool = False) -> None:
        active = sum(1 for p in self.pods.values() if not p.deleting)
        if settled or not any(p.deleting for p in self.pods.values()):
            self.desired = active
        else:
            self.desired = max(self.desired, active)

    def created_at(self, pod: Pod) -> datetime | None:
        seen = self.seen.get(pod.uid)
        return precise(pod.created_at, seen.created if seen else None)

    def scheduled_at(self, pod: Pod) -> datetime | None:
        seen = self.seen.get(pod.uid)
        return precise(pod.scheduled_at, seen.scheduled if seen else None)

    def ready_at(self, pod: Pod) -> datetime | None:
        seen = self.seen.get(pod.uid)
        return precise(pod.ready_at, seen.ready if seen else None)

    def marks(self, pod: Pod) -> dict[str, Mark]:
        """The recovery moments a replacement has reached, with the times of those the
        watcher saw happen. An observation well after the API's stamp of the same change
        (a late delivery) is not a time of it."""
        seen = self.seen.get(pod.uid, Seen())
        stamps = {"created": pod.created_at, "scheduled": pod.scheduled_at, "ready": pod.ready_at}
        reached = {
            "created": True,
            "scheduled": bool(pod.node),
            "started": _started(pod),
            "ready": pod.ready,
        }
        out: dict[str, Mark] = {}
        first = seen.exact.get("created")
        # A pod an ADDED event showed long after its creation (it came into the selector
        # later, say) was not new then: nothing that event showed is a time of its own.
        late = first is not None and precise(pod.created_at, first) != first
        for name in timeline.PHASES:
            at = seen.exact.get(name)
            stamp = stamps.get(name)
            if at is not None and stamp is not None and precise(stamp, at) != at:
                at = None
            if late and at == first:
                at = None
            out[name] = Mark(reached=reached[name], at=at)
        return out

    def termination(self, uid: str) -> Mark:
        """The victim's side: gone (and when, if the watcher saw it go), or still there."""
        if not self.listed or uid in self.pods:
            return PENDING
        at = self.gone.get(uid)
        return MISSED if at is None else timeline.seen(at)

    def pod_list(
        self, *, namespace: str, now: datetime, node_label: Callable[[str | None], str | None]
    ) -> dict[str, Any]:
        """The `pods` frame's data (the websocket contract). Node names go through
        `node_label`, so only "Node N" ever leaves the server."""
        ordered = sorted(
            self.pods.values(),
            key=lambda p: (self.created_at(p) or now, p.name),
        )
        return {
            "namespace": namespace,
            "desired": self.desired,
            "ready": sum(1 for p in self.pods.values() if p.serving),
            "pods": [
                {
                    "name": pod.name,
                    "status": pod.status,
                    "ready": pod.ready and not pod.deleting,
                    "node": node_label(pod.node),
                    "age_s": _age_s(self.created_at(pod), now),
                }
                for pod in ordered
            ],
        }


def _visible(pod: Pod) -> tuple[object, ...]:
    return (pod.status, pod.ready, pod.node, pod.name)


def _age_s(created: datetime | None, now: datetime) -> int | None:
    if created is None:
        return None
    return max(0, int((now - created).total_seconds()))


@dataclass
class Kill:
    """A deleted pod whose recovery the watcher is following."""

    event_id: int
    pod_uid: str
    pod_name: str
    replicaset_uid: str
    deleted_at: datetime
    replacement_uid: str | None = None
    # Set once healed: the timeline then, kept while the victim's own termination is
    # still awaited.
    healed: Phases | None = None
    # The timeline as last reported, so that only changes are.
    shown: Phases | None = None


@dataclass(frozen=True)
class Recovery:
    event_id: int
    replacement_uid: str
    replacement_name: str
    replacement_created_at: datetime | None
    scheduled_at: datetime | None
    ready_at: datetime
    recovery_s: float
    phases: Phases


@dataclass(frozen=True)
class Progress:
    """A kill's timeline changed (a phase ended, the victim went, or the watcher gave up)."""

    event_id: int
    phases: Phases
    # Whether the kill had healed (its replacement Ready) when this was its timeline.
    healed: bool


@dataclass
class RecoveryTracker:
    kills: dict[int, Kill] = field(default_factory=dict)
    # Healed kills whose victim has not been seen gone yet.
    closing: dict[int, Kill] = field(default_factory=dict)

    def track(self, kills: Iterable[Kill]) -> None:
        """Follows kills not healed yet, and healed ones (`healed` set) whose victim's
        termination is still to be seen, e.g. after the watcher restarted."""
        for kill in kills:
            if kill.event_id in self.kills or kill.event_id in self.closing:
                continue
            if kill.healed is not None:
                kill.shown = kill.healed
                self.closing[kill.event_id] = kill
            else:
                self.kills[kill.event_id] = kill

    def following(self) -> set[int]:
        return set(self.kills) | set(self.closing)

    def expire(self, *, now: datetime, state: PodState | None = None) -> list[Progress]:
        """Gives up on kills older than MAX_TRACKED and forgets them; returns their final
        timelines, in which whatever was not seen by now stays unknown."""
        given_up: list[Progress] = []
        for following in (self.kills, self.closing):
            for kill in [k for k in following.values() if now - k.deleted_at > MAX_TRACKED]:
                del following[kill.event_id]
                phases = self._timeline(kill, state, final=True)
                given_up.append(Progress(kill.event_id, phases, healed=kill.healed is not None))
        return given_up

    def progress(self, state: PodState) -> list[Progress]:
        """Timelines that changed since last asked: of kills healing (phases completing),
        and of healed ones whose victim has now gone. Call after recoveries()."""
        changed: list[Progress] = []
        for kill in [*self.kills.values(), *self.closing.values()]:
            phases = self._timeline(kill, state)
            if phases != kill.shown:
                kill.shown = phases
                changed.append(Progress(kill.event_id, phases, healed=kill.healed is not None))
            if kill.healed is not None and phases["terminated"]["state"] != "pending":
                del self.closing[kill.event_id]
        return changed

    @staticmethod
    def _timeline(kill: Kill, state: PodState | None, *, final: bool = False) -> Phases:
        terminated = PENDING if state is None else state.termination(kill.pod_uid)
        if kill.healed is not None:
            return timeline.with_termination(
                kill.healed, killed=kill.deleted_at, terminated=terminated, final=final
            )
        pod = None if state is None else state.pods.get(kill.replacement_uid or "")
        marks = {} if pod is None or state is None else state.marks(pod)
        # Ready is reported by recoveries(), with the recovery it completes.
        marks.pop("ready", None)
        return timeline.build(
            killed=kill.deleted_at, marks=marks, terminated=terminated, final=final
        )

    def recoveries(self, state: PodState) -> list[Recovery]:
        """Pairs kills with replacements and returns the healed ones (each once).

        A kill's replacement is a pod of the same ReplicaSet, other than the victim,
        created no earlier than the kill (minus the stamp's truncation) and not already
        claimed. With several kills in flight on one ReplicaSet, they are served in the
        order they happened, each taking the earliest-created candidate: the controller
        replaces deletions in the order it sees them."""
        for kill in self.kills.values():
            pod = state.pods.get(kill.replacement_uid or "")
            if kill.replacement_uid is not None and (pod is None or pod.deleting):
                # The replacement itself went away before it was Ready; look again.
                kill.replacement_uid = None
        claimed = {k.replacement_uid for k in self.kills.values() if k.replacement_uid}
        for kill in sorted(self.kills.values(), key=lambda k: (k.deleted_at, k.event_id)):
            if kill.replacement_uid is not None:
                continue
            candidates = [
                pod
                for pod in state.pods.values()
                if pod.replicaset_uid == kill.replicaset_uid
                and pod.uid != kill.pod_uid
                and pod.uid not in claimed
                and not pod.deleting
                and (created := state.created_at(pod)) is not None
                and created >= kill.deleted_at - CREATION_SLACK
            ]
            if candidates:
                chosen = min(candidates, key=lambda p: (state.created_at(p), p.name))
                kill.replacement_uid = chosen.uid
                claimed.add(chosen.uid)
        healed: list[Recovery] = []
        for kill in list(self.kills.values()):
            pod = state.pods.get(kill.replacement_uid or "")
            if pod is None or not pod.serving:
                continue
            ready_at = state.ready_at(pod)
            if ready_at is None:
                continue
            # Never negative: clocks of the web process and the apiserver may disagree.
            recovery_s = max(0.0, (ready_at - kill.deleted_at).total_seconds())
            marks = state.marks(pod)
            # The timeline ends where recovery_s does, or says it does not know how.
            marks["ready"] = timeline.seen(ready_at) if marks["ready"].at == ready_at else MISSED
            phases = timeline.build(
                killed=kill.deleted_at, marks=marks, terminated=state.termination(kill.pod_uid)
            )
            healed.append(
                Recovery(
                    event_id=kill.event_id,
                    replacement_uid=pod.uid,
                    replacement_name=pod.name,
                    replacement_created_at=state.created_at(pod),
                    scheduled_at=state.scheduled_at(pod),
                    ready_at=ready_at,
                    recovery_s=recovery_s,
                    phases=phases,
                )
            )
            del self.kills[kill.event_id]
            kill.healed, kill.shown = phases, phases
            if phases["terminated"]["state"] == "pending":
                self.closing[kill.event_id] = kill
        return healed
