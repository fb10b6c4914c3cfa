"""Stand-ins for the Kubernetes API at the client boundary, and pod builders.

`FakeApi` answers `list_namespaced_pod` / `create_namespaced_pod_eviction` the way the
generated client does with `_preload_content=False` (a response object with `.data`), or
raises what the real client raises, so tests exercise chaos/kube.py's translation too. It
keeps the apiserver's rules that chaos depends on (namespace, label selector, eviction
preconditions, the disruption budget), so a service that dropped one of them fails its
tests. It has no delete: the chaos identity may not delete pods.
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

from chaos.pods import Pod, pod_from_dict

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
    - an eviction of a missing name is 404; one whose preconditions (UID,
      resourceVersion) do not match the stored pod is 409, and nothing changes;
    - an eviction the budget does not allow (`max_unavailable` pods of the namespace not
      serving already) is 429 with the DisruptionBudget cause, and nothing changes;
    - a successful eviction is graceful, as for any pod with a grace period: the pod
      stays, with the DisruptionTarget condition, a deletionTimestamp and a new
      resourceVersion, so the next list shows it Terminating.

    `before_delete` runs between a caller's list and its eviction (to change the world
    under it); `list_delay_s` widens the window between the two."""

    pods: list[dict[str, Any]] = field(default_factory=list)
    list_error: BaseException | None = None
    delete_error: BaseException | None = None
    deleted: list[tuple[str, str, str]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    before_delete: Callable[[FakeApi], None] | None = None
    list_delay_s: float = 0.0
    max_unavailable: int = 1
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

    def create_namespaced_pod_eviction(self, name: str, namespace: str, **kwargs: Any) -> Response:
        self.calls.append({"call": "evict", "name": name, "namespace": namespace, **kwargs})
        assert kwargs.get("_request_timeout"), "every call must carry a timeout"
        if self.before_delete is not None:
            self.before_delete(self)
        if self.delete_error is not None:
            raise self.delete_error
        body = kwargs["body"]
        assert (body.metadata.name, body.metadata.namespace) == (name, namespace)
        options = body.delete_options
        preconditions = options.preconditions if options else None
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
            if self._unavailable(namespace) >= self.max_unavailable:
                raise budget_refusal()
            raw["status"]["conditions"].append(
                {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
            )
            meta.setdefault("deletionTimestamp", stamp(T0 + timedelta(hours=1)))
            self._bump(raw)
            self.deleted.append((namespace, name, meta["uid"]))
        return Response({"kind": "Status", "status": "Success"})

    def _unavailable(self, namespace: str) -> int:
        ours = [
            pod_from_dict(raw)
            for raw in self.pods
            if raw["metadata"]["namespace"] == namespace
            and all(raw["metadata"].get("labels", {}).get(k) == v for k, v in LABELS.items())
        ]
        return sum(not p.serving for p in ours)

    def terminating(self) -> list[str]:
        with self.lock:
            return [
                raw["metadata"]["name"]
                for raw in self.pods
                if raw["metadata"].get("deletionTimestamp")
            ]


def budget_refusal() -> ApiException:
    """The apiserver's 429 for an eviction its PodDisruptionBudget does not allow."""
    status = {
        "kind": "Status",
        "status": "Failure",
        "message": "Cannot evict pod as it would violate the pod's disruption budget.",
        "reason": "TooManyRequests",
        "details": {
            "causes": [
                {
                    "reason": "DisruptionBudget",
                    "message": "The disruption budget chaos-demo needs 2 healthy pods and has 2",
                }
            ]
        },
        "code": 429,
    }
    return ApiException(status=429, reason="Too Many Requests", body=json.dumps(status))


def three_healthy() -> list[dict[str, Any]]:
    return [
        pod_dict(f"chaos-demo-{i}", node=f"kwok-node-{i}", resource_version=str(90 + i))
        for i in range(3)
    ]


def pod(name: str = "p", **kwargs: Any) -> Pod:
    return pod_from_dict(pod_dict(name, **kwargs))
