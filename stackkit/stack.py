"""The local stack as seen from outside: its env file, its Redis databases and who uses
each, the app's processes as the Procfile starts them, and a visitor of the chaos button.

Whatever starts app processes against the stack (the suite, a benchmark) works on the
namespace `chaos-test` (devstack/up makes it a copy of `chaos-demo`, with its own
ServiceAccount, token and RoleBinding), never on the `chaos-demo` a running `make run`
shows, and takes its Redis database from `RedisDb`.
"""

from __future__ import annotations

import os
import shlex
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import IntEnum, unique
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("DEVSTACK_STATE", ROOT / ".devstack"))
# The namespace devstack/up sets aside for the test suite (and its chaos-monkey account).
TEST_NAMESPACE = "chaos-test"
SELECTOR = "app=chaos-demo"
# Any 32 alphanumerics make a valid CSRF secret: the check is cookie == header
# (double submit), which a browser page does with the cookie Django set.
CSRF_TOKEN = "chaostestchaostestchaostestchaos"


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


def manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def chaos_session(base_url: str) -> requests.Session:
    """A visitor with a CSRF cookie and header, as the page's script sends them."""
    session = requests.Session()
    session.cookies.set("csrftoken", CSRF_TOKEN, domain="127.0.0.1")
    session.headers["X-CSRFToken"] = CSRF_TOKEN
    session.headers["Referer"] = f"{base_url}/infra"
    return session


def events(devstack: Devstack) -> list[dict[str, Any]]:
    """ChaosEvent rows of the session's app database, newest first."""
    path = Path(devstack.database_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM chaos_chaosevent ORDER BY id DESC").fetchall()
    return [dict(row) for row in rows]
