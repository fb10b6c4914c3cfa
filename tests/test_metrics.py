"""The app's own metrics: /metrics for the scraper only, and the workers' METRICS_PORT."""

from __future__ import annotations

import socket
from typing import ClassVar

import pytest
import requests
from django.core.management.base import CommandError
from django.test import Client, override_settings
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from runtime import worker
from runtime.worker import WorkerCommand
from stackkit.stack import free_port


def metric_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def test_metrics_exposes_the_app_series_to_a_local_scraper() -> None:
    response = Client().get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    names = metric_names(response.content.decode())
    assert {
        "infra_chaos_attempts",
        "infra_chaos_recovery_seconds",
        "infra_open_websockets",
        "infra_broadcasts",
        "infra_poll_duration_seconds",
        "infra_poll_failures",
        "infra_websockets_refused",
        "infra_websockets_closed",
    } <= names


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "status"),
    [
        ("10.244.3.9", None, 0, 200),  # Prometheus in the cluster, scraping the pod
        # The same behind an ingress: a scrape does not come through the proxy, so it
        # carries no X-Forwarded-For (the proxy always adds one).
        ("10.244.3.9", None, 1, 200),
        ("203.0.113.7", None, 1, 404),
        ("203.0.113.7", None, 0, 404),  # a visitor straight to the port
        ("10.244.0.5", "198.51.100.3", 1, 404),  # a visitor through the ingress
        ("10.244.0.5", "10.1.2.3", 1, 200),  # an in-cluster client through the ingress
        # A visitor cannot pass for a pod by writing the header themselves.
        ("10.244.0.5", "10.1.2.3, 198.51.100.3", 1, 404),
    ],
)
def test_metrics_are_not_for_the_public(
    remote: str, forwarded: str | None, trusted: int, status: int
) -> None:
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    with override_settings(TRUSTED_PROXY_COUNT=trusted):
        response = Client().get("/metrics", REMOTE_ADDR=remote, **headers)
    assert response.status_code == status


def test_metrics_is_read_only() -> None:
    assert Client().post("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 405


class Idle(WorkerCommand):
    lock_name = "test-idle"


def test_worker_serves_its_metrics_on_metrics_port() -> None:
    port = free_port()
    with override_settings(METRICS_PORT=port, METRICS_ADDR="127.0.0.1"):
        Idle().serve_metrics()
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "infra_poll_duration_seconds" in metric_names(text)


def test_worker_without_metrics_port_serves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(worker, "start_http_server", lambda *a, **k: calls.append(a))
    with override_settings(METRICS_PORT=0):
        Idle().serve_metrics()
    assert calls == []


class FakeLock:
    """A leader lock whose answers the test decides, with state of its own (not sharing
    anything with the real LeaderLock's renewal): granted at the first ask, then lost when
    the test drops `held`, as the heartbeat does when a renewal fails; never granted again."""

    instances: ClassVar[list[FakeLock]] = []

    def __init__(self, name: str, *, ttl_s: float) -> None:
        self.held = False
        self.asks = 0
        FakeLock.instances.append(self)

    def acquire_or_renew(self) -> bool:
        self.asks += 1
        self.held = self.asks == 1
        return self.held

    def release(self) -> None:
        self.held = False


def leading_gauge(worker_name: str) -> float | None:
    return REGISTRY.get_sample_value("infra_worker_leading", {"worker": worker_name})


def test_worker_reports_whether_it_leads(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float | None] = []

    class Leading(WorkerCommand):
        lock_name = "test-leading"
        lock_ttl_s = 100.0  # keeps the heartbeat thread asleep for the whole test

        def step(self) -> bool:
            seen.append(leading_gauge("test-leading"))
            if len(seen) == 2:
                FakeLock.instances[-1].held = False  # lost after the second round
            return True

    monkeypatch.setattr(worker, "LeaderLock", FakeLock)
    monkeypatch.setattr(worker, "STANDBY_RETRY_S", 0.05)
    # Keep pytest's own Ctrl-C handling.
    monkeypatch.setattr(worker.signal, "signal", lambda *_: None)
    with override_settings(METRICS_PORT=0):
        Leading().handle(once=False, run_for=0.5)
    assert seen == [1.0, 1.0]  # leading while it stepped
    assert FakeLock.instances[-1].asks >= 2, "asked again after losing it, and refused"
    assert leading_gauge("test-leading") == 0.0  # standing by, then stopped


def test_a_taken_metrics_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            override_settings(METRICS_PORT=port, METRICS_ADDR="127.0.0.1"),
            pytest.raises(CommandError, match=f"METRICS_PORT: cannot serve metrics on .*:{port}"),
        ):
            Idle().serve_metrics()
