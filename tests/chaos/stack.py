"""Helpers for the chaos tests that run on the real local stack (integration, browser, bench).

They talk to the cluster as admin only to set the scene and to check the outcome; the app
under test always runs as the chaos ServiceAccount. All of it happens in the test
namespace (`chaos-test`), never in the `chaos-demo` a running `make run` shows.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
import requests

from stackkit.stack import SELECTOR, STATE_DIR, TEST_NAMESPACE, Devstack, events

NAMESPACE = TEST_NAMESPACE
REPLICAS = 3
# devstack/up's kustomization: k8s/chaos-demo/ in the test namespace.
TEST_NAMESPACE_MANIFESTS = STATE_DIR / TEST_NAMESPACE
# App settings under which every press is refused by the app's own look (no pod matches,
# 409 no_eligible_pod) after the budgets counted it: budgets get spent, no pod dies.
GUARD_ALWAYS_REFUSES = {"CHAOS_SELECTOR": "app=no-such-pod"}


def flush_test_redis(devstack: Devstack) -> None:
    """Rate-limit counters, leader locks and remembered frames of the test database only."""
    redis.Redis.from_url(devstack.redis_url, socket_timeout=3).flushdb()


def pods(devstack: Devstack) -> list[dict[str, Any]]:
    out = devstack.kubectl("-n", NAMESPACE, "get", "pods", "-l", SELECTOR, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def is_serving(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return (
        ready
        and pod.get("status", {}).get("phase") == "Running"
        and not pod["metadata"].get("deletionTimestamp")
    )


def budget(devstack: Devstack) -> dict[str, Any]:
    """The test namespace's PodDisruptionBudget (k8s/chaos-demo/pdb.yaml), as the admin."""
    out = devstack.kubectl("-n", NAMESPACE, "get", "pdb", "chaos-demo", "-o", "json").stdout
    pdb: dict[str, Any] = json.loads(out)
    return pdb


def budget_settled(pdb: dict[str, Any], *, healthy: int, allowed: int) -> bool:
    """The disruption controller has caught up with the budget's spec and the pods."""
    status = pdb.get("status") or {}
    return (
        status.get("observedGeneration") == pdb["metadata"]["generation"]
        and status.get("currentHealthy") == healthy
        and status.get("disruptionsAllowed") == allowed
    )


def wait_budget(devstack: Devstack, *, healthy: int, allowed: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not budget_settled(pdb := budget(devstack), healthy=healthy, allowed=allowed):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{NAMESPACE} budget not at {healthy}/{allowed}: {pdb.get('status')}"
            )
        time.sleep(0.2)


def set_max_unavailable(devstack: Devstack, value: int) -> None:
    """Changes the test namespace's budget (restore_budget puts the manifest's back)."""
    patch = json.dumps({"spec": {"maxUnavailable": value}})
    devstack.kubectl("-n", NAMESPACE, "patch", "pdb", "chaos-demo", "--type=merge", "-p", patch)


def restore_budget(devstack: Devstack) -> None:
    devstack.kubectl("apply", "-k", str(TEST_NAMESPACE_MANIFESTS))


def wait_healthy(devstack: Devstack, replicas: int = REPLICAS, timeout: float = 90) -> None:
    """Until exactly `replicas` pods exist, all Running and Ready, none terminating, and
    the disruption budget has seen it (so it allows the next eviction)."""
    deadline = time.monotonic() + timeout
    while True:
        current = pods(devstack)
        if (
            len(current) == replicas
            and all(is_serving(p) for p in current)
            and budget_settled(budget(devstack), healthy=replicas, allowed=1)
        ):
            return
        if time.monotonic() > deadline:
            states = [(p["metadata"]["name"], p.get("status", {}).get("phase")) for p in current]
            raise TimeoutError(f"{NAMESPACE} not {replicas}/{replicas} healthy: {states}")
        time.sleep(0.3)


def scale(devstack: Devstack, replicas: int) -> None:
    devstack.kubectl("-n", NAMESPACE, "scale", "deployment/chaos-demo", f"--replicas={replicas}")


def chaos_can_evict(devstack: Devstack) -> bool:
    result = devstack.kubectl(
        "auth",
        "can-i",
        "create",
        "pods",
        "--subresource=eviction",
        "-n",
        NAMESPACE,
        admin=False,
        check=False,
    )
    return result.stdout.strip() == "yes"


def wait_rbac(devstack: Devstack, *, allowed: bool, timeout: float = 30) -> None:
    """RBAC changes reach the authorizer through an informer: wait until they apply."""
    deadline = time.monotonic() + timeout
    while chaos_can_evict(devstack) != allowed:
        if time.monotonic() > deadline:
            raise TimeoutError(f"chaos account still {'cannot' if allowed else 'can'} evict")
        time.sleep(0.3)


def delete_rolebinding(devstack: Devstack) -> None:
    """Takes the test namespace's chaos account's rights away (restore_rbac gives them back)."""
    devstack.kubectl("-n", NAMESPACE, "delete", "rolebinding", "chaos-monkey")
    wait_rbac(devstack, allowed=False)


def restore_rbac(devstack: Devstack) -> None:
    devstack.kubectl("apply", "-k", str(TEST_NAMESPACE_MANIFESTS))
    wait_rbac(devstack, allowed=True)


def press(session: requests.Session, base_url: str, **headers: str) -> requests.Response:
    return session.post(f"{base_url}/api/infra/chaos", headers=headers, timeout=15)


def event(devstack: Devstack, event_id: int) -> dict[str, Any]:
    return next(e for e in events(devstack) if e["id"] == event_id)
