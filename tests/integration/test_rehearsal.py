"""The production rehearsal: k8s/app/ on a real kubelet node, with the app's real image.

`devstack/node up` joins a real node (kubelet, containerd, runc, a bridge CNI,
kube-proxy, CoreDNS) to the devstack's control plane; `kubectl apply -k
k8s/overlays/devstack` runs the unchanged manifests there with the local images. The
test then stands where the ingress controller would: it reaches the web Service on its
NodePort (loopback), sends the public Host and X-Forwarded-Proto/-For as ingress-nginx
does, and breaks the shared chaos-demo namespace through the web pods' own
ServiceAccount. The node is left running for the next run; the app namespace is removed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.connection import Connection
from websockets.typing import Origin

from stackkit.stack import ROOT, Devstack, read_env_file
from tests.conftest import unavailable
from tests.integration.test_manifests import APP_NAMESPACE, CHAOS_NAMESPACE, remove_app

# The node's first start may build containerd, CoreDNS and the images (minutes, cold).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

NODE_SCRIPT = ROOT / "devstack" / "node"
OVERLAY = ROOT / "k8s" / "overlays" / "devstack"
NODE_NAME = "infra-chaos-node"
# The public host the app is configured for (settings.env), as the ingress would send it.
APP_HOST = read_env_file(ROOT / "k8s" / "app" / "settings.env")["APP_HOST"]
ORIGIN = f"https://{APP_HOST}"
WORKLOADS = {"web": 2, "poller": 2, "watcher": 2, "redis": 1, "postgres": 1}
# Visitors' addresses in X-Forwarded-For (TRUSTED_PROXY_COUNT=1: the ingress appends one);
# documentation addresses, never contacted. One per press keeps each under its own budget.
_visitor = iter(f"198.51.100.{i}" for i in range(1, 255))
CSRF_TOKEN = secrets.token_hex(16)


@dataclass
class Rehearsal:
    devstack: Devstack
    node_port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.node_port}"

    def headers(self, **extra: str) -> dict[str, str]:
        """What ingress-nginx sends the web Service for a visitor of the public page."""
        return {
            "Host": APP_HOST,
            "X-Forwarded-Proto": "https",
            "X-Forwarded-For": next(_visitor),
            **extra,
        }

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, headers=self.headers(), timeout=10)

    def press(self) -> requests.Response:
        """The chaos button, as the page's script presses it (double-submit CSRF)."""
        return requests.post(
            f"{self.base}/api/infra/chaos",
            headers=self.headers(
                Cookie=f"csrftoken={CSRF_TOKEN}",
                **{"X-CSRFToken": CSRF_TOKEN, "Referer": f"{ORIGIN}/infra"},
            ),
            timeout=15,
        )

    def viewer(self) -> ClientConnection:
        """A websocket viewer through the Service, with the public page's origin."""
        sock = socket.create_connection(("127.0.0.1", self.node_port), timeout=10)
        return connect(
            f"ws://{APP_HOST}/ws/infra/",
            sock=sock,
            origin=Origin(ORIGIN),
            additional_headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": next(_visitor)},
            open_timeout=10,
        )


def app_pods(devstack: Devstack, component: str | None = None) -> list[dict[str, Any]]:
    selector = "app.kubernetes.io/name=infra-chaos"
    if component:
        selector += f",app.kubernetes.io/component={component}"
    out = devstack.kubectl("-n", APP_NAMESPACE, "get", "pods", "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_all_ready(devstack: Devstack, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        counts = {name: sum(ready(p) for p in app_pods(devstack, name)) for name in WORKLOADS}
        if counts == WORKLOADS:
            return
        if time.monotonic() > deadline:
            pods = devstack.kubectl("-n", APP_NAMESPACE, "get", "pods", "-o", "wide").stdout
            raise TimeoutError(f"app pods not all Ready ({counts}):\n{pods}")
        time.sleep(1)


def apply_overlay(devstack: Devstack) -> None:
    devstack.kubectl("apply", "-k", str(OVERLAY), timeout=120)


@pytest.fixture(scope="module")
def rehearsal(devstack: Devstack) -> Iterator[Rehearsal]:
    if os.geteuid() != 0:
        unavailable("devstack/node runs containers and edits iptables: it needs root")
    # What a previous run left goes first; `up` then makes the volume its claim held
    # Available again (and starts the node if it is not running).
    remove_app(devstack)
    # A node this fixture starts it also stops: the shared cluster's other tests count
    # nodes and join each to a node exporter of its own, which the real node has not.
    was_running = subprocess.run(
        [str(NODE_SCRIPT), "status"], capture_output=True, text=True, check=False
    )
    first = (was_running.stdout.splitlines() or [""])[0].split()
    leave_running = was_running.returncode == 0 and first[:2] == ["node", "Ready"]
    started = subprocess.run(
        [str(NODE_SCRIPT), "up"], capture_output=True, text=True, timeout=1700, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"devstack/node up failed:\n{started.stderr[-3000:]}", pytrace=False)
    devstack.kubectl("apply", "-f", str(ROOT / "k8s" / "app" / "namespace.yaml"))
    devstack.kubectl(
        "-n", APP_NAMESPACE, "create", "secret", "generic", "infra-chaos",
        f"--from-literal=DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}",
        f"--from-literal=POSTGRES_PASSWORD={secrets.token_hex(24)}",
    )  # fmt: skip
    apply_overlay(devstack)
    try:
        wait_all_ready(devstack)
        service = json.loads(
            devstack.kubectl("-n", APP_NAMESPACE, "get", "service", "web", "-o", "json").stdout
        )
        yield Rehearsal(devstack, int(service["spec"]["ports"][0]["nodePort"]))
    finally:
        remove_app(devstack)
        if not leave_running:
            subprocess.run([str(NODE_SCRIPT), "down"], capture_output=True, timeout=300)


def pod_metrics(pod: dict[str, Any], port: int) -> str:
    """A pod's /metrics, straight from its address on the node's bridge, as Prometheus
    scrapes it: no X-Forwarded-For, which only the ingress adds."""
    url = f"http://{pod['status']['podIP']}:{port}/metrics"
    response = requests.get(url, timeout=5)
    response.raise_for_status()
    return response.text


def gauge(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def frames(viewer: Connection, until: float) -> Iterator[dict[str, Any]]:
    while (left := until - time.monotonic()) > 0:
        try:
            yield json.loads(viewer.recv(timeout=left))
        except TimeoutError:
            return


def test_every_app_pod_is_ready_on_the_real_node(rehearsal: Rehearsal) -> None:
    devstack = rehearsal.devstack
    node = json.loads(devstack.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    info = node["status"]["nodeInfo"]
    # A kubelet and containerd, not kwok's pretence of them.
    assert info["kubeletVersion"].startswith("v1.36"), info
    assert info["containerRuntimeVersion"].startswith("containerd://2."), info
    pods = app_pods(devstack)
    assert len(pods) == sum(WORKLOADS.values())
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE_NAME, pod["metadata"]["name"]
        assert ready(pod), pod["metadata"]["name"]
        for status in pod["status"]["containerStatuses"]:
            assert status["imageID"], status  # pulled nothing: an image containerd holds
    # The web pods' init container migrated PostgreSQL and exited cleanly.
    for pod in app_pods(devstack, "web"):
        (migrate,) = pod["status"]["initContainerStatuses"]
        assert migrate["name"] == "migrate"
        assert migrate["state"]["terminated"]["exitCode"] == 0, migrate


def test_exactly_one_poller_and_one_watcher_lead(rehearsal: Rehearsal) -> None:
    deadline = time.monotonic() + 60
    while True:
        leading = {
            worker: [
                gauge(pod_metrics(pod, 9810), f'infra_worker_leading{{worker="{worker}"}}')
                for pod in app_pods(rehearsal.devstack, worker)
            ]
            for worker in ("poller", "watcher")
        }
        if all(sorted(values) == [0.0, 1.0] for values in leading.values()):
            return
        assert time.monotonic() < deadline, leading
        time.sleep(2)


def test_web_pods_talk_to_the_apiserver_with_their_projected_token_only(
    rehearsal: Rehearsal,
) -> None:
    for pod in app_pods(rehearsal.devstack, "web"):
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "infra-chaos"
        assert spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        assert not any(e["name"] == "KUBECONFIG" for e in container.get("env", []))
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        token_volume = mounts["/var/run/secrets/kubernetes.io/serviceaccount"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == token_volume]
        sources = volume["projected"]["sources"]
        assert sources[0]["serviceAccountToken"]["expirationSeconds"] == 3600
        secrets_mounted = [v for v in spec["volumes"] if "secret" in v]
        assert secrets_mounted == []


def test_the_page_shows_real_numbers(rehearsal: Rehearsal) -> None:
    deadline = time.monotonic() + 60
    while True:
        snapshot = rehearsal.get("/api/infra/snapshot")
        assert snapshot.status_code == 200, snapshot.text[:300]
        metrics = snapshot.json()["metrics"]
        if metrics.get("ts") and not metrics.get("stale") and metrics["pods"]["total"]:
            break
        assert time.monotonic() < deadline, metrics
        time.sleep(2)
    # From the devstack's Prometheus, through the poller pod: the cluster's real pods and
    # the node exporters' memory.
    assert metrics["pods"]["running"] > 0
    assert metrics["memory"]["total_bytes"] > 0
    assert metrics["cpu"]["used_percent"] is not None
    assert metrics["nodes"]
    page = rehearsal.get("/infra")
    assert page.status_code == 200
    assert "Node 1" in page.text


def test_a_viewer_gets_frames(rehearsal: Rehearsal) -> None:
    with rehearsal.viewer() as viewer:
        types = {frame["type"] for frame in frames(viewer, time.monotonic() + 15)}
        # The latest metrics and pods arrive at once, and the poller keeps publishing.
    assert {"metrics", "pods"} <= types


def test_a_press_from_outside_kills_a_pod_and_the_feed_shows_the_heal(
    rehearsal: Rehearsal,
) -> None:
    with rehearsal.viewer() as viewer:
        response = rehearsal.press()
        # Someone else's press (make run, another test) may hold the kill lock a moment.
        for _ in range(5):
            if response.status_code != 409:
                break
            time.sleep(3)
            response = rehearsal.press()
        assert response.status_code == 200, response.text
        body = response.json()
        victim = body["pod"]
        state = rehearsal.devstack.kubectl(
            "-n", CHAOS_NAMESPACE, "get", "pod", victim, "-o", "json", check=False
        )
        # Deleted by the web pod's ServiceAccount: gone, or on its way.
        assert state.returncode != 0 or json.loads(state.stdout)["metadata"]["deletionTimestamp"]
        seen: list[dict[str, Any]] = []
        for frame in frames(viewer, time.monotonic() + 90):
            if frame["type"] == "chaos" and frame["data"]["id"] == body["event_id"]:
                seen.append(frame["data"])
                if frame["data"].get("recovery_s") is not None:
                    break
    assert seen, "no chaos frame for this press"
    assert seen[0]["pod"] == victim
    assert seen[-1]["recovery_s"] is not None, seen
    assert seen[-1]["recovery_s"] > 0, seen


def test_without_its_rolebinding_the_press_is_refused(rehearsal: Rehearsal) -> None:
    devstack = rehearsal.devstack
    devstack.kubectl("-n", CHAOS_NAMESPACE, "delete", "rolebinding", "infra-chaos-app")
    try:
        deadline = time.monotonic() + 30
        while True:
            response = rehearsal.press()
            if response.status_code == 503:
                break
            assert response.status_code in {409, 503}, response.text
            assert time.monotonic() < deadline, response.text
            time.sleep(2)
        assert response.json() == {"ok": False, "error": "cluster_unavailable"}
    finally:
        apply_overlay(devstack)


def test_a_deleted_web_pod_is_healed_and_its_viewer_is_back(rehearsal: Rehearsal) -> None:
    devstack = rehearsal.devstack
    viewer = rehearsal.viewer()
    next(frames(viewer, time.monotonic() + 10))
    # The pod that serves this viewer (its own gauge says so).
    pods = app_pods(devstack, "web")
    serving = [p for p in pods if gauge(pod_metrics(p, 8000), "infra_open_websockets") > 0]
    assert serving, "no web pod counts the viewer"
    victim = serving[0]["metadata"]["name"]
    devstack.kubectl("-n", APP_NAMESPACE, "delete", "pod", victim, "--wait=false")
    # The viewer is cut when its pod stops (after the preStop pause), then reconnects
    # through the Service as the page does, to a pod that is still serving.
    closed_at = None
    try:
        for _ in frames(viewer, time.monotonic() + 60):
            pass
    except ConnectionClosed:
        closed_at = time.monotonic()
    viewer.close()
    if closed_at is None:
        closed_at = time.monotonic()
    with rehearsal.viewer() as again:
        first = next(frames(again, time.monotonic() + 10), None)
    back_s = time.monotonic() - closed_at
    assert first is not None, "the viewer got no frame after reconnecting"
    assert back_s < 10, back_s
    # Kubernetes heals the Deployment: two Ready web pods again, one of them new.
    deadline = time.monotonic() + 180
    while True:
        pods = [p for p in app_pods(devstack, "web") if ready(p)]
        names = {p["metadata"]["name"] for p in pods}
        if len(pods) == 2 and victim not in names:
            break
        assert time.monotonic() < deadline, names
        time.sleep(1)
