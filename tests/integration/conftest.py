"""Fixtures of the integration layer: a healthy test namespace, a Prometheus of one's own.

Everything here works on the test namespace and the test's own processes, so that a
running `make run` beside the suite is never disturbed (tests/integration/
test_side_by_side.py checks that it is not).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.test import override_settings

from stackkit.servers import PrometheusProxy, RedisServer
from stackkit.stack import ROOT, Devstack, read_env_file
from tests.chaos.stack import flush_test_redis, wait_healthy


@pytest.fixture
def healthy_cluster(devstack: Devstack) -> Iterator[None]:
    """A clean test Redis database and the test namespace 3/3 Ready, before and after.

    Modules that change pods use it: `pytestmark = pytest.mark.usefixtures(...)`."""
    flush_test_redis(devstack)
    wait_healthy(devstack)
    yield
    wait_healthy(devstack)


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
