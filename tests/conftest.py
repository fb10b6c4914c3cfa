"""Fixtures shared by every test folder: the real local stack and app processes on it.

Integration and browser tests ask for `devstack`. When the stack is not running they skip
on a laptop, but under CI=true they fail: a CI run that silently skipped the real-service
tests would prove nothing.

The suite shares the stack with a running `make run` and must never break it: what the
stack is, which namespace tests break and which Redis database each user has, is said
once in stackkit/stack.py, which the benchmarks read too, and tests import from there.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from stackkit.stack import (
    ROOT,
    STATE_DIR,
    TEST_NAMESPACE,
    Devstack,
    daphne_command,
    free_port,
    manage,
    read_env_file,
    wait_http,
)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def until(
    check: Callable[[], Any],
    *,
    timeout: float,
    what: str | Callable[[], str],
    every: float = 0.2,
) -> Any:
    """Polls `check` until it returns something truthy, and returns that; fails naming
    `what` (or what it returns, computed only then) and the last value seen. The one way
    tests wait for an event, never a sleep."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            said = what if isinstance(what, str) else what()
            raise AssertionError(f"{said}: not within {timeout} s (last: {last!r})")
        time.sleep(every)


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and the real stack is unavailable: {reason}", pytrace=False)
    pytest.skip(f"real stack unavailable ({reason}); run `devstack/up` first")


async def auntil(
    check: Callable[[], Any], *, within_s: float = 5, what: str, every: float = 0.01
) -> Any:
    """`until` for async tests: yields to the event loop between looks."""
    import asyncio

    deadline = time.monotonic() + within_s
    while not (last := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s} s (last: {last!r})")
        await asyncio.sleep(every)
    return last


async def close_code(communicator: Any) -> int | None:
    """The close code a websocket server (a channels WebsocketCommunicator's app) sent
    within 0.1 s, or None if it kept the socket open.

    Reads the output queue directly: receive_output's timeout would cancel the app, which
    is exactly the "connection still open" state this wants to observe; hence the short
    wait, an observation window rather than a wait for an event."""
    import asyncio

    await asyncio.sleep(0.1)
    while not communicator.output_queue.empty():
        message = communicator.output_queue.get_nowait()
        if message["type"] == "websocket.close":
            return int(message.get("code", 1000))
    return None


@pytest.fixture(scope="session")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Devstack:
    env_file = STATE_DIR / "env"
    if not env_file.exists():
        unavailable(f"{env_file} does not exist")
    stack = Devstack(read_env_file(env_file))
    if stack.env.get("DEVSTACK_TEST_NAMESPACE") != TEST_NAMESPACE:
        unavailable(f"{env_file} names no {TEST_NAMESPACE} namespace: run `devstack/up` again")
    try:
        requests.get(f"{stack.prometheus_url}/-/ready", timeout=3).raise_for_status()
    except requests.RequestException as exc:
        unavailable(f"Prometheus at {stack.prometheus_url}: {exc}")
    import redis

    try:
        redis.Redis.from_url(stack.redis_url, socket_timeout=3).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {stack.redis_url}: {exc}")
    result = stack.kubectl("get", "--raw", "/readyz", check=False, timeout=15)
    if result.returncode != 0:
        unavailable(f"kube-apiserver: {result.stderr.strip()}")
    stack.database_url = f"sqlite:///{tmp_path_factory.mktemp('appdb') / 'app.sqlite3'}"
    subprocess.run(
        manage("migrate", "--noinput"),
        cwd=ROOT,
        env=stack.app_env(),
        check=True,
        capture_output=True,
    )
    return stack


StartProcess = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[StartProcess]:
    """Starts an app process (manage.py command or daphne) and stops it after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], env: dict[str, str], name: str = "proc") -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}-{len(started)}.log").open("wb")
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def web_server(devstack: Devstack, start_process: StartProcess) -> Callable[..., str]:
    """Starts a daphne web process on a free port; returns its base URL."""

    def start(**overrides: str) -> str:
        port = free_port()
        start_process(
            daphne_command(port),
            devstack.app_env(**overrides),
            name=f"web-{port}",
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz")
        return url

    return start
