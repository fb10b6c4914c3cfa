"""Fixtures of the integration layer: a healthy test namespace, a Prometheus of one's own.

Everything here works on the test namespace and the test's own processes, so that a
running `make run` beside the suite is never disturbed (tests/integration/
test_side_by_side.py checks that it is not).
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests
from django.test import override_settings

from tests.chaos.stack import flush_test_redis, wait_healthy
from tests.conftest import ROOT, Devstack, free_port, read_env_file


@pytest.fixture
def healthy_cluster(devstack: Devstack) -> Iterator[None]:
    """A clean test Redis database and the test namespace 3/3 Ready, before and after.

    Modules that change pods use it: `pytestmark = pytest.mark.usefixtures(...)`."""
    flush_test_redis(devstack)
    wait_healthy(devstack)
    yield
    wait_healthy(devstack)


class _Server(http.server.ThreadingHTTPServer):
    # A poll round sends all its queries at once: the default backlog of 5 would drop
    # some connections, to be retried a second later, outside the round.
    request_queue_size = 128


@dataclass
class PrometheusProxy:
    """An HTTP proxy in front of the devstack's Prometheus, for one test's processes.

    `queries` counts the instant queries that came through it, so a test counts its own
    poller's and nobody else's (a running `make run` polls the same Prometheus). `cut()`
    makes it refuse connections, a Prometheus outage for this test's processes only;
    `mend()` undoes it, on the same port."""

    upstream: str
    url: str = ""
    queries: int = 0
    _server: _Server | None = None
    _port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._forward("GET", None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._forward("POST", self.rfile.read(length))

            def _forward(self, method: str, body: bytes | None) -> None:
                if self.path.split("?", 1)[0] == "/api/v1/query":
                    with proxy._lock:
                        proxy.queries += 1
                headers = {"Content-Type": self.headers.get("Content-Type", "")} if body else {}
                upstream = requests.request(
                    method, proxy.upstream + self.path, data=body, headers=headers, timeout=10
                )
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", upstream.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self._port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def cut(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def mend(self) -> None:
        if self._server is None:
            self.start()


@pytest.fixture
def prometheus_proxy(devstack: Devstack) -> Iterator[PrometheusProxy]:
    proxy = PrometheusProxy(upstream=devstack.prometheus_url)
    proxy.start()
    yield proxy
    proxy.cut()


@dataclass
class OwnStack:
    """A second devstack beside the shared one, for tests that stop, kill or pause what
    they start: its own DEVSTACK_STATE (pidfiles, logs, kwok cluster), its own cluster
    name, and its fixed ports moved by DEVSTACK_PORT_OFFSET. `make run` never sees it."""

    state: Path
    name: str
    port_offset: int = 20000

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_")}
        env.update(
            DEVSTACK_STATE=str(self.state),
            DEVSTACK_CLUSTER=self.name,
            DEVSTACK_PORT_OFFSET=str(self.port_offset),
        )
        return env

    def script(
        self, name: str, *args: str, timeout: float = 600, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Runs devstack/<name> on this stack; the caller checks the return code."""
        return subprocess.run(
            [str(ROOT / "devstack" / name), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def bash(self, code: str) -> subprocess.CompletedProcess[str]:
        """Runs `code` with devstack/lib.sh sourced, on this stack."""
        return subprocess.run(
            ["bash", "-c", f"set -euo pipefail; . {ROOT / 'devstack' / 'lib.sh'}; {code}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def up(self, *components: str) -> None:
        result = self.script("up", *components)
        assert result.returncode == 0, result.stderr[-3000:]

    def port(self, base: int) -> int:
        return base + self.port_offset

    def pid(self, name: str) -> int:
        """The PID recorded for `name` (for a supervised process: its supervisor)."""
        return int((self.state / "pids" / f"{name}.pid").read_text())

    def child(self, name: str) -> int:
        """The PID of the process a supervisor keeps running under `name`."""
        return int((self.state / "pids" / "children" / f"{name}.pid").read_text())

    def restarts(self, name: str) -> int:
        path = self.state / "pids" / "children" / f"{name}.restarts"
        return int(path.read_text()) if path.exists() else 0

    @property
    def cluster_dir(self) -> Path:
        return self.state / "kwok" / "clusters" / self.name

    def control_plane_pid(self, component: str) -> int:
        return int((self.cluster_dir / "pids" / f"{component}.pid").read_text())

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kubectl = read_env_file(self.state / "env")["DEVSTACK_KUBECTL"]
        return subprocess.run(
            [kubectl, "--kubeconfig", str(self.cluster_dir / "kubeconfig.yaml"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def groups(self) -> set[int]:
        """The process groups of everything this stack recorded (each started in its own)."""
        return {int(f.read_text()) for f in (self.state / "pids").glob("*.pid")}


def group_members(pgid: int) -> list[str]:
    """The processes still in a process group, with their command lines."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is the state (field 3); the process group is field 5.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{proc.name} {cmdline.strip()}")
    return members


@contextmanager
def own_stack(prefix: str, *components: str) -> Iterator[OwnStack]:
    """A stack of its own with `components` up (none: an empty state folder); on exit
    everything it started is stopped and its folder removed."""
    # Short paths: unix sockets under the state folder must fit in 108 bytes.
    state = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))
    stack = OwnStack(state=state, name=f"{prefix}-{uuid.uuid4().hex[:6]}")
    try:
        if components:
            stack.up(*components)
        yield stack
    finally:
        stack.script("down", timeout=180)
        # And whatever a test started by hand, outside the known components.
        stack.bash(
            'for f in "$PID_DIR"/*.pid; do [ -e "$f" ] || continue; '
            'stop_pid "$(basename "$f" .pid)"; done'
        )
        shutil.rmtree(state, ignore_errors=True)


class RedisServer:
    """A redis-server of one test's (or the soak's) own, on a free port: it may be stopped,
    restarted or locked down; the shared one never is."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return proc
            except redis.RedisError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise
                time.sleep(0.05)

    def restart(self) -> None:
        """Down and up again on the same port, its data gone, as a restarted pod's."""
        self.stop()
        self.proc = self._start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def layer_redis_url(devstack: Devstack) -> str:
    """The Redis this process publishes to: the web processes' own. A module whose web
    processes use a database of their own overrides this fixture."""
    return devstack.redis_url


@pytest.fixture
def layer_settings(layer_redis_url: str) -> Iterator[None]:
    """This process publishes as the poller would: to the real Redis of the web process."""
    with override_settings(
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": layer_redis_url,
                "KEY_PREFIX": "infra",
            }
        },
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [layer_redis_url], "prefix": "infra:ch"},
            }
        },
    ):
        yield


def big_pods_frame(pods: int) -> dict[str, object]:
    """A pods frame (docs/contract.md) of `pods` pods: the page and the snapshot then
    pass Django's 64 KiB response chunk, and daphne writes them in several."""
    return {
        "namespace": "chaos-test",
        "desired": pods,
        "ready": pods,
        "pods": [
            {
                "name": f"chaos-demo-{n:05d}-abcde",
                "status": "Running",
                "ready": True,
                "node": "Node 2",
                "age_s": 60,
            }
            for n in range(pods)
        ],
        "events": [],
    }
