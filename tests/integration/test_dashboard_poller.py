"""The metrics poller on the real stack: its numbers are Kubernetes' numbers, it follows
changes, it survives a Prometheus outage, and with two replicas exactly one publishes.

kube-state-metrics counts pods in every namespace, so the comparisons do too. Other
tests may kill or add pods while these run; a comparison therefore waits for a moment
when the cluster is steady (two identical Kubernetes readings around one poll round).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from dashboard.management.commands.poll_metrics import Command
from dashboard.poller import MetricsPoller
from dashboard.snapshot import Snapshot
from live.publish import latest
from runtime.worker import STANDBY_RETRY_S
from stackkit.servers import PrometheusProxy
from stackkit.stack import TEST_NAMESPACE, Devstack, RedisDb, free_port, manage, wait_http
from tests.conftest import StartProcess, until
from tests.integration.scrape import sample_sum

pytestmark = pytest.mark.integration

NAMESPACE = TEST_NAMESPACE
DEPLOYMENT = "deployment/chaos-demo"
DEFAULT_REPLICAS = 3


def kube_pod_counts(devstack: Devstack) -> tuple[int, int]:
    """(running, total) over all namespaces, as the Kubernetes API lists them."""
    pods = json.loads(devstack.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    running = sum(1 for pod in pods if pod.get("status", {}).get("phase") == "Running")
    return running, len(pods)


def snapshot_pod_counts(snapshot: Snapshot) -> tuple[int | None, int | None]:
    return snapshot["pods"]["running"], snapshot["pods"]["total"]


def wait_for(what: str, check: Callable[[], Any], *, timeout: float, every: float = 1) -> Any:
    return until(check, timeout=timeout, what=what, every=every)


def agreeing_snapshot(devstack: Devstack, poller: MetricsPoller) -> Snapshot | None:
    before = kube_pod_counts(devstack)
    snapshot = poller.poll().snapshot
    after = kube_pod_counts(devstack)
    if before == after and snapshot_pod_counts(snapshot) == after:
        return snapshot
    return None


def test_the_snapshot_counts_the_pods_and_nodes_kubernetes_lists(devstack: Devstack) -> None:
    poller = MetricsPoller(base_url=devstack.prometheus_url)
    # kube-state-metrics sees a change at once, Prometheus at its next scrape (5 s).
    snapshot = wait_for(
        "snapshot pod counts equal to the Kubernetes API's",
        lambda: agreeing_snapshot(devstack, poller),
        timeout=60,
    )
    assert snapshot["stale"] is False
    assert snapshot["pods"]["total"] > 0
    nodes = json.loads(devstack.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = sorted(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        for n in nodes
    )
    assert [n["name"] for n in snapshot["nodes"]] == [f"Node {i + 1}" for i in range(len(nodes))]
    assert sorted(n["ready"] for n in snapshot["nodes"]) == ready
    # Each fake node has its own node exporter, named after it: the join found them all.
    assert all(n["memory_total_bytes"] for n in snapshot["nodes"])
    assert 0 <= snapshot["cpu"]["used_percent"] <= 100
    assert 0 < snapshot["memory"]["used_percent"] < 100
    assert snapshot["history"]["cpu"], "30 minutes of history exist once the stack ran a minute"
    text = json.dumps(snapshot, allow_nan=False)
    for node in nodes:
        assert node["metadata"]["name"] not in text


@pytest.fixture
def restore_replicas(devstack: Devstack) -> Iterator[None]:
    yield
    devstack.kubectl("-n", NAMESPACE, "scale", DEPLOYMENT, f"--replicas={DEFAULT_REPLICAS}")
    devstack.kubectl("-n", NAMESPACE, "rollout", "status", DEPLOYMENT, "--timeout=90s", timeout=100)


@pytest.mark.usefixtures("restore_replicas")
def test_the_snapshot_follows_pods_being_added_and_removed(devstack: Devstack) -> None:
    poller = MetricsPoller(base_url=devstack.prometheus_url)
    devstack.kubectl("-n", NAMESPACE, "rollout", "status", DEPLOYMENT, "--timeout=90s", timeout=100)
    before = wait_for("a steady start", lambda: agreeing_snapshot(devstack, poller), timeout=60)
    replicas = int(
        devstack.kubectl(
            "-n", NAMESPACE, "get", DEPLOYMENT, "-o", "jsonpath={.spec.replicas}"
        ).stdout
    )
    devstack.kubectl("-n", NAMESPACE, "scale", DEPLOYMENT, f"--replicas={replicas + 2}")
    grown = wait_for(
        "two more running pods in the snapshot",
        lambda: (
            (s := agreeing_snapshot(devstack, poller))
            and s["pods"]["running"] >= before["pods"]["running"] + 2
            and s
        ),
        timeout=60,
    )
    assert grown["pods"]["total"] >= before["pods"]["total"] + 2
    devstack.kubectl("-n", NAMESPACE, "scale", DEPLOYMENT, f"--replicas={replicas}")
    wait_for(
        "the snapshot back to the earlier count",
        lambda: (
            (s := agreeing_snapshot(devstack, poller))
            and s["pods"]["running"] <= grown["pods"]["running"] - 2
        ),
        timeout=60,
    )


# --- the poller process -------------------------------------------------------------


# The leader lock is one key per Redis database. Pollers started by other tests on the
# integration database would hold it and make these tests wait or fail for a reason that
# is not theirs, so these pollers get a database of their own.
def poller_redis_url(devstack: Devstack) -> str:
    return devstack.redis_db(RedisDb.DASHBOARD_POLLER)


@pytest.fixture
def test_cache(devstack: Devstack) -> Iterator[None]:
    """Reads the cache the poller processes write: the real Redis, their database."""
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": poller_redis_url(devstack),
            "KEY_PREFIX": "infra",
        }
    }
    with override_settings(CACHES=caches):
        yield


def start_poller(
    devstack: Devstack, start_process: StartProcess, **overrides: str
) -> tuple[Any, str]:
    port = free_port()
    proc = start_process(
        manage("poll_metrics"),
        devstack.app_env(
            POLL_INTERVAL="1",
            METRICS_PORT=str(port),
            REDIS_URL=poller_redis_url(devstack),
            **overrides,
        ),
        name=f"poller-{port}",
    )
    url = f"http://127.0.0.1:{port}/metrics"
    wait_http(url)
    return proc, url


def leading(metrics_url: str) -> bool:
    return sample_sum(metrics_url, "infra_worker_leading", worker="poller") == 1


def published(metrics_url: str) -> float:
    return sample_sum(metrics_url, "infra_broadcasts_total", kind="metrics")


def fresh_snapshot(newer_than: float) -> Snapshot | None:
    snapshot = latest("metrics")
    return snapshot if snapshot and snapshot["ts"] > newer_than else None


@pytest.mark.usefixtures("test_cache")
def test_a_prometheus_outage_makes_the_snapshot_stale_and_the_poller_keeps_going(
    devstack: Devstack, start_process: StartProcess, prometheus_proxy: PrometheusProxy
) -> None:
    # The outage is this poller's alone: its Prometheus is a proxy that the test cuts,
    # while the shared one goes on serving `make run`.
    proc, metrics_url = start_poller(devstack, start_process, PROMETHEUS_URL=prometheus_proxy.url)
    wait_for("the poller leading", lambda: leading(metrics_url), timeout=20)
    started = time.time()
    wait_for(
        "a fresh snapshot",
        lambda: (s := fresh_snapshot(started)) and not s["stale"] and s,
        timeout=30,
    )
    try:
        prometheus_proxy.cut()
        down_at = time.time()
        stale = wait_for(
            "a stale snapshot",
            lambda: (s := fresh_snapshot(down_at)) and s["stale"] and s,
            timeout=20,
        )
        assert stale["pods"] == {"running": None, "total": None}
        assert stale["cpu"]["used_percent"] is None
        assert stale["nodes"] == []
        since = stale["stale_since"]
        assert down_at - 2 <= since <= stale["ts"]
        # Rounds go on, every one stale since the same moment.
        later = wait_for(
            "later stale rounds",
            lambda: (s := fresh_snapshot(stale["ts"] + 2)) and s,
            timeout=20,
        )
        assert later["stale"]
        assert later["stale_since"] == since
        assert proc.poll() is None
        assert leading(metrics_url)
    finally:
        prometheus_proxy.mend()
    up_at = time.time()
    recovered = wait_for(
        "a fresh snapshot after Prometheus is back",
        lambda: (s := fresh_snapshot(up_at)) and not s["stale"] and s,
        timeout=60,
    )
    assert recovered["stale_since"] is None
    assert recovered["pods"]["total"]
    assert proc.poll() is None


@pytest.mark.usefixtures("test_cache")
def test_of_two_pollers_exactly_one_publishes_and_the_other_takes_over(
    devstack: Devstack, start_process: StartProcess
) -> None:
    first, first_url = start_poller(devstack, start_process)
    second, second_url = start_poller(devstack, start_process)
    pollers = {first_url: first, second_url: second}
    wait_for(
        "one of the two pollers leading",
        lambda: leading(first_url) != leading(second_url),
        timeout=20,
    )
    leader_url = first_url if leading(first_url) else second_url
    standby_url = second_url if leader_url == first_url else first_url
    # Rounds go by (two published by the leader) while the other stands by.
    wait_for("two rounds published", lambda: published(leader_url) >= 2, timeout=10, every=0.25)
    assert published(standby_url) == 0
    assert not leading(standby_url)

    # A leader that dies without releasing the lock: the standby leads once the lock's
    # TTL has run out (it asks every STANDBY_RETRY_S), and publishes at once.
    os.kill(pollers[leader_url].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for("the standby leading", lambda: leading(standby_url), timeout=30, every=0.25)
    assert time.monotonic() - killed_at < Command.lock_ttl_s + STANDBY_RETRY_S + 2
    wait_for("the standby publishing", lambda: published(standby_url) > 0, timeout=10, every=0.25)
    assert fresh_snapshot(time.time() - 3)
