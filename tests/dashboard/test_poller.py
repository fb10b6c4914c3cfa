from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import override_settings
from prometheus_client import REGISTRY

from dashboard import promql
from dashboard.management.commands.poll_metrics import Command
from dashboard.poller import HISTORY_REFRESH_S, MetricsPoller
from live.nodes import node_label
from live.publish import latest
from stackkit.stack import free_port
from tests.dashboard.promserver import FakePrometheus, matrix, serve, value, vector

GIB = 1024**3


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def healthy(prom: FakePrometheus) -> None:
    answers = {
        "pods_total": "4",
        "pods_running": "3",
        "cpu_used_percent": "21.5",
        "memory_used_percent": "50",
        "memory_used_bytes": str(2 * GIB),
        "memory_total_bytes": str(4 * GIB),
    }
    for name, number in answers.items():
        prom.set(promql.SCALARS[name], value(number))
    prom.set(
        promql.VECTORS["node_ready"],
        vector(({"node": "kwok-node-1"}, "1"), ({"node": "kwok-node-0"}, "1")),
    )
    prom.set(promql.VECTORS["node_memory_used"], vector(({"nodename": "kwok-node-0"}, str(GIB))))
    prom.set(
        promql.VECTORS["node_memory_total"], vector(({"nodename": "kwok-node-0"}, str(2 * GIB)))
    )
    prom.set_range(promql.HISTORY["cpu"], matrix([(1699998200.0, "20"), (1699998230.0, "NaN")]))
    prom.set_range(promql.HISTORY["memory"], matrix([(1699998200.0, "49.999")]))


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    yield from serve()


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    cache.clear()


def range_requests(prom: FakePrometheus) -> list[dict[str, str]]:
    return [r for r in prom.requests if r["path"] == "/api/v1/query_range"]


def test_a_round_against_a_healthy_prometheus(prom: FakePrometheus) -> None:
    healthy(prom)
    result = MetricsPoller(base_url=prom.url, clock=Clock()).poll()
    snapshot = result.snapshot
    assert not snapshot["stale"], result.missing
    assert snapshot["pods"] == {"running": 3, "total": 4}
    assert snapshot["cpu"] == {"used_percent": 21.5}
    assert [n["name"] for n in snapshot["nodes"]] == ["Node 1", "Node 2"]
    assert snapshot["nodes"][0]["memory_used_bytes"] == GIB
    assert snapshot["history"] == {"cpu": [[1699998200, 20.0]], "memory": [[1699998200, 50.0]]}
    # 30 minutes up to the last whole step, at the design's step.
    r = range_requests(prom)[0]
    assert float(r["end"]) == 1_700_000_000 // 30 * 30
    assert float(r["end"]) - float(r["start"]) == 1800
    assert r["step"] == "30"


def test_history_is_fetched_about_once_a_minute(prom: FakePrometheus) -> None:
    healthy(prom)
    clock = Clock()
    poller = MetricsPoller(base_url=prom.url, clock=clock)
    poller.poll()
    clock.now += 5
    second = poller.poll()
    assert len(range_requests(prom)) == 2  # cpu and memory, once
    assert second.snapshot["history"]["cpu"] == [[1699998200, 20.0]]
    clock.now += HISTORY_REFRESH_S
    poller.poll()
    assert len(range_requests(prom)) == 4


def test_a_failed_history_refresh_keeps_the_old_history_and_retries_next_round(
    prom: FakePrometheus,
) -> None:
    healthy(prom)
    clock = Clock()
    poller = MetricsPoller(base_url=prom.url, clock=clock)
    poller.poll()
    prom.range_answers.clear()  # range queries now fail
    clock.now += HISTORY_REFRESH_S
    failed = poller.poll()
    assert failed.snapshot["stale"]
    assert failed.missing == ("history",)
    assert failed.snapshot["history"]["cpu"] == [[1699998200, 20.0]]
    healthy(prom)
    clock.now += 5
    assert not poller.poll().snapshot["stale"]
    assert len(range_requests(prom)) == 6


def test_an_outage_is_stale_from_its_first_round_until_recovery() -> None:
    clock = Clock()
    poller = MetricsPoller(base_url=f"http://127.0.0.1:{free_port()}", clock=clock)
    first = poller.poll()
    clock.now += 5
    second = poller.poll()
    assert second.snapshot["stale"]
    assert second.snapshot["stale_since"] == first.snapshot["ts"]
    assert second.snapshot["pods"] == {"running": None, "total": None}
    json.dumps(second.snapshot, allow_nan=False)


def test_a_new_leader_keeps_the_stale_since_of_the_previous_one() -> None:
    poller = MetricsPoller(base_url=f"http://127.0.0.1:{free_port()}", clock=Clock(2000.0))
    poller.resume_from({"stale": True, "stale_since": 1000.0})
    assert poller.poll().snapshot["stale_since"] == 1000.0
    fresh = MetricsPoller(base_url="http://x", clock=Clock())
    for previous in (
        None,
        {"stale": False, "stale_since": None},
        {"stale": True, "stale_since": "x"},
    ):
        fresh.resume_from(previous)
        assert fresh.stale_since is None


# --- the command's step ----------------------------------------------------------------


def test_a_step_publishes_the_snapshot_and_the_node_labels(prom: FakePrometheus) -> None:
    healthy(prom)
    broadcasts = REGISTRY.get_sample_value("infra_broadcasts_total", {"kind": "metrics"}) or 0.0
    with override_settings(PROMETHEUS_URL=prom.url):
        assert Command().step() is True
    snapshot = latest("metrics")
    assert snapshot["pods"] == {"running": 3, "total": 4}
    assert snapshot["stale"] is False
    assert node_label("kwok-node-0") == "Node 1"
    assert node_label("kwok-node-1") == "Node 2"
    assert (
        REGISTRY.get_sample_value("infra_broadcasts_total", {"kind": "metrics"}) or 0.0
    ) == broadcasts + 1


def test_a_step_during_an_outage_publishes_stale_and_keeps_the_node_labels(
    prom: FakePrometheus,
) -> None:
    healthy(prom)
    command = Command()
    with override_settings(PROMETHEUS_URL=prom.url):
        command.step()
    failures = REGISTRY.get_sample_value("infra_poll_failures_total") or 0.0
    prom.answers.clear()
    prom.range_answers.clear()
    with override_settings(PROMETHEUS_URL=prom.url):
        assert command.step() is False
    snapshot = latest("metrics")
    assert snapshot["stale"] is True
    assert snapshot["cpu"]["used_percent"] is None
    assert node_label("kwok-node-0") == "Node 1"
    assert (REGISTRY.get_sample_value("infra_poll_failures_total") or 0.0) == failures + 1


def test_poll_metrics_once_from_the_command_line(prom: FakePrometheus) -> None:
    from django.core.management import call_command

    healthy(prom)
    with override_settings(PROMETHEUS_URL=prom.url):
        call_command("poll_metrics", "--once")
    assert latest("metrics")["pods"]["total"] == 4
