"""What the chaos code needs to know about a pod, as plain typed values.

The Kubernetes seam (`chaos/kube.py`) turns API objects into `Pod`s; everything else
(victim choice, the watcher, recovery timing) works on these, so it can be tested with
pods built in a line instead of a mocked API client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TERMINATING = "Terminating"
# The condition the apiserver puts on a pod it evicts (before it deletes it), and the
# reason that says the Eviction API did it: how anyone can tell an eviction afterwards.
DISRUPTION_TARGET = "DisruptionTarget"
EVICTED_BY_API = "EvictionByEvictionAPI"


@dataclass(frozen=True)
class Pod:
    uid: str
    name: str
    namespace: str
    phase: str
    ready: bool
    # True once the apiserver has set metadata.deletionTimestamp: the pod is on its way out
    # even if its phase still says Running.
    deleting: bool
    # UID of the ReplicaSet that controls this pod, or None (bare pod, other controller).
    replicaset_uid: str | None
    node: str | None
    created_at: datetime | None
    # lastTransitionTime of the PodScheduled / Ready conditions while they are True. The API
    # gives them with one-second resolution, so the watcher prefers its own clock when it
    # saw the change happen (see chaos/recovery.py).
    scheduled_at: datetime | None = None
    ready_at: datetime | None = None
    resource_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    # Carries DisruptionTarget / EvictionByEvictionAPI: evicted, not plainly deleted.
    evicted: bool = False

    @property
    def status(self) -> str:
        """The word a viewer sees: the phase, or Terminating once deletion has begun."""
        return TERMINATING if self.deleting else self.phase

    @property
    def serving(self) -> bool:
        """Running, Ready and not being deleted: a pod that currently serves traffic."""
        return self.phase == "Running" and self.ready and not self.deleting


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp from the API, or None for a missing or unreadable one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            return condition
    return None


def _true_since(status: Mapping[str, Any], kind: str) -> tuple[bool, datetime | None]:
    condition = _condition(status, kind)
    if condition is None or condition.get("status") != "True":
        return False, None
    return True, parse_time(condition.get("lastTransitionTime"))


def _controlling_replicaset(metadata: Mapping[str, Any]) -> str | None:
    for owner in metadata.get("ownerReferences") or ():
        if (
            isinstance(owner, Mapping)
            and owner.get("kind") == "ReplicaSet"
            and owner.get("controller") is True
            and owner.get("uid")
        ):
            return str(owner["uid"])
    return None


def pod_from_dict(raw: Mapping[str, Any]) -> Pod:
    """A Pod from the API's JSON (a list item or a watch event's object).

    Tolerates missing sections: a pod the apiserver sends half-filled (just created, not
    yet scheduled) must not crash the watcher."""
    metadata: Mapping[str, Any] = raw.get("metadata") or {}
    spec: Mapping[str, Any] = raw.get("spec") or {}
    status: Mapping[str, Any] = raw.get("status") or {}
    ready, ready_at = _true_since(status, "Ready")
    scheduled, scheduled_at = _true_since(status, "PodScheduled")
    labels = metadata.get("labels") or {}
    disruption = _condition(status, DISRUPTION_TARGET)
    return Pod(
        uid=str(metadata.get("uid") or ""),
        name=str(metadata.get("name") or ""),
        namespace=str(metadata.get("namespace") or ""),
        phase=str(status.get("phase") or "Pending"),
        ready=ready,
        deleting=metadata.get("deletionTimestamp") is not None,
        replicaset_uid=_controlling_replicaset(metadata),
        node=spec.get("nodeName") or None,
        created_at=parse_time(metadata.get("creationTimestamp")),
        scheduled_at=scheduled_at if scheduled else None,
        ready_at=ready_at if ready else None,
        resource_version=str(metadata.get("resourceVersion") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
        evicted=disruption is not None
        and disruption.get("status") == "True"
        and disruption.get("reason") == EVICTED_BY_API,
    )


def parse_selector(selector: str) -> dict[str, str]:
    """`app=chaos-demo,tier=web` -> {"app": "chaos-demo", "tier": "web"}.

    Settings validate the syntax (equality selectors only) at start."""
    pairs = (part.split("=", 1) for part in selector.split(",") if part.strip())
    return {key.strip(): value.strip() for key, value in pairs}


def matches(pod: Pod, labels: Mapping[str, str]) -> bool:
    return all(pod.labels.get(key) == value for key, value in labels.items())
