"""Fixtures of the integration layer: a healthy test namespace, a Prometheus of one's own.

Everything here works on the test namespace and the test's own processes, so that a
running `make run` beside the suite is never disturbed (tests/integration/
test_side_by_side.py checks that it is not).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from tests.chaos.stack import flush_test_redis, wait_healthy
from tests.conftest import Devstack


@pytest.fixture
def healthy_cluster(devstack: Devstack) -> Iterator[None]:
    """A clean test Redis database and the test namespace 3/3 Ready, before and after.

    Modules that change pods use it: `pytestmark = pytest.mark.usefixtures(...)`."""
    flush_test_redis(devstack)
    wait_healthy(devstack)
    yield
    wait_healthy(devstack)


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
    _server: http.server.ThreadingHTTPServer | None = None
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

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
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
