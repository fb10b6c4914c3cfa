"""The fake apiserver keeps the rules the chaos code relies on, the way the real one does
(tests/integration/test_chaos_api.py and test_stack.py check the real one): a fake that
let them slide would let a service that dropped them pass its tests."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import V1DeleteOptions, V1Eviction, V1ObjectMeta, V1Preconditions
from kubernetes.client.exceptions import ApiException

from tests.chaos.fakes import NS, FakeApi, pod_dict, three_healthy

TIMEOUT = {"_request_timeout": (1, 1)}


def names(api: FakeApi, namespace: str = NS, selector: str = "app=chaos-demo") -> list[str]:
    body = json.loads(api.list_namespaced_pod(namespace, label_selector=selector, **TIMEOUT).data)
    return [p["metadata"]["name"] for p in body["items"]]


def eviction(name: str, namespace: str = NS, **preconditions: str | None) -> V1Eviction:
    return V1Eviction(
        metadata=V1ObjectMeta(name=name, namespace=namespace),
        delete_options=V1DeleteOptions(
            preconditions=V1Preconditions(
                uid=preconditions.get("uid"), resource_version=preconditions.get("version")
            )
        ),
    )


def evict(api: FakeApi, name: str, *, uid: str | None, version: str | None) -> None:
    api.create_namespaced_pod_eviction(
        name, NS, body=eviction(name, uid=uid, version=version), **TIMEOUT
    )


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


def test_an_eviction_with_a_wrong_uid_or_version_is_a_conflict_and_changes_nothing() -> None:
    api = FakeApi(pods=three_healthy())
    with pytest.raises(ApiException) as wrong_uid:
        evict(api, "chaos-demo-0", uid="someone-else", version=None)
    with pytest.raises(ApiException) as wrong_version:
        evict(api, "chaos-demo-0", uid="uid-chaos-demo-0", version="1")
    assert wrong_uid.value.status == wrong_version.value.status == 409
    assert api.deleted == []
    assert api.terminating() == []


def test_an_eviction_in_another_namespace_or_of_a_missing_pod_is_not_found() -> None:
    api = FakeApi(pods=three_healthy())
    with pytest.raises(ApiException) as missing:
        evict(api, "no-such-pod", uid=None, version=None)
    assert missing.value.status == 404
    with pytest.raises(ApiException) as elsewhere:
        api.create_namespaced_pod_eviction(
            "chaos-demo-0", "default", body=eviction("chaos-demo-0", "default"), **TIMEOUT
        )
    assert elsewhere.value.status == 404


def test_a_matching_eviction_is_graceful_and_bumps_the_version() -> None:
    api = FakeApi(pods=three_healthy())
    evict(api, "chaos-demo-1", uid="uid-chaos-demo-1", version="91")
    assert api.terminating() == ["chaos-demo-1"]
    # The same eviction again, with the version it was listed at, is refused.
    with pytest.raises(ApiException) as again:
        evict(api, "chaos-demo-1", uid="uid-chaos-demo-1", version="91")
    assert again.value.status == 409
    assert api.deleted == [(NS, "chaos-demo-1", "uid-chaos-demo-1")]


def test_an_eviction_the_budget_does_not_allow_is_a_429_naming_the_budget() -> None:
    api = FakeApi(pods=three_healthy())
    evict(api, "chaos-demo-0", uid=None, version=None)
    with pytest.raises(ApiException) as refused:
        evict(api, "chaos-demo-1", uid=None, version=None)
    assert refused.value.status == 429
    causes = json.loads(refused.value.body)["details"]["causes"]
    assert [cause["reason"] for cause in causes] == ["DisruptionBudget"]
    assert api.terminating() == ["chaos-demo-0"]
    # A pod that is merely not Ready uses the budget up too.
    api = FakeApi(pods=[*three_healthy()[:2], pod_dict("chaos-demo-2", ready=False)])
    with pytest.raises(ApiException):
        evict(api, "chaos-demo-0", uid=None, version=None)
    assert api.deleted == []
