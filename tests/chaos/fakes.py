"""Stand-ins for the Kubernetes API at the client boundary, and pod builders.

`FakeApi` answers `list_namespaced_pod` / `delete_namespaced_pod` the way the generated
client does with `_preload_content=False` (a response object with `.data`), or raises
what the real client raises, so tests exercise chaos/kube.py's translation too. It keeps
the apiserver's rules that chaos depends on (namespace, label selector, delete
preconditions), so a service that dropped one of them fails its tests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from chaos.pods import Pod

NS = "chaos-demo"
LABELS = {"app": "chaos-demo"}
RS_UID = "rs-1"
T0 = datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC)


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_dict(
    name: str,
    *,
    uid: str | None = None,
    phase: str = "Running",
    ready: bool = True,
    deleting: bool = False,
    owner: str | None = RS_UID,
    node: str | None = "kwok-node-0",
    created: datetime = T0,
    ready_since: datetime | None = None,
    labels: dict[str, str] | None = None,
    namespace: str = NS,
    resource_version: str = "100",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{name}",
        "labels": LABELS if labels is None else labels,
        "creationTimestamp": stamp(created),
        "resourceVersion": resource_version,
    }
    if owner:
        metadata["ownerReferences"] = [
            {"kind": "ReplicaSet", "name": "chaos-demo-abc", "uid": owner, "controller": True}
        ]
    if deleting:
        metadata["deletionTimestamp"] = stamp(created + timedelta(seconds=30))
    conditions = []
    if node:
        conditions.append(
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(created)}
        )
    conditions.append(
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "lastTransitionTime": stamp(ready_since or created),
        }
    )
    return {
        "metadata": metadata,
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "conditions": conditions},
    }


class Response:
    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body).encode()
        self.released = False

    def release_conn(self) -> None:
        self.released = True


def _selector_labels(selector: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in selector.split(",") if part.strip())
    return {key.strip(): value.strip() for key, value in pairs}


@dataclass
class FakeApi:
    """A namespace of pods that answers as the apiserver does, for what chaos relies on:

    - a list returns only the asked namespace's pods that match the label selector;
    - a delete of a missing name is 404; one whose preconditions (UID, resourceVersion)
      do not match the stored pod is 409, and nothing changes;
    - a successful delete is graceful, as for any pod with a grace period: the pod stays,
      with a deletionTimestamp and a new resourceVersion, so the next list shows it
      Terminating. Deleting it again with the old resourceVersion is a 409.

    `before_delete` runs between a caller's list and its delete (to change the world
    under it); `list_delay_s` widens the window between the two."""

    pods: list[dict[str, Any]] = field(default_factory=list)
    list_error: BaseException | None = None
    delete_error: BaseException | None = None
    deleted: list[tuple[str, str, str]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    before_delete: Callable[[FakeApi], None] | None = None
    list_delay_s: float = 0.0
    resource_version: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _bump(self, raw: dict[str, Any]) -> None:
        self.resource_version += 1
        raw["metadata"]["resourceVersion"] = str(self.resource_version)

    def mark_deleting(self, name: str) -> None:
        """Someone else deleted this pod: it is Terminating now."""
        with self.lock:
            raw = self.find(name)
            assert raw is not None
            raw["metadata"]["deletionTimestamp"] = stamp(T0 + timedelta(hours=1))
            self._bump(raw)

    def find(self, name: str, namespace: str = NS) -> dict[str, Any] | None:
        for raw in self.pods:
            meta = raw["metadata"]
            if meta["name"] == name and meta["namespace"] == namespace:
                return raw
        return None

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Response:
        self.calls.append({"call": "list", "namespace": namespace, **kwargs})
        assert kwargs.get("_request_timeout"), "every call must carry a timeout"
        if self.list_error is not None:
            raise self.list_error
        wanted = _selector_labels(kwargs.get("label_selector") or "")
        with self.lock:
            items = [
                json.loads(json.dumps(raw))
                for raw in self.pods
                if raw["metadata"]["namespace"] == namespace
                and all(raw["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
            ]
            version = str(self.resource_version)
        time.sleep(self.list_delay_s)
        return Response({"metadata": {"resourceVersion": version}, "items": items})

    def delete_namespaced_pod(self, name: str, namespace: str, **kwargs: Any) -> Response:
        self.calls.append({"call": "delete", "name": name, "namespace": namespace, **kwargs})
        assert kwargs.get("_request_timeout"), "every call must carry a timeout"
        if self.before_delete is not None:
            self.before_delete(self)
        if self.delete_error is not None:
            raise self.delete_error
        preconditions = kwargs["body"].preconditions if kwargs.get("body") else None
        with self.lock:
            raw = self.find(name, namespace)
            if raw is None:
                raise ApiException(status=404, reason="Not Found")
            meta = raw["metadata"]
            uid = getattr(preconditions, "uid", None)
            version = getattr(preconditions, "resource_version", None)
            if (uid is not None and uid != meta["uid"]) or (
                version is not None and version != meta["resourceVersion"]
            ):
                raise ApiException(status=409, reason="Conflict")
            meta.setdefault("deletionTimestamp", stamp(T0 + timedelta(hours=1)))
            self._bump(raw)
            self.deleted.append((namespace, name, meta["uid"]))
        return Response({"kind": "Pod"})

    def terminating(self) -> list[str]:
        with self.lock:
            return [
                raw["metadata"]["name"]
                for raw in self.pods
                if raw["metadata"].get("deletionTimestamp")
            ]


def three_healthy() -> list[dict[str, Any]]:
    return [
        pod_dict(f"chaos-demo-{i}", node=f"kwok-node-{i}", resource_version=str(90 + i))
        for i in range(3)
    ]


def pod(name: str = "p", **kwargs: Any) -> Pod:
    from chaos.pods import pod_from_dict

    return pod_from_dict(pod_dict(name, **kwargs))
