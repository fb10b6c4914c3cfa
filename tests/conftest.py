"""Fixtures shared by every test folder: the real local stack and app processes on it.

Integration and browser tests ask for `devstack`. When the stack is not running they skip
on a laptop, but under CI=true they fail: a CI run that silently skipped the real-service
tests would prove nothing.
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
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("DEVSTACK_STATE", ROOT / ".devstack"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Integration tests get a Redis database of their own so they never touch the one a
# running `make run` uses (database 0). TEST_REDIS_DB lets two suites run side by side.
TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "15"))


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
        base = self.env["REDIS_URL"].rsplit("/", 1)[0]
        return f"{base}/{TEST_REDIS_DB}"

    @property
    def chaos_kubeconfig(self) -> str:
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
        """The environment an app process gets: the stack's, test Redis db, overrides."""
        env = {**os.environ, **self.env, "REDIS_URL": self.redis_url}
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
