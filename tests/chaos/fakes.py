"""Stand-ins for the Kubernetes API at the client boundary, and pod builders.

`FakeApi` answers `list_namespaced_pod` / `delete_namespaced_pod` the way the generated
client does with `_preload_content=False` (a response object with `.data`), or raises
what the real client raises, so tests exercise chaos/kube.py's translation too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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


@dataclass
class FakeApi:
    pods: list[dict[str, Any]] = field(default_factory=list)
    list_error: BaseException | None = None
    delete_error: BaseException | None = None
    deleted: list[tuple[str, str, str]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Response:
        self.calls.append({"call": "list", "namespace": namespace, **kwargs})
        assert kwargs.get("_request_timeout"), "every call must carry a timeout"
        if self.list_error is not None:
            raise self.list_error
        return Response({"metadata": {"resourceVersion": "100"}, "items": self.pods})

    def delete_namespaced_pod(self, name: str, namespace: str, **kwargs: Any) -> Response:
        self.calls.append({"call": "delete", "name": name, **kwargs})
        assert kwargs.get("_request_timeout"), "every call must carry a timeout"
        if self.delete_error is not None:
            raise self.delete_error
        uid = kwargs["body"].preconditions.uid
        self.deleted.append((namespace, name, uid))
        return Response({"kind": "Pod"})


def three_healthy() -> list[dict[str, Any]]:
    return [pod_dict(f"chaos-demo-{i}", node=f"kwok-node-{i}") for i in range(3)]


def pod(name: str = "p", **kwargs: Any) -> Pod:
    from chaos.pods import pod_from_dict

    return pod_from_dict(pod_dict(name, **kwargs))
