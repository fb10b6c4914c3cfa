"""The local stack is real: a control plane that heals, RBAC that refuses, metrics that agree.

These tests talk to the devstack directly (kubectl, the Prometheus API, the scripts), not
through the app, so a failure here points at the stack rather than at our code.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client, config, watch

from stackkit.stack import ROOT, SELECTOR, STATE_DIR, TEST_NAMESPACE, Devstack
from tests.integration.scrape import promql

pytestmark = pytest.mark.integration

# The test namespace, a copy of chaos-demo: what holds for one holds for the other, and
# a running `make run` keeps its chaos-demo untouched.
NAMESPACE = TEST_NAMESPACE


def admin_api(devstack: Devstack) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=devstack.admin_kubeconfig))


def wait_ready(devstack: Devstack, replicas: int = 3, timeout: int = 120) -> None:
    devstack.kubectl(
        "-n",
        NAMESPACE,
        "rollout",
        "status",
        "deployment/chaos-demo",
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )
    ready = devstack.kubectl(
        "-n", NAMESPACE, "get", "deployment", "chaos-demo", "-o", "jsonpath={.status.readyReplicas}"
    ).stdout
    assert ready == str(replicas)


def test_evicting_a_pod_as_the_chaos_account_brings_up_a_replacement(devstack: Devstack) -> None:
    wait_ready(devstack)
    api = admin_api(devstack)
    pods = api.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR)
    before = {p.metadata.uid for p in pods.items}
    victim = pods.items[0].metadata.name

    # The eviction goes through the chaos ServiceAccount's kubeconfig, as the app's does.
    chaos = client.CoreV1Api(config.new_client_from_config(config_file=devstack.chaos_kubeconfig))
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=victim, namespace=NAMESPACE))
    chaos.create_namespaced_pod_eviction(victim, NAMESPACE, body=eviction)

    phases: dict[str, list[str]] = {}
    stream = watch.Watch().stream(
        api.list_namespaced_pod,
        NAMESPACE,
        label_selector=SELECTOR,
        resource_version=pods.metadata.resource_version,
        timeout_seconds=60,
    )
    for event in stream:
        pod = event["object"]
        if pod.metadata.uid in before:
            continue
        seen = phases.setdefault(pod.metadata.uid, [])
        if not seen or seen[-1] != pod.status.phase:
            seen.append(pod.status.phase)
        if "Running" in seen:
            break
    assert len(phases) == 1, f"expected exactly one replacement, saw {phases}"
    (history,) = phases.values()
    # kwok's stages hold a new pod Pending for a moment before it runs, like a kubelet.
    assert history[0] == "Pending", history
    assert "Running" in history, history
    wait_ready(devstack)


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("list", "pods", NAMESPACE, True),
        ("watch", "pods", NAMESPACE, True),
        ("create", "pods/eviction", NAMESPACE, True),
        # Evict, never delete: a delete would skip the disruption budget.
        ("delete", "pods", NAMESPACE, False),
        ("create", "pods/eviction", "default", False),
        ("patch", "poddisruptionbudgets.policy", NAMESPACE, False),
        ("delete", "poddisruptionbudgets.policy", NAMESPACE, False),
        ("list", "events", NAMESPACE, True),
        ("delete", "pods", "default", False),
        ("list", "pods", "default", False),
        ("get", "secrets", NAMESPACE, False),
        ("create", "pods", NAMESPACE, False),
        ("update", "pods", NAMESPACE, False),
        ("delete", "deployments.apps", NAMESPACE, False),
        ("patch", "deployments.apps", NAMESPACE, False),
        ("delete", "events", NAMESPACE, False),
        ("list", "nodes", "", False),
        ("list", "namespaces", "", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", False),
        ("get", "pods", "kube-system", False),
    ],
)
def test_chaos_account_permissions(
    devstack: Devstack, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    # `auth can-i` asks the apiserver (a SelfSubjectAccessReview) as the chaos account;
    # a subresource is its own flag (`pods/eviction` would read as a pod named eviction).
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource]
    args += [f"--subresource={subresource}"] if subresource else []
    args += ["-n", namespace] if namespace else []
    answer = devstack.kubectl(*args, admin=False, check=False).stdout.strip()
    assert answer == ("yes" if allowed else "no")


def test_the_app_kubeconfig_is_the_service_account_not_admin(devstack: Devstack) -> None:
    whoami = devstack.kubectl("auth", "whoami", "-o", "json", admin=False).stdout
    assert json.loads(whoami)["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{NAMESPACE}:chaos-monkey"
    )
    kubeconfig = Path(devstack.chaos_kubeconfig).read_text()
    assert "tokenFile:" in kubeconfig
    assert "client-key" not in kubeconfig


def test_prometheus_counts_the_same_pods_as_the_apiserver(devstack: Devstack) -> None:
    wait_ready(devstack)
    listed = len(admin_api(devstack).list_namespaced_pod(NAMESPACE).items)
    deadline = time.monotonic() + 30
    while True:
        result = promql(devstack, f'count(kube_pod_info{{namespace="{NAMESPACE}"}})')
        counted = int(float(result[0]["value"][1])) if result else 0  # type: ignore[index]
        if counted == listed or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert counted == listed == 3


def test_node_metrics_are_joined_to_kubernetes_node_names(devstack: Devstack) -> None:
    nodes = {n.metadata.name for n in admin_api(devstack).list_node().items}
    assert len(nodes) == 3
    ready = promql(devstack, 'kube_node_status_condition{condition="Ready",status="true"} == 1')
    assert {r["metric"]["node"] for r in ready} == nodes  # type: ignore[index]
    named = promql(
        devstack, "node_memory_MemTotal_bytes * on(instance) group_left(nodename) node_uname_info"
    )
    assert {r["metric"]["nodename"] for r in named} == nodes  # type: ignore[index]
    assert all(float(r["value"][1]) > 0 for r in named)  # type: ignore[index]


def pids() -> dict[str, int]:
    return {f.stem: int(f.read_text()) for f in (STATE_DIR / "pids").glob("*.pid")}


def devstack_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "devstack" / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_up_is_idempotent(devstack: Devstack) -> None:
    before = {name: pid for name, pid in pids().items() if name != "app"}
    # Every component but the image, whose build is devstack/image's business.
    result = devstack_script(
        "up", "redis", "cluster", "token", "kube-state-metrics", "node-exporter", "prometheus"
    )
    assert result.returncode == 0, result.stderr
    # Nothing restarted: every process it had started is the same process.
    assert {name: pid for name, pid in pids().items() if name in before} == before
    wait_ready(devstack)


# `down` and `up` from scratch, supervision and the pause of the apiserver run on stacks of
# their own: tests/integration/test_devstack.py and test_selfheal.py.


def test_unknown_component_is_refused_clearly() -> None:
    result = devstack_script("up", "kafka")
    assert result.returncode != 0
    assert "unknown component 'kafka'" in result.stderr
