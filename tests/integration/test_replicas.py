"""Several replicas of every process on one Redis, as in k8s/app/: 2 web (daphne), 2
pollers, 2 watchers, all real processes on the devstack.

What scaling out must not change: every viewer gets every update whichever web process
it is connected to; the chaos budgets are global; one poller and one watcher work while
the others stand by, and a dead leader is replaced within its lock's TTL; Prometheus
answers the same number of queries per poll round however many web processes and
viewers there are.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from websockets.asyncio.client import ClientConnection, connect

from chaos.management.commands.watch_pods import Command as WatchPods
from dashboard import promql
from dashboard.management.commands.poll_metrics import Command as PollMetrics
from runtime.worker import STANDBY_RETRY_S
from stackkit.servers import PrometheusProxy
from stackkit.stack import Devstack, chaos_session, free_port, manage, wait_http
from tests.chaos.stack import (
    GUARD_ALWAYS_REFUSES,
    NAMESPACE,
    flush_test_redis,
    pods,
    press,
    wait_healthy,
)
from tests.conftest import StartProcess, until
from tests.integration.scrape import sample_sum

pytestmark = pytest.mark.integration

WebServer = Callable[..., str]
# The poller's rounds come fast so that a test sees many of them.
POLL_INTERVAL_S = 1.0
# How late a takeover may be noticed: the standby's metrics are read this often.
OBSERVE_S = 0.2


@pytest.fixture(autouse=True)
def clean_slate(devstack: Devstack) -> Iterator[None]:
    # No leader lock, budget or remembered frame left by an earlier test.
    flush_test_redis(devstack)
    wait_healthy(devstack)
    yield
    wait_healthy(devstack)


@dataclass
class Worker:
    kind: str
    process: Any
    metrics_url: str

    def leading(self) -> float:
        return sample_sum(self.metrics_url, "infra_worker_leading", worker=self.kind)


def start_workers(
    devstack: Devstack, start_process: StartProcess, kind: str, count: int, **overrides: str
) -> list[Worker]:
    command = {"poller": "poll_metrics", "watcher": "watch_pods"}[kind]
    workers = []
    for _ in range(count):
        port = free_port()
        env = devstack.app_env(
            METRICS_PORT=str(port), POLL_INTERVAL=str(POLL_INTERVAL_S), **overrides
        )
        process = start_process(manage(command), env, name=kind)
        workers.append(Worker(kind, process, f"http://127.0.0.1:{port}/metrics"))
    for worker in workers:
        wait_http(worker.metrics_url)
    return workers


def wait_for_one_leader(workers: list[Worker], timeout: float) -> Worker:
    deadline = time.monotonic() + timeout
    while True:
        leaders = [w for w in workers if w.leading() == 1]
        if len(leaders) == 1:
            return leaders[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(leaders)} {workers[0].kind} leaders after {timeout} s")
        time.sleep(OBSERVE_S)


# --- viewers ---------------------------------------------------------------------------


@dataclass
class Viewer:
    web: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    closed_with: int | None = None


class Viewers:
    """Websocket viewers on their own event loop thread, each reading every frame as a
    browser does (a viewer that stops reading is disconnected as too slow)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.viewers: list[Viewer] = []
        self.connections: list[ClientConnection] = []

    def open(self, web: str, count: int) -> list[Viewer]:
        future: Future[list[Viewer]] = asyncio.run_coroutine_threadsafe(
            self._open(web, count), self.loop
        )
        return future.result(timeout=120)

    async def _open(self, web: str, count: int) -> list[Viewer]:
        opened = []
        # In batches: a 2-core machine also runs the servers being connected to.
        for start in range(0, count, 50):
            batch = await asyncio.gather(
                *(self._one(web) for _ in range(start, min(count, start + 50)))
            )
            opened.extend(batch)
        return opened

    async def _one(self, web: str) -> Viewer:
        ws_url = web.replace("http://", "ws://") + "/ws/infra/"
        connection = await connect(ws_url, origin=web, open_timeout=30)  # type: ignore[arg-type]
        viewer = Viewer(web)
        self.viewers.append(viewer)
        self.connections.append(connection)
        self.loop.create_task(self._read(viewer, connection))
        return viewer

    @staticmethod
    async def _read(viewer: Viewer, connection: ClientConnection) -> None:
        try:
            async for text in connection:
                assert isinstance(text, str)
                viewer.texts.append(text)
                viewer.frames.append(json.loads(text))
        finally:
            viewer.closed_with = connection.close_code

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def viewers() -> Iterator[Viewers]:
    pool = Viewers()
    yield pool
    pool.close()


def metrics_ts(viewer: Viewer, since: int = 0) -> list[float]:
    return [f["data"]["ts"] for f in viewer.frames[since:] if f["type"] == "metrics"]


# --- tests -----------------------------------------------------------------------------


def test_viewers_on_either_web_process_receive_every_update(
    devstack: Devstack, web_server: WebServer, start_process: StartProcess, viewers: Viewers
) -> None:
    webs = [web_server(), web_server()]
    start_workers(devstack, start_process, "poller", 2)
    start_workers(devstack, start_process, "watcher", 2)
    audience = viewers.open(webs[0], 3) + viewers.open(webs[1], 3)
    until(
        lambda: all(len(metrics_ts(v)) >= 2 for v in audience),
        timeout=30,
        what="live metrics frames on every viewer",
    )
    mark = [len(v.frames) for v in audience]

    # A pod change as it happens in the cluster (here by the admin, so no rate limit or
    # guard is involved): the watcher leader publishes it, both web processes relay it.
    victim = pods(devstack)[0]["metadata"]["name"]
    devstack.kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=false")
    wait_healthy(devstack)

    def healed(viewer: Viewer) -> bool:
        seen = [f["data"] for f in viewer.frames if f["type"] == "pods"]
        return (
            bool(seen)
            and seen[-1]["ready"] == 3
            and victim not in {p["name"] for p in seen[-1]["pods"]}
        )

    until(
        lambda: all(healed(v) for v in audience),
        timeout=30,
        what=lambda: (
            "healed on every viewer; pods frames per viewer: "
            + str([sum(f["type"] == "pods" for f in v.frames) for v in audience])
        ),
    )
    healed_at = [len(metrics_ts(v)) for v in audience]
    until(
        lambda: all(len(metrics_ts(v)) >= n + 2 for v, n in zip(audience, healed_at, strict=True)),
        timeout=30,
        what="two more metrics rounds on every viewer after the pod frames",
    )

    pod_frames = [
        [t for t, f in zip(v.texts[m:], v.frames[m:], strict=True) if f["type"] == "pods"]
        for v, m in zip(audience, mark, strict=True)
    ]
    # Every pods frame, byte for byte and in the same order, on all six viewers.
    assert len(pod_frames[0]) >= 2
    assert all(frames == pod_frames[0] for frames in pod_frames)
    assert any(
        p["name"] == victim and p["status"] == "Terminating"
        for t in pod_frames[0]
        for p in json.loads(t)["data"]["pods"]
    )
    # Every metrics round between the first and the last one all viewers saw.
    rounds = [metrics_ts(v, m) for v, m in zip(audience, mark, strict=True)]
    first, last = max(r[0] for r in rounds), min(r[-1] for r in rounds)
    common = [[ts for ts in r if first <= ts <= last] for r in rounds]
    assert len(common[0]) >= 3
    assert all(r == common[0] for r in common)
    assert all(v.closed_with is None for v in audience)


def test_chaos_budgets_are_shared_by_the_web_processes(
    devstack: Devstack, web_server: WebServer
) -> None:
    # The guard refuses every press (409), so budgets get spent without killing pods.
    env = {
        **GUARD_ALWAYS_REFUSES,
        "CHAOS_RATE_PER_IP": "3/m",
        "CHAOS_BURST_PER_IP": "3/10s",
        "CHAOS_RATE_GLOBAL": "5/m",
        # As behind the ingress: the visitor is the last X-Forwarded-For entry.
        "TRUSTED_PROXY_COUNT": "1",
    }
    a, b = web_server(**env), web_server(**env)
    visitors = [f"203.0.113.{n}" for n in range(10, 15)]

    def status(web: str, visitor: str) -> int:
        return press(chaos_session(web), web, **{"X-Forwarded-For": visitor}).status_code

    first = visitors[0]
    # Per visitor: three presses spread over both processes, the fourth refused.
    assert [status(a, first), status(b, first), status(a, first)] == [409, 409, 409]
    assert status(b, first) == 429
    assert status(a, first) == 429
    # Cluster-wide: presses 4 and 5 from new visitors pass, on either process; then
    # nobody, however fresh, gets through.
    assert status(b, visitors[1]) == 409
    assert status(a, visitors[2]) == 409
    assert status(b, visitors[3]) == 429
    assert status(a, visitors[4]) == 429


def test_one_poller_and_one_watcher_lead_and_a_killed_leader_is_replaced_within_its_ttl(
    devstack: Devstack, start_process: StartProcess
) -> None:
    for kind, command in (("poller", PollMetrics), ("watcher", WatchPods)):
        workers = start_workers(devstack, start_process, kind, 2)
        leader = wait_for_one_leader(workers, timeout=command.lock_ttl_s + 5)
        # Exactly one, and it stays that way: both processes alive, one working.
        for _ in range(5):
            assert sorted(w.leading() for w in workers) == [0, 1]
            assert all(w.process.poll() is None for w in workers)
            time.sleep(0.5)
        standby = next(w for w in workers if w is not leader)
        kind_of_frame = "metrics" if kind == "poller" else "pods"
        broadcasts = sample_sum(standby.metrics_url, "infra_broadcasts_total", kind=kind_of_frame)

        # A crash, not a shutdown: the lock is not released and has to expire.
        os.kill(leader.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        until(lambda s=standby: s.leading() == 1, timeout=30, what=f"{kind} takeover")
        takeover_s = time.monotonic() - killed_at
        assert takeover_s <= command.lock_ttl_s + STANDBY_RETRY_S + OBSERVE_S + 0.5, takeover_s

        # The new leader does the work: the poller publishes rounds, the watcher the next
        # pod change.
        if kind == "watcher":
            victim = pods(devstack)[0]["metadata"]["name"]
            devstack.kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=false")
        until(
            lambda s=standby, b=broadcasts, k=kind_of_frame: (
                sample_sum(s.metrics_url, "infra_broadcasts_total", kind=k) > b
            ),
            timeout=30,
            what=f"the new {kind} leader publishing",
        )


def queries_per_round(proxy: PrometheusProxy, pollers: list[Worker], rounds: int = 3) -> float:
    """Instant queries this test's pollers sent (through `proxy`, so no other poller of
    the shared Prometheus counts) per poll round, over `rounds` rounds.

    Both counters are read right after a round ends (the round counter has just moved),
    in the quiet second before the next round, so no round is half counted."""

    def poll_rounds() -> float:
        return sum(sample_sum(p.metrics_url, "infra_poll_duration_seconds_count") for p in pollers)

    def right_after_a_round() -> tuple[float, float]:
        before = poll_rounds()
        deadline = time.monotonic() + 10 * POLL_INTERVAL_S
        while (now := poll_rounds()) == before:
            assert time.monotonic() < deadline, "the poller stopped polling"
            time.sleep(0.02)
        return now, proxy.queries

    start_rounds, start_queries = right_after_a_round()
    end_rounds, end_queries = start_rounds, start_queries
    while end_rounds < start_rounds + rounds:
        end_rounds, end_queries = right_after_a_round()
    return (end_queries - start_queries) / (end_rounds - start_rounds)


def test_prometheus_load_is_the_same_for_one_or_two_web_processes_and_one_or_500_viewers(
    devstack: Devstack,
    web_server: WebServer,
    start_process: StartProcess,
    viewers: Viewers,
    prometheus_proxy: PrometheusProxy,
) -> None:
    per_round = len(promql.SCALARS) + len(promql.VECTORS)
    # Enough websocket places, and connections at the door, for 500 viewers from one address.
    env = {"WS_MAX_PER_IP": "1000", "REQUEST_MAX_CONNECTIONS_PER_IP": "1100"}
    first_web = web_server(**env)
    pollers = start_workers(
        devstack, start_process, "poller", 2, PROMETHEUS_URL=prometheus_proxy.url
    )
    wait_for_one_leader(pollers, timeout=PollMetrics.lock_ttl_s + 5)

    viewers.open(first_web, 1)
    one_web_one_viewer = queries_per_round(prometheus_proxy, pollers)

    second_web = web_server(**env)
    viewers.open(second_web, 1)
    two_webs_two_viewers = queries_per_round(prometheus_proxy, pollers)

    crowd = viewers.open(first_web, 249) + viewers.open(second_web, 249)
    assert len(viewers.viewers) == 500
    two_webs_500_viewers = queries_per_round(prometheus_proxy, pollers)

    assert one_web_one_viewer == per_round
    assert two_webs_two_viewers == per_round
    assert two_webs_500_viewers == per_round
    # And the crowd was really there, watching live: every viewer still connected and
    # getting rounds, both processes holding their share.
    until(
        lambda: all(v.closed_with is not None or len(metrics_ts(v)) >= 2 for v in crowd),
        timeout=60,
        what="two metrics rounds on every viewer of the crowd",
    )
    assert all(v.closed_with is None and len(metrics_ts(v)) >= 2 for v in crowd)
    for web in (first_web, second_web):
        assert sample_sum(f"{web}/metrics", "infra_open_websockets") == 250
    assert requests.get(f"{first_web}/healthz", timeout=5).status_code == 200
