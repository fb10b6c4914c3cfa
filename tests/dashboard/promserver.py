"""A tiny stand-in for Prometheus's HTTP API, served for real on loopback.

Unit tests of the Prometheus seam go through requests, sockets and timeouts exactly as in
production; only the answers are canned. Each answer is looked up by the PromQL text.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Answer:
    body: Any
    status: int = 200
    delay_s: float = 0.0
    raw: bytes | None = None  # sent as is instead of JSON


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": labels, "value": [1700000000.0, value]} for labels, value in samples
            ],
        },
    }


def value(number: str) -> dict[str, Any]:
    return vector(({}, number))


def matrix(*series: list[tuple[float, str]]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": {}, "values": [[ts, v] for ts, v in points]} for points in series
            ],
        },
    }


ERROR = {"status": "error", "errorType": "bad_data", "error": "parse error"}


@dataclass
class FakePrometheus:
    url: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)
    range_answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)

    def set(self, promql: str, body: Any, **kw: Any) -> None:
        self.answers[promql] = Answer(body, **kw)

    def set_range(self, promql: str, body: Any, **kw: Any) -> None:
        self.range_answers[promql] = Answer(body, **kw)


def serve() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parsed = urlparse(self.path)
            params = {k: v[0] for k, v in parse_qs(parsed.query).items()}
            fake.requests.append({"path": parsed.path, **params})
            table = fake.range_answers if parsed.path.endswith("query_range") else fake.answers
            answer = table.get(params.get("query", ""), Answer(ERROR, status=400))
            if answer.delay_s:
                time.sleep(answer.delay_s)
            payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # A poll round opens a dozen connections at once; the default backlog of 5 would
        # make some wait for a SYN retry (1 s) and time out.
        request_queue_size = 64

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
