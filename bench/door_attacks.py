"""What a hostile stranger can do to one web process, attack by attack, in numbers.

Starts daphne exactly as the Procfile of `--checkout` starts it (default: this one; point
it at another checkout to measure that code), on a redis-server and a SQLite file of its
own, and tries, each for at most `--seconds`:

  - ping flood: one socket sends 125-byte pings as fast as it can and reads the pongs;
  - ping flood, pongs unread: the same, never reading;
  - pong flood: unsolicited pongs;
  - continuation flood: a text frame that never ends, then empty continuation frames;
  - unfinished 1 MB messages: 200 sockets from 10 addresses, each sending the first
    1 MB fragment of a message and nothing more;
  - slow headers: `--slow` connections from `--slow-addresses` addresses, each sending a
    request line and then one header byte every 5 s (`--server-fds` gives the web
    process fewer descriptors, to see who gets the last ones; `--only slow` runs this
    attack alone);
  - a viewer that never reads, while 1000 frames of 16 KB are broadcast;
  - HEAD /infra, with 2000 pods on the page (over Django's 64 KiB chunk): body bytes
    after the headers;
  - a form POST in UTF-16: the status.

For each it prints how long until the server closed the attacking sockets (or how many
were still open at the end), the latency of another client meanwhile (GET /healthz, or
the page for slow headers, on a new connection every 50 ms) and the web process's RSS.
Only loopback addresses are used (127.0.0.0/8); every loop is bounded in time and count.

    .venv/bin/python bench/door_attacks.py
    .venv/bin/python bench/door_attacks.py --checkout /path/to/another/checkout
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import django
import requests
from wsproto.events import Ping, Pong, TextMessage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stackkit.bystander import bystander  # noqa: E402
from stackkit.servers import RedisServer, big_pods_frame  # noqa: E402
from stackkit.stack import free_port, wait_http  # noqa: E402
from stackkit.ws import Hostile, continuation_flood, raise_fd_limit  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Web:
    url: str
    port: int
    proc: subprocess.Popen[bytes]


@contextmanager
def web_process(checkout: Path, workdir: Path, slow: int, fds: int | None) -> Iterator[Web]:
    """daphne as `checkout`'s Procfile runs it, with its own Redis and database."""
    line = next(
        line for line in (checkout / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    program, *args = shlex.split(line.removeprefix("web:"))
    port = free_port()
    args = [a.replace("tcp:port=8000:", f"tcp:port={port}:", 1) for a in args]
    redis = RedisServer(workdir)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DEVSTACK_"))},
        "DJANGO_SECRET_KEY": "door-attacks-only",
        "REDIS_URL": redis.url,
        "DATABASE_URL": f"sqlite:///{workdir / 'door.sqlite3'}",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=checkout,
        env=env,
        check=True,
    )
    raise_fd_limit(slow + 2048)  # the server inherits it; its clients here need as many
    limit = [] if fds is None else ["prlimit", f"--nofile={fds}:{fds}", "--"]
    proc = subprocess.Popen(
        [*limit, sys.executable, "-m", program, *args],
        cwd=checkout,
        env=env,
        stdout=(workdir / "web.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=60)
        # This process publishes as the poller would, to the server's Redis.
        os.environ.update(
            DJANGO_SETTINGS_MODULE="infra_site.settings",
            DJANGO_SECRET_KEY=env["DJANGO_SECRET_KEY"],
            REDIS_URL=redis.url,
            DATABASE_URL=env["DATABASE_URL"],
        )
        django.setup()
        yield Web(url, port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        redis.stop()


class Watch:
    """Another client's latency (a Bystander) and the server's RSS, sampled while an
    attack runs."""

    def __init__(self, web: Web, path: str = "/healthz") -> None:
        self.web, self.path = web, path
        self.rss: list[float] = []
        self._other = bystander(web.url, path, every=0.05, sample=self._sample)

    def _sample(self) -> None:
        self.rss.append(rss_mb(self.web.proc.pid))

    def __enter__(self) -> Watch:
        self._sample()
        self.other = self._other.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._other.__exit__(None, None, None)

    def summary(self) -> str:
        failed = len(self.other.failures)
        if self.other.times:
            ms = sorted(x * 1000 for x in self.other.times)
            latency = f"{self.path} median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms" + (
                f", {failed} failed" if failed else ""
            )
        else:
            latency = f"{self.path}: no answer"
        return f"{latency}; RSS {self.rss[0]:.0f} -> peak {max(self.rss):.0f} MB"


def report(name: str, closed: str, watch: Watch) -> None:
    print(f"{name:28} | {closed:44} | {watch.summary()}", flush=True)


def single_flood(web: Web, seconds: float, build: Callable[[Hostile], bytes], read: bool) -> str:
    hostile = Hostile(web.port, "127.0.0.2")
    try:
        frames = build(hostile)
        dropped = hostile.flood(frames, seconds, read=read)
    finally:
        hostile.close()
    code = f" (close code {hostile.close_code})" if hostile.close_code else ""
    sent = f"{hostile.sent / 1e6:.0f} MB sent"
    if dropped is None:
        return f"never closed in {seconds:.0f} s, {sent}"
    return f"closed after {dropped:.2f} s{code}, {sent}"


def unfinished_messages(web: Web, seconds: float) -> str:
    sockets: list[Hostile] = []
    refused = 0
    start = time.monotonic()
    for i in range(200):
        try:
            hostile = Hostile(web.port, f"127.0.1.{i % 10 + 1}")
        except OSError:
            refused += 1
            continue
        sockets.append(hostile)
        # The server may refuse the message at its header and reset the connection.
        with suppress(OSError):
            hostile.sock.sendall(
                hostile.frame(TextMessage(data="a" * 1_000_000, message_finished=False))
            )
    closed_at: list[float] = []
    for hostile in sockets:
        waited = hostile.wait_closed(max(0.01, seconds - (time.monotonic() - start)))
        if waited is not None:
            closed_at.append(time.monotonic() - start)
        hostile.close()
    still = len(sockets) - len(closed_at)
    latest = f", the last after {max(closed_at):.2f} s" if closed_at else ""
    return f"{len(closed_at)} closed{latest}, {still} open after {seconds:.0f} s, {refused} refused"


def slow_headers(web: Web, count: int, addresses: int, seconds: float) -> str:
    sockets: list[socket.socket] = []
    refused = 0
    for i in range(count):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            sock.bind((f"127.2.{i % addresses // 250}.{i % addresses % 250 + 1}", 0))
            sock.connect(("127.0.0.1", web.port))
            sock.sendall(b"GET /infra HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sock.setblocking(False)
            sockets.append(sock)
        except OSError:
            sock.close()
            refused += 1
    start = time.monotonic()
    open_now = list(sockets)
    closed_after: list[float] = []
    fds_peak = open_fds(web.proc.pid)
    while time.monotonic() - start < seconds and open_now:
        still = []
        for sock in open_now:
            try:
                if sock.recv(4096) == b"":
                    raise ConnectionResetError
                sock.send(b"X")
                still.append(sock)
            except BlockingIOError:
                try:
                    sock.send(b"X")
                    still.append(sock)
                except OSError:
                    closed_after.append(time.monotonic() - start)
            except OSError:
                closed_after.append(time.monotonic() - start)
        open_now = still
        fds_peak = max(fds_peak, open_fds(web.proc.pid))
        time.sleep(5)
    for sock in sockets:
        sock.close()
    at_once = sum(1 for t in closed_after if t < 1.0)
    later = [t for t in closed_after if t >= 1.0]
    return (
        f"{refused} refused, {at_once} closed at once, {len(later)} later (last seen at "
        f"{max(later, default=0):.0f} s), {len(open_now)} open at {seconds:.0f} s; "
        f"server fds peak {fds_peak}"
    )


def stalled_reader(web: Web) -> str:
    from live.publish import publish

    stalled = Hostile(web.port, "127.0.3.1", receive_buffer=4096)
    try:
        start = time.monotonic()
        pad = "x" * 16_000
        for n in range(1000):
            publish("metrics", {"ts": n, "pad": pad})
            time.sleep(0.002)
        time.sleep(1)
        gone = stalled.wait_closed(0.5)
    finally:
        stalled.close()
    if gone is None:
        return f"still open {time.monotonic() - start:.0f} s after 16 MB was sent to it"
    return f"dropped within {time.monotonic() - start:.0f} s"


def head_bytes(web: Web) -> str:
    from live.publish import publish

    publish("pods", big_pods_frame(2000))
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(b"HEAD /infra HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    _head, _, body = data.partition(b"\r\n\r\n")
    return f"{len(body)} body bytes after the headers"


def utf16_form(web: Web) -> str:
    start = time.monotonic()
    answer = requests.post(
        f"{web.url}/infra",
        data="a=b".encode("utf-16"),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-16"},
        cookies={"csrftoken": "a" * 32},
        timeout=10,
    )
    return f"status {answer.status_code} after {time.monotonic() - start:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=ROOT)
    parser.add_argument("--seconds", type=float, default=15.0, help="at most, per attack")
    parser.add_argument("--slow", type=int, default=3000, help="slow-header connections")
    parser.add_argument("--slow-addresses", type=int, default=10, help="they come from")
    parser.add_argument("--server-fds", type=int, help="the web process's RLIMIT_NOFILE")
    parser.add_argument(
        "--only", choices=["slow"], help="only the slow headers (with --server-fds, say)"
    )
    args = parser.parse_args()
    seconds = min(args.seconds, 60.0)
    slow = min(args.slow, 15_000)
    with (
        tempfile.TemporaryDirectory(prefix="door-") as tmp,
        web_process(args.checkout.resolve(), Path(tmp), slow, args.server_fds) as web,
    ):
        print(f"daphne from {args.checkout.resolve()} at {web.url}")
        slow_name = f"slow headers x {slow}/{args.slow_addresses}"
        if args.only == "slow":
            with Watch(web, path="/infra") as watch:
                closed = slow_headers(web, slow, args.slow_addresses, max(seconds, 30.0))
            report(slow_name, closed, watch)
            return
        floods: list[tuple[str, Callable[[Hostile], bytes], bool]] = [
            ("ping flood", lambda h: h.frame(Ping(b"x" * 125)), True),
            ("ping flood, pongs unread", lambda h: h.frame(Ping(b"x" * 125)), False),
            ("pong flood", lambda h: h.frame(Pong(b"x" * 125)), False),
            ("continuation flood", continuation_flood, True),
        ]
        for name, build, read in floods:
            with Watch(web) as watch:
                closed = single_flood(web, seconds, build, read)
            report(name, closed, watch)
            time.sleep(1)
        with Watch(web) as watch:
            closed = unfinished_messages(web, seconds)
        report("unfinished 1 MB x 200", closed, watch)
        with Watch(web, path="/infra") as watch:
            closed = slow_headers(web, slow, args.slow_addresses, max(seconds, 30.0))
        report(slow_name, closed, watch)
        with Watch(web) as watch:
            closed = stalled_reader(web)
        report("viewer that never reads", closed, watch)
        with Watch(web) as watch:
            closed = head_bytes(web)
        report("HEAD /infra", closed, watch)
        with Watch(web) as watch:
            closed = utf16_form(web)
        report("form POST in UTF-16", closed, watch)


if __name__ == "__main__":
    main()
