"""The container image, run as k8s/app/ runs it, against the real local stack.

The image is the one `devstack/image` builds from the project's Dockerfile (rebuilt here
if its inputs changed). Every container gets exactly the securityContext of web.yaml —
read-only root, uid/gid 10001, all capabilities dropped, no privilege escalation, the
emptyDir at /tmp as a tmpfs — with the host's network, so it reaches the devstack's
Redis, Prometheus, PostgreSQL and apiserver on loopback, and listens on loopback only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import requests
import yaml
from websockets.sync.client import connect
from websockets.typing import Origin

from stackkit.stack import ROOT, Devstack, free_port, wait_http
from tests.conftest import unavailable

WEB = next(
    doc
    for doc in yaml.safe_load_all((ROOT / "k8s/app/web.yaml").read_text())
    if doc["kind"] == "Deployment"
)
POD_SPEC: dict[str, Any] = WEB["spec"]["template"]["spec"]
WEB_CONTAINER: dict[str, Any] = POD_SPEC["containers"][0]


def security_flags() -> list[str]:
    """podman flags for web.yaml's pod and container securityContext, nothing added."""
    pod, container = POD_SPEC["securityContext"], WEB_CONTAINER["securityContext"]
    flags = [f"--user={pod['runAsUser']}:{pod['runAsGroup']}"]
    if container["readOnlyRootFilesystem"]:
        flags.append("--read-only")
    # podman would otherwise give a read-only container writable /tmp, /var/tmp and /run:
    # in the pod only the manifest's volumes are writable.
    flags.append("--read-only-tmpfs=false")
    flags += [f"--cap-drop={cap}" for cap in container["capabilities"]["drop"]]
    if container["allowPrivilegeEscalation"] is False:
        flags += ["--security-opt", "no-new-privileges"]
    # seccompProfile RuntimeDefault is podman's default profile too.
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    volumes = {v["name"]: v for v in POD_SPEC["volumes"]}
    for mount in WEB_CONTAINER["volumeMounts"]:
        empty_dir = volumes[mount["name"]].get("emptyDir")
        if empty_dir is not None:
            size = empty_dir.get("sizeLimit", "64Mi").replace("Mi", "m")
            flags.append(f"--tmpfs={mount['mountPath']}:rw,size={size},mode=1777")
    return flags


def web_command(port: int) -> list[str]:
    """web.yaml's command, listening on loopback `port` instead of 0.0.0.0:8000."""
    command = list(WEB_CONTAINER["command"])
    for i, arg in enumerate(command):
        if arg == "-b":
            command[i + 1] = "127.0.0.1"
        elif arg == "-p":
            command[i + 1] = str(port)
        elif arg.startswith("tcp:"):
            arg = re.sub(r"port=\d+", f"port={port}", arg)
            command[i] = re.sub(r"interface=[^:]+", "interface=127.0.0.1", arg)
    assert command[0] == "daphne", command
    assert str(port) in " ".join(command), command
    return command


@pytest.fixture(scope="module")
def image(devstack: Devstack) -> str:
    if shutil.which("podman") is None:
        unavailable("podman is not installed (devstack/install-packages)")
    # Rebuilds only when the Dockerfile, requirements or code changed since the last build.
    result = subprocess.run(
        [str(ROOT / "devstack/image")], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        pytest.fail(f"devstack/image failed:\n{result.stderr[-3000:]}", pytrace=False)
    return devstack.env.get("DEVSTACK_IMAGE", "localhost/infra-chaos:devstack")


@pytest.fixture(scope="module")
def postgres_url(devstack: Devstack) -> Iterator[str]:
    """A database of this module's own on the devstack's PostgreSQL, dropped afterwards."""
    base = devstack.env["DEVSTACK_POSTGRES_URL"]
    name = f"infra_image_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {base}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(base)
        yield urlunsplit(parts._replace(path=f"/{name}"))
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(ROOT / ".devstack/containers.conf")
    return env


RunImage = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_image(image: str, devstack: Devstack) -> Iterator[RunImage]:
    """Runs the image like the pod does; detach=True leaves it running until teardown."""
    started: list[str] = []

    def run(
        command: list[str],
        *,
        env: dict[str, str],
        volumes: tuple[str, ...] = (),
        detach: bool = False,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        name = f"infra-chaos-test-{uuid.uuid4().hex[:8]}"
        args = ["podman", "run", f"--name={name}", "--network=host", *security_flags()]
        args += ["--detach"] if detach else ["--rm"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        for volume in volumes:
            args += ["--volume", volume]
        if detach:
            started.append(name)
        return subprocess.run(
            [*args, image, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=podman_env(),
        )

    yield run
    for name in started:
        logs = subprocess.run(
            ["podman", "logs", name], capture_output=True, text=True, env=podman_env()
        )
        print(f"--- {name}\n{logs.stdout}{logs.stderr}")
        subprocess.run(
            ["podman", "rm", "--force", "--time=5", name], capture_output=True, env=podman_env()
        )


def app_env(devstack: Devstack, **values: str) -> dict[str, str]:
    """What the pods get from settings.env and the Secret, pointed at the devstack."""
    return {
        "DJANGO_SECRET_KEY": devstack.env["DJANGO_SECRET_KEY"],
        "REDIS_URL": devstack.redis_url,
        "PROMETHEUS_URL": devstack.prometheus_url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        # The tests' namespace, as the chaos ServiceAccount the volumes bring.
        "CHAOS_NAMESPACE": devstack.namespace,
        **values,
    }


def kube_volumes(devstack: Devstack) -> tuple[str, ...]:
    """The chaos kubeconfig, its token file and CA, read-only at their own paths."""
    kubeconfig = Path(devstack.chaos_kubeconfig)
    config = yaml.safe_load(kubeconfig.read_text())
    files = [
        kubeconfig,
        Path(config["users"][0]["user"]["tokenFile"]),
        Path(config["clusters"][0]["cluster"]["certificate-authority"]),
    ]
    return tuple(f"{f}:{f}:ro" for f in files)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[-1] if lines else ""


def test_the_image_runs_as_the_manifest_says() -> None:
    # The flags below are read from web.yaml; a change there changes what is tested here.
    flags = security_flags()
    assert "--user=10001:10001" in flags
    assert "--read-only" in flags
    assert "--cap-drop=ALL" in flags
    assert "no-new-privileges" in flags
    assert any(f.startswith("--tmpfs=/tmp:") for f in flags)


def test_migrate_poll_and_watch_run_in_the_image(
    devstack: Devstack, run_image: RunImage, postgres_url: str
) -> None:
    db = {"DATABASE_URL": postgres_url}
    migrate = run_image(
        ["python", "manage.py", "migrate", "--noinput"], env=app_env(devstack, **db)
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    with psycopg.connect(postgres_url) as conn:
        tables = {row[0] for row in conn.execute("select tablename from pg_tables")}
    assert "chaos_chaosevent" in tables

    # As poller.yaml runs it: no database and no Kubernetes token at all.
    poll = run_image(["python", "manage.py", "poll_metrics", "--once"], env=app_env(devstack))
    assert poll.returncode == 0, poll.stdout + poll.stderr

    # As watcher.yaml runs it, with the chaos ServiceAccount's kubeconfig for in-cluster
    # config (which only a pod has).
    watch = run_image(
        ["python", "manage.py", "watch_pods", "--once"],
        env=app_env(devstack, KUBECONFIG=devstack.chaos_kubeconfig, **db),
        volumes=kube_volumes(devstack),
    )
    assert watch.returncode == 0, watch.stdout + watch.stderr


def test_the_web_process_serves_page_static_metrics_and_websocket(
    devstack: Devstack, run_image: RunImage, postgres_url: str
) -> None:
    # The poller fills the snapshot the page and a new viewer get first.
    poll = run_image(["python", "manage.py", "poll_metrics", "--once"], env=app_env(devstack))
    assert poll.returncode == 0, poll.stdout + poll.stderr

    port = free_port()
    started = run_image(
        web_command(port),
        env=app_env(devstack, DATABASE_URL=postgres_url, KUBECONFIG=devstack.chaos_kubeconfig),
        volumes=kube_volumes(devstack),
        detach=True,
    )
    assert started.returncode == 0, started.stderr
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", timeout=60)

    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
    page = requests.get(f"{base}/infra", timeout=10)
    assert page.status_code == 200
    assert "chaos" in page.text.lower()
    # A static file the page links to, served from the files collected at build time.
    static = re.search(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"', page.text)
    assert static, "the page links no static file"
    asset = requests.get(base + static.group(1), timeout=5)
    assert asset.status_code == 200
    assert len(asset.content) > 100

    metrics = requests.get(f"{base}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert "infra_open_websockets" in metrics.text

    with connect(
        f"ws://127.0.0.1:{port}/ws/infra/", origin=Origin(base), open_timeout=10
    ) as viewer:
        frame = json.loads(viewer.recv(timeout=10))
        assert frame["type"] in {"metrics", "pods"}
        assert isinstance(frame["data"], dict)


def test_an_unwritable_database_is_named_at_start(devstack: Devstack, run_image: RunImage) -> None:
    # The image's default (SQLite under /app) is on the read-only root: the process that
    # needs it says so in one sentence instead of sqlite's "unable to open database file".
    migrate = run_image(["python", "manage.py", "migrate", "--noinput"], env=app_env(devstack))
    assert migrate.returncode != 0
    assert last_line(migrate).endswith(
        "DATABASE_URL is not set, and its default, the SQLite file /app/db.sqlite3, is in a "
        "directory this process cannot write (/app, uid 10001); set DATABASE_URL to a "
        "PostgreSQL URL or to a SQLite file on a writable volume."
    ), migrate.stderr[-2000:]

    # Set explicitly, the check is at start: before daphne listens or a command runs.
    explicit = run_image(
        ["python", "manage.py", "check"],
        env=app_env(devstack, DATABASE_URL="sqlite:////opt/venv/db.sqlite3"),
    )
    assert explicit.returncode != 0
    assert "DATABASE_URL names the SQLite file /opt/venv/db.sqlite3, which is in a directory" in (
        last_line(explicit)
    )

    # The tmpfs at /tmp is writable, as the emptyDir is in the pod.
    on_tmp = run_image(
        ["python", "manage.py", "migrate", "--noinput"],
        env=app_env(devstack, DATABASE_URL="sqlite:////tmp/db.sqlite3"),
    )
    assert on_tmp.returncode == 0, on_tmp.stderr[-2000:]


def test_nothing_in_the_image_is_writable_but_tmp(devstack: Devstack, run_image: RunImage) -> None:
    probe = run_image(
        [
            "python",
            "-c",
            "import os\n"
            "for d in ('/', '/app', '/opt/venv', '/etc', '/var/tmp', '/run', '/tmp'):\n"
            "    print(d, os.access(d, os.W_OK))\n"
            "print('uid', os.getuid(), os.getgid())\n"
            "print('caps', open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
            "print('nnp', open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])",
        ],
        env={},
    )
    assert probe.returncode == 0, probe.stderr
    seen = dict(line.split(" ", 1) for line in probe.stdout.strip().splitlines())
    assert {
        d: seen[d] for d in ("/", "/app", "/opt/venv", "/etc", "/var/tmp", "/run")
    } == dict.fromkeys(("/", "/app", "/opt/venv", "/etc", "/var/tmp", "/run"), "False")
    assert seen["/tmp"] == "True"
    assert seen["uid"] == "10001 10001"
    assert seen["caps"] == "0000000000000000"
    assert seen["nnp"] == "1"
