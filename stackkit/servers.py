"""Servers of one test's or benchmark's own, beside the shared stack: what it may stop,
restart or cut without disturbing anyone else.
"""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from stackkit.stack import free_port


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
