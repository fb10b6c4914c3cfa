"""Kubernetes Events in the chaos namespace, told as a short feed for viewers.

Only the event's reason, the kind and name of the object it is about (all in the
sacrificial namespace) and its time are used. Messages are never shown: they name nodes
("Successfully assigned chaos-demo/x to kwok-node-1"), images and sometimes addresses.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chaos.pods import Pod, parse_time

MAX_SHOWN = 12
# A line the feed tells from a pod rather than from an Event: the Eviction API writes no
# Event, but marks the pod (DisruptionTarget / EvictionByEvictionAPI) before deleting it.
EVICTED = "Evicted"
_NOTE_PREFIX = "pod-evicted:"
_WORD = re.compile(r"^[A-Za-z]{1,64}$")
# What a viewer reads for the reasons a chaos kill produces; {name} is the object's.
_TEXTS = {
    ("ReplicaSet", "SuccessfulCreate"): "{name} created a pod",
    ("ReplicaSet", "SuccessfulDelete"): "{name} removed a pod",
    ("Deployment", "ScalingReplicaSet"): "{name} scaled its ReplicaSet",
    ("Pod", "Scheduled"): "{name} was given a node",
    ("Pod", "FailedScheduling"): "{name} is waiting for a node",
    ("Pod", "Pulling"): "{name} is pulling its image",
    ("Pod", "Pulled"): "{name} has its image",
    ("Pod", "Created"): "{name}: container created",
    ("Pod", "Started"): "{name}: container started",
    ("Pod", "Killing"): "{name}: container stopping",
    ("Pod", "Unhealthy"): "{name} failed a health check",
}


@dataclass(frozen=True)
class Narration:
    uid: str
    at: datetime
    reason: str
    text: str

    def frame(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "reason": self.reason, "text": self.text}


def narrate(raw: Mapping[str, Any]) -> Narration | None:
    """One feed line for an Event (core/v1 or events.k8s.io shape), or None to skip it."""
    metadata: Mapping[str, Any] = raw.get("metadata") or {}
    involved: Mapping[str, Any] = raw.get("involvedObject") or raw.get("regarding") or {}
    reason = str(raw.get("reason") or "")
    kind = str(involved.get("kind") or "")
    name = str(involved.get("name") or "")
    at = (
        parse_time(raw.get("lastTimestamp"))
        or parse_time(raw.get("eventTime"))
        or parse_time(metadata.get("creationTimestamp"))
    )
    if not (_WORD.match(reason) and _WORD.match(kind) and name and at and metadata.get("uid")):
        return None
    template = _TEXTS.get((kind, reason), "{kind} {name}")
    return Narration(
        uid=str(metadata["uid"]),
        at=at,
        reason=reason,
        text=template.format(kind=kind, name=name),
    )


class EventFeed:
    """The latest narrated events. Written by the events watch thread, read when a pods
    frame is built on the main thread, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Narration] = {}
        # None until the first list, and again when the Role does not allow reading
        # events: the page then hides its panel instead of showing an empty one.
        self._available = False

    def reset(self, raws: Iterable[Mapping[str, Any]]) -> None:
        narrated = [n for n in (narrate(raw) for raw in raws) if n is not None]
        with self._lock:
            # Evictions are not Events: a re-list of Events must not forget them.
            notes = {uid: n for uid, n in self._items.items() if uid.startswith(_NOTE_PREFIX)}
            self._items = {**notes, **{n.uid: n for n in narrated}}
            self._available = True
            self._trim()

    def apply(self, kind: str, raw: Mapping[str, Any]) -> bool:
        """Applies one watch event; returns whether the shown feed changed."""
        narration = narrate(raw)
        if narration is None:
            return False
        with self._lock:
            before = self._shown()
            if kind == "DELETED":
                # Events expire (1 h by default); the feed keeps what it told.
                return False
            self._items[narration.uid] = narration
            self._trim()
            return self._shown() != before

    def note_eviction(self, pod: Pod, at: datetime) -> bool:
        """Tells that `pod` was evicted, once; returns whether the shown feed changed."""
        if not pod.evicted:
            return False
        uid = f"{_NOTE_PREFIX}{pod.uid}"
        with self._lock:
            if uid in self._items or not self._available:
                return False
            before = self._shown()
            text = f"{pod.name} was evicted: its disruption budget allowed it"
            self._items[uid] = Narration(uid=uid, at=at, reason=EVICTED, text=text)
            self._trim()
            return self._shown() != before

    def unavailable(self) -> None:
        with self._lock:
            self._items = {}
            self._available = False

    def recent(self) -> list[dict[str, Any]] | None:
        """Oldest first, at most MAX_SHOWN; None when events cannot be read."""
        with self._lock:
            return [n.frame() for n in self._shown()] if self._available else None

    def _shown(self) -> list[Narration]:
        return sorted(self._items.values(), key=lambda n: (n.at, n.uid))[-MAX_SHOWN:]

    def _trim(self) -> None:
        if len(self._items) > 4 * MAX_SHOWN:
            self._items = {n.uid: n for n in self._shown()}
