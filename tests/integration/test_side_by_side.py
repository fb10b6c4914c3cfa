"""`make test` beside `make run`: the suite's destructive scenarios leave the running app
alone. The app is started as `make run` starts it (honcho, the Procfile, .devstack/env),
unless a `make run` already serves 127.0.0.1:8000, which is then the one watched; the
destructive modules run meanwhile in a pytest of their own; throughout, the app's watcher
and poller must lead and publish, its page answer, and the watcher see no 401.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from stackkit.stack import ROOT, STATE_DIR, Devstack
from tests.conftest import until
from tests.integration.scrape import sample_sum

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

APP = "http://127.0.0.1:8000"
# The Procfile's METRICS_PORTs of the poller and the watcher.
POLLER_METRICS = "http://127.0.0.1:9811/metrics"
WATCHER_METRICS = "http://127.0.0.1:9812/metrics"
DEMO = "chaos-demo"
# What breaks things: deletes the RoleBinding and scales (test_chaos_api), cuts
# Prometheus and scales (test_dashboard_poller), stops, kills and restarts stacks
# (test_devstack), reruns devstack/up (test_stack), kills pods (test_chaos_watch).
DESTRUCTIVE = [
    "tests/integration/test_chaos_api.py",
    "tests/integration/test_dashboard_poller.py",
    "tests/integration/test_devstack.py",
    "tests/integration/test_stack.py",
    "tests/integration/test_chaos_watch.py",
]
# Longest a healthy poller goes between two published rounds (POLL_INTERVAL is 5 s;
# a round may wait out a slow query's timeout on a busy machine).
MAX_ROUND_GAP_S = 30


def answering(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def running_app(devstack: Devstack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The app of `make run`, on 8000; yields the file its output goes to."""
    if answering(f"{APP}/healthz"):
        # A developer's `make run`: watch it, never stop it. Its output is in their terminal.
        yield tmp_path_factory.mktemp("app") / "not-ours.log"
        return
    log_path = tmp_path_factory.mktemp("app") / "honcho.log"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env['PATH']}"
    honcho = [str(ROOT / ".venv" / "bin" / "honcho"), "-e", str(STATE_DIR / "env")]
    subprocess.run(
        [*honcho, "run", sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with log_path.open("wb") as log:
        app = subprocess.Popen(
            [*honcho, "start"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        until(
            lambda: (
                answering(f"{APP}/healthz")
                and answering(POLLER_METRICS)
                and answering(WATCHER_METRICS)
            ),
            timeout=90,
            what="the app's web, poller and watcher",
        )
        yield log_path
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        try:
            app.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
            app.wait(timeout=10)


@dataclass
class Health:
    """What a watcher of the running app saw, sampled every second."""

    problems: list[str] = field(default_factory=list)
    rounds: list[tuple[float, float]] = field(default_factory=list)
    samples: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        now = time.monotonic()
        try:
            if requests.get(f"{APP}/infra", timeout=5).status_code != 200:
                self.problems.append(f"{now:.0f}: /infra not 200")
            if sample_sum(WATCHER_METRICS, "infra_worker_leading", worker="watcher") != 1:
                self.problems.append(f"{now:.0f}: the watcher is not leading")
            if sample_sum(POLLER_METRICS, "infra_worker_leading", worker="poller") != 1:
                self.problems.append(f"{now:.0f}: the poller is not leading")
            published = sample_sum(POLLER_METRICS, "infra_broadcasts_total", kind="metrics")
            if not self.rounds or published > self.rounds[-1][1]:
                self.rounds.append((now, published))
        except requests.RequestException as exc:
            self.problems.append(f"{now:.0f}: {type(exc).__name__}: {exc}")
        self.samples += 1

    def run(self) -> None:
        while not self.stop.wait(1):
            self.sample()


def demo_state(devstack: Devstack) -> dict[str, str]:
    """What the running app relies on in chaos-demo: its size, its RoleBinding (by UID:
    deleted and re-created is a change), its ServiceAccount."""

    def get(*args: str) -> str:
        return devstack.kubectl("-n", DEMO, "get", *args).stdout

    return {
        "replicas": get("deployment", "chaos-demo", "-o", "jsonpath={.spec.replicas}"),
        "rolebinding": get("rolebinding", "chaos-monkey", "-o", "jsonpath={.metadata.uid}"),
        "serviceaccount": get("serviceaccount", "chaos-monkey", "-o", "jsonpath={.metadata.uid}"),
    }


def test_the_destructive_suites_leave_a_running_make_run_healthy(
    devstack: Devstack, running_app: Path
) -> None:
    before = demo_state(devstack)
    until(
        lambda: (
            sample_sum(WATCHER_METRICS, "infra_worker_leading", worker="watcher") == 1
            and sample_sum(POLLER_METRICS, "infra_worker_leading", worker="poller") == 1
        ),
        timeout=60,
        what="the app's watcher and poller leading",
    )
    health = Health()
    watcher = threading.Thread(target=health.run, daemon=True)
    watcher.start()
    try:
        suites = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DESTRUCTIVE],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    finally:
        health.stop.set()
        watcher.join(timeout=30)
    # The summary lines name what failed; the whole output can be megabytes of one test's
    # failure message.
    summary = [
        line[:300] for line in suites.stdout.splitlines() if line[:6] in ("FAILED", "ERROR ")
    ]
    assert suites.returncode == 0, "\n".join(summary) or suites.stdout[-2000:]

    assert health.samples > 30
    assert health.problems == []
    gaps = [b[0] - a[0] for a, b in zip(health.rounds, health.rounds[1:], strict=False)]
    assert len(health.rounds) > 5
    assert max(gaps) < MAX_ROUND_GAP_S, f"the poller stopped publishing for {max(gaps):.0f} s"
    assert demo_state(devstack) == before
    if running_app.exists():
        log = running_app.read_text(errors="replace")
        # The app's ServiceAccount token and RoleBinding stayed good all along.
        assert "HTTP 401" not in log
        assert "HTTP 403" not in log
