"""The devstack scripts themselves, each defect that once bit a newcomer pinned down.

Everything that stops or kills runs on a stack of its own (its own DEVSTACK_STATE and
ports), so the shared stack and a `make run` on it never notice.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from stackkit.stack import STATE_DIR, Devstack
from tests.conftest import until
from tests.integration.conftest import OwnStack, group_members, own_stack

pytestmark = pytest.mark.integration


def test_up_without_postgresql_says_what_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "no-postgresql"
    empty.mkdir()
    with own_stack("pgless") as stack:
        result = stack.script("up", "postgres", DEVSTACK_POSTGRES_LIB=str(empty))
    assert result.returncode != 0
    assert "PostgreSQL server not found" in result.stderr
    assert str(empty) in result.stderr


def test_the_files_holding_secrets_are_for_their_owner_only(devstack: Devstack) -> None:
    for name in ("env", "secret-key", "kubeconfig-chaos", "kubeconfig-chaos-test", "chaos-token"):
        mode = stat.S_IMODE((STATE_DIR / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    assert "DJANGO_SECRET_KEY=" in (STATE_DIR / "env").read_text()


@pytest.fixture
def scratch() -> Iterator[OwnStack]:
    """An empty stack of its own, for the scripts' bookkeeping."""
    with own_stack("scratch") as stack:
        yield stack


def test_down_stops_a_shell_loop_with_its_sleep(scratch: OwnStack) -> None:
    # The token renewal loop is a shell waiting in `sleep 1200`: stopping only the shell
    # would leave the sleep behind, orphaned.
    stack = scratch
    started = stack.bash("start_bg token bash -c 'while sleep 1200; do :; done'; sleep 0.5")
    assert started.returncode == 0, started.stderr
    group = stack.pid("token")
    assert any("sleep 1200" in p for p in group_members(group))
    result = stack.script("down", "token")
    assert result.returncode == 0, result.stderr
    assert group_members(group) == []
    assert not (stack.state / "pids" / "token.pid").exists()


def test_a_stale_pidfile_is_neither_trusted_nor_signalled(scratch: OwnStack) -> None:
    stack = scratch
    pids = stack.state / "pids"
    pids.mkdir(parents=True)
    # The PID of a process that is alive but is not the one recorded (this test), as after
    # a reboot or once the kernel has handed the number to someone else.
    (pids / "prometheus.pid").write_text(f"{os.getpid()}\n")
    (pids / "prometheus.pid.start").write_text("1\n")
    answer = stack.bash("running prometheus && echo yes || echo no")
    assert answer.stdout.strip() == "no"
    result = stack.script("down", "prometheus")
    assert result.returncode == 0, result.stderr
    assert not (pids / "prometheus.pid").exists(), "a stale pidfile is cleaned up"
    # ... and this process, whose PID it held, was not signalled (or the test would die).
    # The recorded process itself is recognised.
    mine = stack.bash("start_bg probe sleep 30; running probe && echo yes; stop_pid probe")
    assert mine.stdout.strip() == "yes", mine.stderr


def test_a_process_that_keeps_failing_is_restarted_with_a_growing_backoff(
    scratch: OwnStack,
) -> None:
    started = scratch.bash("start_supervised flapping false")
    assert started.returncode == 0, started.stderr
    log = scratch.state / "logs" / "flapping.log"
    until(lambda: scratch.restarts("flapping") >= 3, timeout=30, what="three restarts")
    text = log.read_text()
    assert "restart 1 in 1 s" in text
    assert "restart 2 in 2 s" in text
    assert "restart 3 in 4 s" in text
    assert "exited with status 1 after 0 s" in text


@pytest.fixture(scope="module")
def small_stack() -> Iterator[OwnStack]:
    """Redis, the node exporters and Prometheus of a stack of its own, supervised."""
    with own_stack("small", "redis", "node-exporter", "prometheus") as stack:
        yield stack


def prometheus_ready(stack: OwnStack) -> bool:
    try:
        url = f"http://127.0.0.1:{stack.port(9090)}/-/ready"
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_a_killed_process_is_restarted_and_the_restart_is_logged(small_stack: OwnStack) -> None:
    until(lambda: prometheus_ready(small_stack), timeout=60, what="prometheus ready")
    before = small_stack.child("prometheus")
    os.kill(before, signal.SIGKILL)
    until(
        lambda: small_stack.restarts("prometheus") >= 1 and prometheus_ready(small_stack),
        timeout=60,
        what="prometheus restarted by its supervisor",
    )
    assert small_stack.child("prometheus") != before
    log = (small_stack.state / "logs" / "prometheus.log").read_text(errors="replace")
    assert "[supervise" in log
    assert "exited with status 137" in log
    assert "restart 1 in 1 s" in log
    status = small_stack.script("status")
    assert "supervised, 1 restarts" in status.stdout


def test_up_again_keeps_every_process(small_stack: OwnStack) -> None:
    before = {f.name: f.read_text() for f in (small_stack.state / "pids").glob("*.pid")}
    small_stack.up("redis", "node-exporter", "prometheus")
    after = {f.name: f.read_text() for f in (small_stack.state / "pids").glob("*.pid")}
    assert after == before


def test_down_leaves_nothing_running(small_stack: OwnStack) -> None:
    groups = small_stack.groups()
    children = [small_stack.child(n) for n in ("redis", "prometheus", "node-exporter-0")]
    assert len(groups) >= 5  # redis, three node exporters, prometheus
    result = small_stack.script("down", timeout=120)
    assert result.returncode == 0, result.stderr
    assert {g: group_members(g) for g in groups if group_members(g)} == {}
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not list((small_stack.state / "pids").glob("*.pid"))
    assert not prometheus_ready(small_stack)


def test_status_runs_without_a_stack(scratch: OwnStack) -> None:
    result = scratch.script("status")
    assert result.returncode == 0, result.stderr
    assert "redis" in result.stdout


def test_down_without_a_stack_is_a_no_op(scratch: OwnStack) -> None:
    # Also with no devstack/node ever started: down asks it to stop, and it must not fail.
    result = scratch.script("down")
    assert result.returncode == 0, result.stderr
