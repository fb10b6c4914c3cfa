from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from chaos import kube
from chaos.pods import TERMINATING, pod_from_dict
from tests.chaos.fakes import RS_UID, T0, FakeApi, budget_refusal, pod_dict, three_healthy


def test_a_pod_is_read_from_the_api_json() -> None:
    p = pod_from_dict(pod_dict("a", node="kwok-node-2"))
    assert (p.name, p.uid, p.phase, p.ready, p.deleting) == ("a", "uid-a", "Running", True, False)
    assert p.replicaset_uid == RS_UID
    assert p.node == "kwok-node-2"
    assert p.created_at == T0
    assert p.ready_at == T0
    assert p.serving


def test_a_deleting_pod_is_terminating_and_not_serving() -> None:
    p = pod_from_dict(pod_dict("a", deleting=True))
    assert p.status == TERMINATING
    assert not p.serving


def test_a_half_filled_pod_does_not_crash() -> None:
    p = pod_from_dict({"metadata": {"name": "x", "ownerReferences": [{"kind": "ReplicaSet"}]}})
    assert (p.phase, p.ready, p.node, p.created_at, p.replicaset_uid) == (
        "Pending",
        False,
        None,
        None,
        None,
    )


def test_only_a_controlling_replicaset_counts_as_owner() -> None:
    raw = pod_dict("a")
    raw["metadata"]["ownerReferences"][0]["controller"] = False
    assert pod_from_dict(raw).replicaset_uid is None


def test_list_pods_returns_pods_and_the_resource_version() -> None:
    api = FakeApi(pods=three_healthy())
    snapshot = kube.list_pods(api, namespace="chaos-demo", selector="app=chaos-demo")  # type: ignore[arg-type]
    assert [p.name for p in snapshot.pods] == ["chaos-demo-0", "chaos-demo-1", "chaos-demo-2"]
    assert snapshot.resource_version == "100"
    assert api.calls[0]["label_selector"] == "app=chaos-demo"


def test_evict_sends_uid_and_resource_version_preconditions() -> None:
    api = FakeApi(pods=three_healthy())
    kube.evict_pod(
        api,  # type: ignore[arg-type]
        namespace="chaos-demo",
        name="chaos-demo-1",
        uid="uid-chaos-demo-1",
        resource_version="91",
    )
    assert api.calls[-1]["call"] == "evict"
    preconditions = api.calls[-1]["body"].delete_options.preconditions
    assert (preconditions.uid, preconditions.resource_version) == ("uid-chaos-demo-1", "91")
    assert api.deleted == [("chaos-demo", "chaos-demo-1", "uid-chaos-demo-1")]
    assert api.terminating() == ["chaos-demo-1"]


@pytest.mark.parametrize(
    ("uid", "resource_version"),
    [("uid-someone-else", "91"), ("uid-chaos-demo-1", "90"), ("uid-chaos-demo-1", "92")],
)
def test_a_pod_that_is_not_the_one_listed_is_not_evicted(uid: str, resource_version: str) -> None:
    api = FakeApi(pods=three_healthy())
    with pytest.raises(kube.KubeError) as refused:
        kube.evict_pod(
            api,  # type: ignore[arg-type]
            namespace="chaos-demo",
            name="chaos-demo-1",
            uid=uid,
            resource_version=resource_version,
        )
    assert refused.value.reason == "conflict"
    assert api.deleted == []
    assert api.terminating() == []


def test_a_second_eviction_with_the_listed_version_is_a_conflict() -> None:
    # What a racing press would send: the pod is already Terminating since its list.
    api = FakeApi(pods=three_healthy())
    args: dict[str, Any] = {
        "namespace": "chaos-demo",
        "name": "chaos-demo-0",
        "uid": "uid-chaos-demo-0",
        "resource_version": "90",
    }
    kube.evict_pod(api, **args)  # type: ignore[arg-type]
    with pytest.raises(kube.KubeError, match="conflict"):
        kube.evict_pod(api, **args)  # type: ignore[arg-type]
    assert len(api.deleted) == 1


def test_list_asks_for_the_namespace_and_selector_only() -> None:
    api = FakeApi(
        pods=[
            *three_healthy(),
            pod_dict("elsewhere", namespace="kube-system"),
            pod_dict("other-app", labels={"app": "other"}),
        ]
    )
    snapshot = kube.list_pods(api, namespace="chaos-demo", selector="app=chaos-demo")  # type: ignore[arg-type]
    assert sorted(p.name for p in snapshot.pods) == [f"chaos-demo-{i}" for i in range(3)]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ApiException(status=403, reason="Forbidden"), "forbidden"),
        (ApiException(status=401, reason="Unauthorized"), "forbidden"),
        (ApiException(status=404, reason="Not Found"), "not_found"),
        (ApiException(status=409, reason="Conflict"), "conflict"),
        (ApiException(status=500, reason="Internal"), "server_error"),
        (ApiException(status=503, reason="Unavailable"), "server_error"),
        # Flow control's 429 names no budget: not the budget's refusal.
        (ApiException(status=429, reason="Too Many", body='{"code": 429}'), "throttled"),
        (ApiException(status=429, reason="Too Many", body="not json"), "throttled"),
        (budget_refusal(), "disruption_budget"),
        (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), "timeout"),
        (
            urllib3.exceptions.MaxRetryError(
                None, "/", urllib3.exceptions.NewConnectionError(None, "refused")
            ),
            "unreachable",
        ),
        (
            urllib3.exceptions.MaxRetryError(
                None, "/", urllib3.exceptions.ConnectTimeoutError("slow")
            ),
            "timeout",
        ),
        (urllib3.exceptions.ProtocolError("reset"), "unreachable"),
        (ConnectionRefusedError(), "unreachable"),
        (ConfigException("no config"), "bad_config"),
    ],
)
def test_client_errors_become_kube_errors(error: BaseException, reason: str) -> None:
    api = FakeApi(list_error=error, delete_error=error)
    with pytest.raises(kube.KubeError) as listing:
        kube.list_pods(api, namespace="n", selector="a=b")  # type: ignore[arg-type]
    with pytest.raises(kube.KubeError) as deleting:
        kube.evict_pod(api, namespace="n", name="a", uid="u", resource_version="1")  # type: ignore[arg-type]
    assert listing.value.reason == deleting.value.reason == reason


def test_a_non_json_answer_is_a_bad_response() -> None:
    class Garbage(FakeApi):
        def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
            response = super().list_namespaced_pod(namespace, **kwargs)
            response.data = b"<html>proxy error</html>"
            return response

    with pytest.raises(kube.KubeError, match="bad_response"):
        kube.list_pods(Garbage(), namespace="n", selector="a=b")  # type: ignore[arg-type]


class StreamResponse:
    """What the client's watch reads: a urllib3 response streaming JSON lines."""

    status = 200

    def __init__(self, lines: list[dict[str, Any]], error: BaseException | None = None) -> None:
        self.lines = lines
        self.error = error
        self.closed = False

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        # Chunks that cut lines in odd places, as a proxy may.
        body = b"".join((json.dumps(line) + "\n").encode() for line in self.lines)
        for start in range(0, len(body), 7):
            yield body[start : start + 7]
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


class WatchApi:
    def __init__(self, response: StreamResponse) -> None:
        self.response = response
        self.kwargs: dict[str, Any] = {}

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> StreamResponse:
        self.kwargs = kwargs
        return self.response


def _watch(response: StreamResponse) -> tuple[list[kube.PodEvent], WatchApi]:
    api = WatchApi(response)
    events = list(
        kube.watch_pods(
            api,  # type: ignore[arg-type]
            namespace="chaos-demo",
            selector="app=chaos-demo",
            resource_version="42",
            timeout_s=5,
        )
    )
    return events, api


def test_watch_yields_typed_events_and_bounds_the_call() -> None:
    response = StreamResponse(
        [
            {"type": "ADDED", "object": pod_dict("a", resource_version="43")},
            {"type": "MODIFIED", "object": pod_dict("a", deleting=True, resource_version="44")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "45"}}},
            {"type": "DELETED", "object": pod_dict("a", deleting=True, resource_version="46")},
        ]
    )
    events, api = _watch(response)
    assert [(e.type, e.resource_version) for e in events] == [
        ("ADDED", "43"),
        ("MODIFIED", "44"),
        ("BOOKMARK", "45"),
        ("DELETED", "46"),
    ]
    assert events[1].pod is not None
    assert events[1].pod.status == TERMINATING
    assert events[2].pod is None
    assert api.kwargs["watch"] is True
    assert api.kwargs["resource_version"] == "42"
    assert api.kwargs["timeout_seconds"] == 5
    _connect, read = api.kwargs["_request_timeout"]
    assert read > 5  # silence for the whole server timeout is not a stall
    assert response.closed


def test_a_too_old_resource_version_is_gone() -> None:
    response = StreamResponse(
        [
            {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "code": 410,
                    "reason": "Expired",
                    "message": "too old resource version: 42 (1000)",
                },
            }
        ]
    )
    with pytest.raises(kube.KubeError) as raised:
        _watch(response)
    assert raised.value.reason == "gone"


def test_a_stalled_watch_is_a_timeout() -> None:
    stalled = StreamResponse(
        [{"type": "ADDED", "object": pod_dict("a")}],
        error=urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),
    )
    api = WatchApi(stalled)
    stream = kube.watch_pods(
        api,  # type: ignore[arg-type]
        namespace="chaos-demo",
        selector="app=chaos-demo",
        resource_version="42",
        timeout_s=5,
    )
    assert next(stream).type == "ADDED"
    with pytest.raises(kube.KubeError) as raised:
        next(stream)
    assert raised.value.reason == "timeout"


def test_a_rotated_token_file_is_picked_up_without_a_new_client(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"tokenFile": str(token_file)}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(kube, "_cached", None)
    api = kube.core_api()
    configuration = api.api_client.configuration
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer first-token"
    token_file.write_text("second-token")
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer first-token"
    monkeypatch.setattr(kube, "TOKEN_REREAD_S", 0.0)
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer second-token"
    assert kube.core_api() is api


def test_no_configuration_is_a_bad_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setattr(kube, "_cached", None)
    with pytest.raises(kube.KubeError, match="bad_config"):
        kube.core_api()
