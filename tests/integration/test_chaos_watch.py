"""The whole loop on the real stack: a press, the watch, the viewers, the recovery time."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from chaos import kube
from chaos.eventwatch import EventWatch
from chaos.management.commands import watch_pods
from runtime.worker import STANDBY_RETRY_S
from stackkit.stack import Devstack, chaos_session, free_port, manage, wait_http
from tests.chaos.stack import NAMESPACE, event, pods, press, wait_healthy
from tests.conftest import StartProcess, until
from tests.integration.scrape import sample_sum

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("healthy_cluster")]

WebServer = Callable[..., str]


def frames_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool], *, timeout: float
) -> list[dict[str, Any]]:
    """Reads frames until `done(frame)`; returns all read, the matching one last."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            kinds = [(f["type"], f["data"]) for f in seen[-5:]]
            raise TimeoutError(f"no matching frame within {timeout} s; last: {kinds}")
        try:
            frame = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            continue
        seen.append(frame)
        if done(frame):
            return seen


def statuses(frame: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    if frame["type"] != "pods":
        return {}
    return {p["name"]: (p["status"], p["ready"]) for p in frame["data"]["pods"]}


def test_a_kill_is_seen_by_viewers_and_its_recovery_is_timed(
    devstack: Devstack, web_server: WebServer, start_process: StartProcess
) -> None:
    url = web_server()
    start_process(manage("watch_pods"), devstack.app_env(), name="watcher")
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(devstack)}
    ws_url = url.replace("http://", "ws://") + "/ws/infra/"
    with connect(ws_url, origin=url, open_timeout=10) as ws:
        # The watcher's first list reaches the viewer (now, or on connect if it was first).
        frames_until(
            ws,
            lambda f: f["type"] == "pods" and sorted(statuses(f)) == sorted(before),
            timeout=30,
        )
        response = press(chaos_session(url), url)
        assert response.status_code == 200, response.text
        victim, event_id = response.json()["pod"], response.json()["event_id"]

        # Exactly one pod is going: the victim, and only it.
        terminating = [
            p["metadata"]["name"] for p in pods(devstack) if p["metadata"].get("deletionTimestamp")
        ]
        assert terminating == [victim]

        seen = frames_until(
            ws, lambda f: statuses(f).get(victim, ("", 0))[0] == "Terminating", timeout=10
        )
        seen += frames_until(
            ws,
            lambda f: any(
                name not in before and state == ("Running", True)
                for name, state in statuses(f).items()
            ),
            timeout=30,
        )
        healed = frames_until(
            ws,
            lambda f: (
                f["type"] == "chaos"
                and f["data"]["id"] == event_id
                and f["data"]["recovery_s"] is not None
            ),
            timeout=30,
        )[-1]["data"]
        # The kill itself was announced (by the watcher) before it healed.
        announced = [f for f in seen if f["type"] == "chaos" and f["data"]["id"] == event_id]
        assert announced
        assert announced[0]["data"]["recovery_s"] is None

    assert healed["pod"] == victim
    assert healed["outcome"] == "deleted"
    assert 0 < healed["recovery_s"] < 30
    assert healed["recovery"]["count"] >= 1
    row = event(devstack, event_id)
    assert row["recovery_s"] == pytest.approx(healed["recovery_s"], abs=0.01)
    assert row["replacement_name"]
    assert row["replacement_name"] not in before
    for column in ("deleted_at", "replacement_created_at", "scheduled_at", "ready_at"):
        assert row[column], column
    wait_healthy(devstack)
    assert before[victim] not in {p["metadata"]["uid"] for p in pods(devstack)}


@pytest.mark.django_db
def test_a_watch_from_a_stale_resource_version_relists_and_keeps_watching(
    devstack: Devstack, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """In-process watcher on the real apiserver, as the chaos account, resuming from
    resourceVersion "1": long compacted, so the apiserver answers 410 Gone.

    A young cluster's watch cache may still reach back that far and replay history
    instead; then the 410 is injected at the seam for one call. Either way, everything
    after it (the re-list, the next watch, the kill it reports) is the real apiserver."""
    monkeypatch.setenv("KUBECONFIG", devstack.chaos_kubeconfig)
    settings.CHAOS_NAMESPACE = NAMESPACE
    monkeypatch.setattr(kube, "_cached", None)
    monkeypatch.setattr(EventWatch, "start", lambda self: None)
    monkeypatch.setattr(watch_pods, "close_old_connections", lambda: None)
    published: list[tuple[str, Any]] = []
    monkeypatch.setattr(watch_pods, "publish", lambda kind, data: published.append((kind, data)))
    command = watch_pods.Command()
    command.step()  # list
    assert command.resource_version
    command.resource_version = "1"
    command.step()
    if command.resource_version is not None:
        # Served from the watch cache: force the 410 the apiserver would send.
        real_watch = kube.watch_pods
        calls: list[str] = []

        def gone_once(api: Any, **kwargs: Any) -> Iterator[kube.PodEvent]:
            calls.append(kwargs["resource_version"])
            if len(calls) == 1:
                raise kube.KubeError("gone", status=410)
            return real_watch(api, **kwargs)

        monkeypatch.setattr(kube, "watch_pods", gone_once)
        command.step()
    assert command.resource_version is None, "a 410 drops the stale version"
    assert command.failures == 0
    frames_before = len(published)
    command.step()  # re-list
    assert command.resource_version not in (None, "1")
    assert len(published) == frames_before + 1
    assert len(published[-1][1]["pods"]) >= 3

    victim = pods(devstack)[0]["metadata"]["name"]
    devstack.kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=false")

    def reported() -> bool:
        return any(
            {p["name"]: p["status"] for p in data["pods"]}.get(victim) == "Terminating"
            and data["desired"] == 3
            for _, data in published
        )

    deadline = time.monotonic() + 30
    while not reported():
        assert time.monotonic() < deadline, f"watch did not report the kill: {published[-3:]}"
        command.step()
    assert command.failures == 0


def test_one_watcher_leads_and_a_standby_takes_over_when_it_dies(
    devstack: Devstack, web_server: WebServer, start_process: StartProcess
) -> None:
    url = web_server()

    def start_watcher(name: str) -> tuple[Any, str]:
        port = free_port()
        env = devstack.app_env(METRICS_PORT=str(port))
        metrics = f"http://127.0.0.1:{port}/metrics"
        return start_process(manage("watch_pods"), env, name=name), metrics

    def leading(metrics: str) -> bool:
        try:
            return sample_sum(metrics, "infra_worker_leading", worker="watcher") == 1
        except requests.RequestException:
            return False

    first, first_metrics = start_watcher("watcher-a")
    until(lambda: leading(first_metrics), timeout=30, what="the first watcher leading")
    second, second_metrics = start_watcher("watcher-b")
    wait_http(second_metrics)
    # Through a few of its asks for the lock, the second only stands by.
    asks = time.monotonic() + 3 * STANDBY_RETRY_S
    while time.monotonic() < asks:
        assert not leading(second_metrics), "two watchers led at once"
        time.sleep(0.2)

    first.kill()  # no goodbye: the standby must wait out the lock's TTL
    first.wait(timeout=10)
    until(
        lambda: leading(second_metrics),
        timeout=watch_pods.Command.lock_ttl_s + STANDBY_RETRY_S + 10,
        what="the standby taking over",
    )

    before = {p["metadata"]["name"] for p in pods(devstack)}
    victim = sorted(before)[0]
    devstack.kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=false")
    deadline = time.monotonic() + 30
    while True:
        shown = requests.get(f"{url}/api/infra/snapshot", timeout=5).json()["pods"] or {}
        names = {p["name"]: p["status"] for p in shown.get("pods", [])}
        # Seen dying, or already replaced: either way the new leader is watching.
        if names.get(victim) == "Terminating" or (victim not in names and names.keys() - before):
            break
        assert time.monotonic() < deadline, f"the new leader did not report the kill: {names}"
        time.sleep(0.2)
    assert second.poll() is None
