"""PostgreSQL connections under a crowd: the web process keeps none once it has answered.

Two real daphne web processes on a database of this test's own, on the devstack's
PostgreSQL; 200 page views and presses at the same moment. Django runs each request's
sync view in a thread of its own, so persistent connections would be left behind by
threads that are gone; with CONN_MAX_AGE=0 each request closes its own.

The presses run with GUARD_ALWAYS_REFUSES: the guard refuses every one (and writes its row),
so the shared cluster is left alone while the database is used.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import redis
import requests

from chaos.selectors import HISTORY_KEY
from stackkit.stack import ROOT, Devstack, chaos_session, manage
from tests.chaos.stack import GUARD_ALWAYS_REFUSES, flush_test_redis, press
from tests.conftest import unavailable

pytestmark = pytest.mark.integration

WebServer = Callable[..., str]
PAGE_VIEWS = 100
PRESSES = 100
# What may stay open once every answer is in: nothing is still being served, so no
# connection should be; two leave room for the monitor's timing, nothing more.
AFTER_MAX = 2


@pytest.fixture
def postgres_url(devstack: Devstack) -> Iterator[str]:
    """A fresh, migrated database on the devstack's PostgreSQL; dropped afterwards."""
    base = devstack.env.get("DEVSTACK_POSTGRES_URL")
    if not base:
        unavailable("DEVSTACK_POSTGRES_URL is not in .devstack/env")
    assert base is not None
    name = f"infra_conn_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {base}: {exc}")
    url = f"{base.rsplit('/', 1)[0]}/{name}"
    try:
        subprocess.run(
            manage("migrate", "--noinput"),
            cwd=ROOT,
            env=devstack.app_env(DATABASE_URL=url),
            check=True,
            capture_output=True,
        )
        yield url
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connections_to(url: str, probe: psycopg.Connection) -> int:
    """Backends connected to the test's database, not counting the probe itself."""
    row = probe.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (url.rsplit("/", 1)[1],),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_crowd_leaves_no_database_connections_open(
    devstack: Devstack, web_server: WebServer, postgres_url: str
) -> None:
    flush_test_redis(devstack)
    overrides = {
        "DATABASE_URL": postgres_url,
        **GUARD_ALWAYS_REFUSES,
        "TRUSTED_PROXY_COUNT": "1",
        "CHAOS_RATE_PER_IP": "1000/m",
        "CHAOS_BURST_PER_IP": "1000/10s",
        "CHAOS_RATE_GLOBAL": "100000/m",
    }
    urls = [web_server(**overrides), web_server(**overrides)]
    for url in urls:
        assert requests.get(f"{url}/infra", timeout=10).status_code == 200
    # A cold history cache: the page views compute it, so they use the database too.
    redis.Redis.from_url(devstack.redis_url).delete(f"infra:1:{HISTORY_KEY}")

    probe = psycopg.connect(postgres_url, autocommit=True, connect_timeout=5)
    peak = 0
    stop = threading.Event()

    def monitor() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, connections_to(postgres_url, probe))
            time.sleep(0.02)

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    start = threading.Barrier(PAGE_VIEWS + PRESSES)
    sessions = {url: chaos_session(url) for url in urls}

    def one(i: int) -> int:
        url = urls[i % 2]
        start.wait()
        if i < PAGE_VIEWS:
            return requests.get(f"{url}/infra", timeout=60).status_code
        address = f"198.18.{i // 250}.{i % 250 + 1}"
        return press(sessions[url], url, **{"X-Forwarded-For": address}).status_code

    try:
        with ThreadPoolExecutor(PAGE_VIEWS + PRESSES) as pool:
            statuses = list(pool.map(one, range(PAGE_VIEWS + PRESSES)))
        # Every answer is in; give the last requests' cleanup a moment.
        deadline = time.monotonic() + 3
        after = connections_to(postgres_url, probe)
        while after > AFTER_MAX and time.monotonic() < deadline:
            time.sleep(0.1)
            after = connections_to(postgres_url, probe)
    finally:
        stop.set()
        watcher.join(timeout=5)
    with probe:
        rows = probe.execute("SELECT count(*) FROM chaos_chaosevent").fetchone()

    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    print(f"statuses {counts}; connections: peak {peak}, after {after}; rows {rows}")
    assert statuses[:PAGE_VIEWS] == [200] * PAGE_VIEWS
    assert set(statuses[PAGE_VIEWS:]) <= {409}, counts  # refused by the guard, or busy
    assert rows is not None
    assert rows[0] >= 1, "no press reached the database"
    assert after <= AFTER_MAX
