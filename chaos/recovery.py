"""The pod watcher's memory: what the namespace looks like, and how each kill is healing.

Pure code over `Pod` values and timestamps, so every rule here is tested without a
cluster. The watcher command feeds it watch events and persists what it concludes.

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

from chaos.pods import Pod

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
            self._note(before, pod, now=now, live=before is not None)
        self._update_desired(settled=not self.pods)

    def apply(self, kind: str, pod: Pod, *, now: datetime) -> bool:
        """Applies one watch event; returns whether anything a viewer sees changed."""
        before = self.pods.get(pod.uid)
        if kind == "DELETED":
            if before is None:
                return False
            del self.pods[pod.uid]
            self.seen.pop(pod.uid, None)
            self._update_desired()
            return True
        self.pods[pod.uid] = pod
        self._note(before, pod, now=now, live=True)
        self._update_desired()
        return before is None or _visible(before) != _visible(pod)

    def _note(self, before: Pod | None, pod: Pod, *, now: datetime, live: bool) -> None:
        seen = self.seen.setdefault(pod.uid, Seen())
        if before is None and live and seen.created is None:
            seen.created = now
        if pod.node and (before is None or not before.node) and (live or before is not None):
            seen.scheduled = seen.scheduled or now
        if pod.ready and (before is None or not before.ready) and (live or before is not None):
            seen.ready = seen.ready or now

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

    def pod_list(
        self, *, namespace: str, now: datetime, node_label: Callable[[str | None], str | None]
    ) -> dict[str, Any]:
        """The `pods` frame's data (DESIGN.md, "Websocket"). Node names go through
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
    """A deleted pod whose replacement is not Ready yet."""

    event_id: int
    pod_uid: str
    pod_name: str
    replicaset_uid: str
    deleted_at: datetime
    replacement_uid: str | None = None


@dataclass(frozen=True)
class Recovery:
    event_id: int
    replacement_uid: str
    replacement_name: str
    replacement_created_at: datetime | None
    scheduled_at: datetime | None
    ready_at: datetime
    recovery_s: float


@dataclass
class RecoveryTracker:
    kills: dict[int, Kill] = field(default_factory=dict)

    def track(self, kills: Iterable[Kill]) -> None:
        for kill in kills:
            self.kills.setdefault(kill.event_id, kill)

    def expire(self, *, now: datetime) -> list[Kill]:
        old = [k for k in self.kills.values() if now - k.deleted_at > MAX_TRACKED]
        for kill in old:
            del self.kills[kill.event_id]
        return old

    def recoveries(self, state: PodState) -> list[Recovery]:
        """Pairs kills with replacements and returns (and forgets) the healed ones.

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
            healed.append(
                Recovery(
                    event_id=kill.event_id,
                    replacement_uid=pod.uid,
                    replacement_name=pod.name,
                    replacement_created_at=state.created_at(pod),
                    scheduled_at=state.scheduled_at(pod),
                    ready_at=ready_at,
                    recovery_s=recovery_s,
                )
            )
            del self.kills[kill.event_id]
        return healed
