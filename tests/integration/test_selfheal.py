"""The local cluster heals itself, as a real one's kubelet keeps its static pods running.

On a cluster of its own (kwokctl, binary runtime, supervised by devstack/up), so that
killing and pausing its control plane never touches the cluster a `make run` shows.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stackkit.stack import SELECTOR
from tests.conftest import until
from tests.integration.conftest import OwnStack, own_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NAMESPACE = "chaos-demo"
# kube-controller-manager's and kube-scheduler's leader-election lease (their default):
# paused longer than this, they find their lease lost on resume and exit.
LEASE_S = 15


@pytest.fixture(scope="module")
def cluster() -> Iterator[OwnStack]:
    with own_stack("heal", "cluster") as stack:
        yield stack


def ready(stack: OwnStack) -> bool:
    return stack.kubectl("get", "--raw", "/readyz", check=False).returncode == 0


def serving_pods(stack: OwnStack) -> dict[str, str]:
    """name -> uid of the pods that are Running, Ready and not terminating."""
    out = stack.kubectl("-n", NAMESPACE, "get", "pods", "-l", SELECTOR, "-o", "json", check=False)
    if out.returncode != 0:
        return {}
    serving = {}
    for pod in json.loads(out.stdout)["items"]:
        conditions = pod["status"].get("conditions") or []
        if (
            pod["status"].get("phase") == "Running"
            and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            and not pod["metadata"].get("deletionTimestamp")
        ):
            serving[pod["metadata"]["name"]] = pod["metadata"]["uid"]
    return serving


def test_a_killed_apiserver_comes_back(cluster: OwnStack) -> None:
    before = cluster.control_plane_pid("kube-apiserver")
    os.kill(before, signal.SIGKILL)
    until(
        lambda: cluster.restarts("kwok-kube-apiserver") >= 1 and ready(cluster),
        timeout=90,
        what="kube-apiserver restarted and ready",
    )
    # kwokctl's own pidfile follows, so `kwokctl delete cluster` stops the new one.
    assert cluster.control_plane_pid("kube-apiserver") != before
    log = (cluster.cluster_dir / "logs" / "kube-apiserver.log").read_text(errors="replace")
    assert f"kwok-kube-apiserver pid {before} exited" in log
    assert "kwok-kube-apiserver restart 1 in 1 s" in log


def test_after_an_apiserver_pause_longer_than_the_lease_a_deleted_pod_is_replaced(
    cluster: OwnStack,
) -> None:
    until(lambda: len(serving_pods(cluster)) == 3, timeout=120, what="3 pods serving")
    managers = {
        c: cluster.restarts(f"kwok-{c}") for c in ("kube-controller-manager", "kube-scheduler")
    }
    apiserver = cluster.control_plane_pid("kube-apiserver")
    os.kill(apiserver, signal.SIGSTOP)
    try:
        # A hung apiserver, or a laptop's lid closed: nothing answers for a while.
        time.sleep(LEASE_S + 10)
    finally:
        os.kill(apiserver, signal.SIGCONT)
    until(lambda: ready(cluster), timeout=60, what="the apiserver answering again")
    # The managers lost their leases; exited, they were started again.
    until(
        lambda: all(cluster.restarts(f"kwok-{c}") > n for c, n in managers.items()),
        timeout=90,
        what=lambda: f"controller-manager and scheduler restarted: {managers}",
    )

    before = serving_pods(cluster)
    victim = sorted(before)[0]
    cluster.kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=false")
    healed = until(
        lambda: (now := serving_pods(cluster)) and len(now) == 3 and victim not in now and now,
        timeout=120,
        what="a replacement for the deleted pod, Running and Ready",
    )
    assert set(healed) - set(before), "a new pod, not the old ones"


def test_a_pod_marked_not_ready_while_its_node_was_away_is_ready_again(
    cluster: OwnStack,
) -> None:
    # What the node-lifecycle controller does to every pod of a node that missed its
    # heartbeats (kwok paused, a busy machine): Ready=False through the status
    # subresource. The node is back (kwok answers), so the pod must serve again.
    until(lambda: len(serving_pods(cluster)) == 3, timeout=120, what="3 pods serving")
    name, uid = sorted(serving_pods(cluster).items())[0]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    not_ready = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": now},
            ]
        }
    }
    patch = ("--subresource=status", "--type=strategic", "-p", json.dumps(not_ready))
    marked = cluster.kubectl("-n", NAMESPACE, "patch", "pod", name, *patch, "-o", "json")
    conditions = json.loads(marked.stdout)["status"]["conditions"]
    assert next(c for c in conditions if c["type"] == "Ready")["status"] == "False"
    until(
        lambda: serving_pods(cluster).get(name) == uid,
        timeout=15,
        what=f"{name} Ready again, the same pod",
    )
    assert len(serving_pods(cluster)) == 3


def flag(pid: int, name: str) -> str:
    """The value a process was started with for --name (the last one counts)."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")][-1]


def test_the_nodes_grace_period_outlasts_a_kwok_restart(cluster: OwnStack) -> None:
    # A restarted kwok controller takes the nodes' leases over when the old ones expire:
    # until then nothing renews them, and the node controller must not give up first.
    lease_s = int(flag(cluster.control_plane_pid("kwok-controller"), "node-lease-duration-seconds"))
    grace = flag(cluster.control_plane_pid("kube-controller-manager"), "node-monitor-grace-period")
    assert re.fullmatch(r"\d+s", grace), grace
    assert int(grace[:-1]) >= 2 * lease_s
