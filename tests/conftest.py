"""Fixtures shared by every test folder: the real local stack and app processes on it.

Integration and browser tests ask for `devstack`. When the stack is not running they skip
on a laptop, but under CI=true they fail: a CI run that silently skipped the real-service
tests would prove nothing.

The suite shares the stack with a running `make run` and must never break it: app
processes a test starts work on the namespace `chaos-test` (devstack/up makes it a copy of
`chaos-demo`, with its own ServiceAccount, token and RoleBinding), never on `chaos-demo`,
and each user of Redis has a database of its own, from `RedisDb` below.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum, unique
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("DEVSTACK_STATE", ROOT / ".devstack"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# The namespace devstack/up sets aside for the test suite (and its chaos-monkey account).
TEST_NAMESPACE = "chaos-test"
SELECTOR = "app=chaos-demo"


@unique
class RedisDb(IntEnum):
    """Every Redis database on the devstack's server, and the one user of each.

    Users that share one would see each other's leader locks, budgets and frames: a
    poller of one suite would lead for another's. `@unique` refuses two names for one
    number, and tests/test_redis_dbs.py that any number is written outside this table.
    """

    APP = 0  # `make run`: the app's REDIS_URL in .devstack/env
    INTEGRATION = 15  # the default for app processes tests start (Devstack.redis_url)
    DASHBOARD_POLLER = 14  # tests/integration/test_dashboard_poller.py, its pollers' lock
    DASHBOARD_WEBSOCKET = 9  # tests/integration/test_dashboard_websocket.py
    E2E_DASHBOARD = 13  # tests/e2e/test_dashboard.py
    E2E_CHAOS = 12  # tests/e2e/test_chaos.py
    SIDE_BY_SIDE = 7  # tests/integration/test_side_by_side.py's own scenario processes
    BENCH_CHAOS_LATENCY = 11  # bench/chaos_latency.py
    BENCH_WS_FANOUT = 6  # bench/ws_fanout.py


# TEST_REDIS_DB moves the integration default, so two checkouts' suites can share a Redis.
TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", str(int(RedisDb.INTEGRATION))))


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


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


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


@dataclass
class Devstack:
    env: dict[str, str]
    # SQLite file shared by every app process a test starts (web, watcher), migrated once.
    database_url: str = ""

    @property
    def prometheus_url(self) -> str:
        return self.env["PROMETHEUS_URL"]

    @property
    def redis_url(self) -> str:
        """The integration tests' database (RedisDb.INTEGRATION, or TEST_REDIS_DB)."""
        return self.redis_db(TEST_REDIS_DB)

    def redis_db(self, db: int) -> str:
        """The URL of one database of the devstack's Redis: take `db` from RedisDb."""
        base = self.env["REDIS_URL"].rsplit("/", 1)[0]
        return f"{base}/{int(db)}"

    @property
    def namespace(self) -> str:
        """The namespace tests break: `chaos-test`, never `make run`'s `chaos-demo`."""
        return self.env["DEVSTACK_TEST_NAMESPACE"]

    @property
    def chaos_kubeconfig(self) -> str:
        """The test namespace's chaos-monkey ServiceAccount, as app processes of tests use."""
        return self.env["DEVSTACK_TEST_KUBECONFIG"]

    @property
    def app_kubeconfig(self) -> str:
        """`make run`'s own: chaos-demo's chaos-monkey. For reading only, in tests."""
        return self.env["KUBECONFIG"]

    @property
    def admin_kubeconfig(self) -> str:
        return self.env["DEVSTACK_ADMIN_KUBECONFIG"]

    def kubectl(
        self, *args: str, admin: bool = True, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        config = self.admin_kubeconfig if admin else self.chaos_kubeconfig
        return subprocess.run(
            [self.env["DEVSTACK_KUBECTL"], "--kubeconfig", config, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def app_env(self, **overrides: str) -> dict[str, str]:
        """The environment an app process gets: the stack's, pointed at the test
        namespace, its ServiceAccount and the test Redis database; then `overrides`."""
        env = {**os.environ, **self.env, "REDIS_URL": self.redis_url}
        env["KUBECONFIG"] = self.chaos_kubeconfig
        env["CHAOS_NAMESPACE"] = self.namespace
        env["DATABASE_URL"] = self.database_url
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(overrides)
        return env


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.2)


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


def daphne_command(port: int) -> list[str]:
    """The web process exactly as the Procfile runs it, on a port of the test's choosing.

    Read from the Procfile, so tests start daphne with the same options (its listen
    backlog above all) as `make run`, and cannot drift from it.
    """
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    program, *args = shlex.split(line.removeprefix("web:"))
    endpoint = [i for i, arg in enumerate(args) if arg.startswith("tcp:port=8000:")]
    if program != "daphne" or len(endpoint) != 1:
        raise ValueError(f"the Procfile's web line is not daphne on tcp:port=8000: {line}")
    args[endpoint[0]] = args[endpoint[0]].replace("tcp:port=8000:", f"tcp:port={port}:", 1)
    return [sys.executable, "-m", "daphne", *args]


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


def manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]
