"""The fake apiserver keeps the rules the chaos code relies on, the way the real one does
(tests/integration/test_chaos_api.py and test_stack.py check the real one): a fake that
let them slide would let a service that dropped them pass its tests."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import V1DeleteOptions, V1Preconditions
from kubernetes.client.exceptions import ApiException

from tests.chaos.fakes import NS, FakeApi, pod_dict, three_healthy

TIMEOUT = {"_request_timeout": (1, 1)}


def names(api: FakeApi, namespace: str = NS, selector: str = "app=chaos-demo") -> list[str]:
    body = json.loads(api.list_namespaced_pod(namespace, label_selector=selector, **TIMEOUT).data)
    return [p["metadata"]["name"] for p in body["items"]]


def delete(api: FakeApi, name: str, *, uid: str | None, version: str | None) -> None:
    body = V1DeleteOptions(preconditions=V1Preconditions(uid=uid, resource_version=version))
    api.delete_namespaced_pod(name, NS, body=body, **TIMEOUT)


def test_a_list_is_of_one_namespace_and_its_selector_only() -> None:
    api = FakeApi(
        pods=[
            *three_healthy(),
            pod_dict("elsewhere", namespace="default"),
            pod_dict("unlabelled", labels={"app": "other"}),
        ]
    )
    assert names(api) == ["chaos-demo-0", "chaos-demo-1", "chaos-demo-2"]
    assert names(api, namespace="default") == ["elsewhere"]
    assert names(api, selector="app=other") == ["unlabelled"]
    assert names(api, selector="") == [*names(api), "unlabelled"]


def test_a_delete_with_a_wrong_uid_or_version_is_a_conflict_and_changes_nothing() -> None:
    api = FakeApi(pods=three_healthy())
    with pytest.raises(ApiException) as wrong_uid:
        delete(api, "chaos-demo-0", uid="someone-else", version=None)
    with pytest.raises(ApiException) as wrong_version:
        delete(api, "chaos-demo-0", uid="uid-chaos-demo-0", version="1")
    assert wrong_uid.value.status == wrong_version.value.status == 409
    assert api.deleted == []
    assert api.terminating() == []


def test_a_delete_in_another_namespace_or_of_a_missing_pod_is_not_found() -> None:
    api = FakeApi(pods=three_healthy())
    with pytest.raises(ApiException) as missing:
        delete(api, "no-such-pod", uid=None, version=None)
    assert missing.value.status == 404
    with pytest.raises(ApiException) as elsewhere:
        api.delete_namespaced_pod("chaos-demo-0", "default", **TIMEOUT)
    assert elsewhere.value.status == 404


def test_a_matching_delete_is_graceful_and_bumps_the_version() -> None:
    api = FakeApi(pods=three_healthy())
    delete(api, "chaos-demo-1", uid="uid-chaos-demo-1", version="91")
    assert api.terminating() == ["chaos-demo-1"]
    # The same delete again, with the version it was listed at, is refused.
    with pytest.raises(ApiException) as again:
        delete(api, "chaos-demo-1", uid="uid-chaos-demo-1", version="91")
    assert again.value.status == 409
    assert api.deleted == [(NS, "chaos-demo-1", "uid-chaos-demo-1")]
