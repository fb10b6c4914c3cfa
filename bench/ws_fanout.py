"""Websocket fan-out benchmark: N viewers on one daphne process, K published snapshots.

Prints, per N, the publish -> receipt latency (p50, p99, max), lost messages, and the web
process's memory per connection. Not a test: it prints numbers (the targets: p99 <=
100 ms at 1,000 viewers and <= 500 ms at 5,000, none lost, <= 30 KB per connection).

    .venv/bin/python bench/ws_fanout.py                       # N = 1000 and 5000, K = 20
    .venv/bin/python bench/ws_fanout.py --clients 1000 --mode per-consumer

--mode process       the app as shipped (infra_site.asgi): the group's members are web
                     processes, each fans frames out to its sockets (dashboard/fanout.py)
--mode per-consumer  the usual Channels pattern, for comparison: every socket joins the
                     group and the channel layer delivers to each one

Needs Redis: --redis-url, else $REDIS_URL, else the devstack's Redis (database 15).

The clients share the machine with the server. So that their own CPU time does not pass
for the server's, only every --sample'th client (default 10) is a full `websockets`
client that timestamps each frame as it arrives; the others are stackkit.ws viewers (a
socket and a wsproto connection) that do the handshake and then leave the frames in
their kernel receive buffers, to be read and counted after the last publish (K frames
of ~3 KB fit in a default buffer). The server does the same work for both. Lost =
frames any client did not get. "client CPU" is this process's CPU time while the
viewers connected and while it read their frames: the clients' own cost, to be kept
well below the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stackkit import ws  # noqa: E402
from stackkit.stack import STATE_DIR, RedisDb, free_port, read_env_file  # noqa: E402

BENCH_DB = int(RedisDb.BENCH_WS_FANOUT)
CONNECT_CONCURRENCY = 100
DRAIN_S = 5.0


# --- the baseline the process fan-out replaced ----------------------------------------


class _BaselineApplication:
    """The per-consumer design, served by daphne as `bench.ws_fanout:baseline_application`.

    Built on first use, inside the daphne process, so importing this module (to run the
    benchmark) does not set Django up with the wrong environment.
    """

    app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.app is None:
            self.app = _build_baseline()
        await self.app(scope, receive, send)


def _build_baseline() -> Any:
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    from infra_site.asgi import django_asgi_app  # sets Django up
    from live.publish import GROUP, alatest_by_kind

    class PerConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            await self.channel_layer.group_add(GROUP, self.channel_name)
            await self.accept()
            for text in (await alatest_by_kind()).values():
                await self.send(text_data=text)

        async def disconnect(self, code: int) -> None:
            await self.channel_layer.group_discard(GROUP, self.channel_name)

        async def infra_frame(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["text"])

    return ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": URLRouter([path("ws/infra/", PerConsumer.as_asgi())]),
        }
    )


baseline_application = _BaselineApplication()

APPS = {
    "process": "infra_site.asgi:application",
    "per-consumer": "bench.ws_fanout:baseline_application",
}


# --- the benchmark -------------------------------------------------------------------


@dataclass
class Client:
    """A timed viewer: a `websockets` client that notes when each frame arrives."""

    received: dict[float, float] = field(default_factory=dict)  # sent ts -> receipt time
    error: str | None = None
    ws: Any = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # connected or failed


def default_redis_url() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    env_file = STATE_DIR / "env"
    if env_file.exists():
        return read_env_file(env_file)["REDIS_URL"].rsplit("/", 1)[0] + f"/{BENCH_DB}"
    return f"redis://127.0.0.1:6379/{BENCH_DB}"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def app_env(redis_url: str, clients: int) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench-only-not-secret"),
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "REDIS_URL": redis_url,
        # Every benchmark client comes from 127.0.0.1: lift the per-client cap.
        "WS_MAX_PER_IP": str(clients + 100),
        "WS_MAX_PER_PROCESS": str(clients + 100),
        # The door counts every connection of an address, websockets included.
        "REQUEST_MAX_CONNECTIONS_PER_IP": str(clients + 200),
        "PYTHONPATH": str(ROOT),
    }


def snapshot(ts: float) -> dict[str, Any]:
    """A metrics frame of the real shape and size (~3 KB: 61 history points per series)."""
    start = int(ts) // 30 * 30 - 1800
    return {
        "ts": ts,
        "stale": False,
        "stale_since": None,
        "pods": {"running": 3, "total": 9},
        "cpu": {"used_percent": round(random.uniform(5, 95), 2)},
        "memory": {"used_percent": 41.27, "used_bytes": 7631933440, "total_bytes": 18957385728},
        "nodes": [
            {
                "name": f"Node {i}",
                "ready": True,
                "memory_used_bytes": 2676973568,
                "memory_total_bytes": 6319128576,
            }
            for i in (1, 2, 3)
        ],
        "history": {
            series: [[start + 30 * i, round(random.uniform(5, 95), 2)] for i in range(61)]
            for series in ("cpu", "memory")
        },
    }


def frame_ts(text: str) -> float | None:
    # The frame starts {"type":"metrics","data":{"ts":<ts>,...}: reading ts without a full
    # JSON parse keeps 5,000 clients' own CPU time out of the latency measured.
    head = '{"type":"metrics","data":{"ts":'
    if not text.startswith(head):
        return None
    end = text.find(",", len(head))
    return float(text[len(head) : end])


async def run_client(url: str, origin: str, client: Client, ready: asyncio.Semaphore) -> None:
    from websockets.asyncio.client import connect

    try:
        async with ready:
            connection = await connect(
                url,
                origin=origin,  # type: ignore[arg-type]
                open_timeout=60,
                ping_interval=None,
                max_size=2**20,
                compression=None,  # daphne never accepts it: do not offer it
            )
        client.ws = connection
        client.settled.set()
        async for message in connection:
            now = time.time()
            ts = frame_ts(message if isinstance(message, str) else message.decode())
            if ts is not None:
                client.received[ts] = now
    except Exception as exc:
        client.error = f"{type(exc).__name__}: {exc}"
    finally:
        client.settled.set()


async def connect_passive(port: int, origin: str, gate: asyncio.Semaphore) -> ws.Viewer:
    async with gate:
        return await asyncio.wait_for(ws.open_websocket(port, origin=origin), 60)


def group_members(redis_url: str) -> int:
    """Members of the group in the channel layer (stale ones slow every publish down)."""
    import redis
    from django.conf import settings

    from live.publish import GROUP

    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    return int(redis.Redis.from_url(redis_url).zcard(f"{prefix}:group:{GROUP}"))


def publish_one() -> float:
    from live.publish import publish

    ts = time.time()
    publish("metrics", snapshot(ts))  # type: ignore[arg-type]
    return ts


def start_web(
    mode: str, redis_url: str, clients: int, port: int, log: Any
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-v",
            "0",  # no access log line per connection: that is logging cost, not fan-out
            # The raw-socket viewers never answer pings; keepalive is not measured here.
            "--ping-interval",
            "3600",
            "-e",
            f"tcp:port={port}:interface=127.0.0.1:backlog=4096",
            APPS[mode],
        ],
        cwd=ROOT,
        env=app_env(redis_url, clients),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def wait_listening(port: int, proc: subprocess.Popen[bytes], within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the web process exited; see its log")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise TimeoutError("the web process did not listen in time")


async def bench(
    mode: str, n: int, k: int, interval: float, sample: int, warmup: int, redis_url: str
) -> dict[str, Any]:
    port = free_port()
    url, origin = f"ws://127.0.0.1:{port}/ws/infra/", f"http://127.0.0.1:{port}"
    members_before = group_members(redis_url)
    if members_before:
        print(f"    note: group already has {members_before} members (other processes or stale)")
    with tempfile.NamedTemporaryFile(
        "wb", prefix=f"ws-fanout-{mode}-", suffix=".log", delete=False
    ) as log:
        proc = start_web(mode, redis_url, n, port, log)
    timed: list[Client] = []
    tasks: list[asyncio.Task[None]] = []
    passive: list[ws.Viewer] = []
    try:
        await wait_listening(port, proc)
        # One viewer first, so imports, connection pools and the hub exist before the
        # "before" reading: what is left to measure is the cost of each connection.
        warm = Client()
        tasks.append(asyncio.create_task(run_client(url, origin, warm, asyncio.Semaphore(1))))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(publish_one)
        await asyncio.sleep(0.5)
        rss_before = rss_kib(proc.pid)

        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        started, cpu_started = time.monotonic(), time.process_time()
        n_timed = len(range(0, n, sample))
        timed = [Client() for _ in range(n_timed)]
        tasks += [asyncio.create_task(run_client(url, origin, c, gate)) for c in timed]
        results = await asyncio.gather(
            *(connect_passive(port, origin, gate) for _ in range(n - n_timed)),
            return_exceptions=True,
        )
        passive = [r for r in results if isinstance(r, ws.Viewer)]
        errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        await asyncio.gather(*(c.settled.wait() for c in timed))
        connect_s = time.monotonic() - started
        connect_cpu_s = time.process_time() - cpu_started
        connected = len(passive) + sum(1 for c in timed if c.ws is not None)
        await asyncio.sleep(2.0)  # first frames delivered, memory settled
        rss_after = rss_kib(proc.pid)

        # Unmeasured frames first if asked: the garbage collector's debt from connecting
        # N sockets in a few seconds (a full collection of ~170 objects per socket) is
        # paid here rather than during the measured frames, as in a steady state.
        for _ in range(warmup):
            await asyncio.to_thread(publish_one)
            await asyncio.sleep(interval)
        sent: list[float] = []
        for _ in range(k):
            sent.append(await asyncio.to_thread(publish_one))
            await asyncio.sleep(interval)
        await asyncio.sleep(DRAIN_S)

        wanted = set(sent)
        latencies = sorted(
            (c.received[ts] - ts) * 1000 for c in timed for ts in sent if ts in c.received
        )
        per_message = [
            sorted((c.received[ts] - ts) * 1000 for c in timed if ts in c.received) for ts in sent
        ]
        got = len(latencies)
        cpu_started = time.process_time()
        for client in passive:
            got += sum(1 for text in ws.texts(client) if frame_ts(text) in wanted)
        read_cpu_s = time.process_time() - cpu_started
        lost = connected * k - got
        errors += [c.error for c in timed if c.error]
        for c in (*timed, warm):
            if c.ws is not None:
                await c.ws.close()
        # Let the server see every disconnect, so no member outlives this run in the
        # group (it would make the next run's publishes slower).
        for _ in range(60):  # up to 30 s
            if group_members(redis_url) <= members_before:
                break
            await asyncio.sleep(0.5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in passive:
            client.sock.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "mode": mode,
        "clients": n,
        "connected": connected,
        "connect_s": connect_s,
        "connect_cpu_s": connect_cpu_s,
        "read_cpu_s": read_cpu_s,
        "timed": n_timed,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "lost": lost,
        "kib_per_conn": (rss_after - rss_before) / max(1, connected),
        "rss_before_mib": rss_before / 1024,
        "rss_after_mib": rss_after / 1024,
        "errors": errors[:3],
        "log": log.name,
        # (first, median, last) receipt of each message among the timed viewers, in ms
        "per_message": [(m[0], m[len(m) // 2], m[-1]) for m in per_message if m],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000], metavar="N")
    parser.add_argument("--messages", type=int, default=20, metavar="K")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between publishes")
    parser.add_argument(
        "--sample", type=int, default=10, help="time every SAMPLE'th client (1 = all)"
    )
    parser.add_argument("--mode", choices=[*APPS, "both"], default="process")
    parser.add_argument(
        "--warmup", type=int, default=0, help="unmeasured snapshots published before the K"
    )
    parser.add_argument("--redis-url", default=default_redis_url())
    parser.add_argument(
        "--verbose", action="store_true", help="also print each message's first/median/last"
    )
    args = parser.parse_args()
    # Stopped from outside (timeout, kill): unwind, so the web process is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))

    ws.raise_fd_limit(max(args.clients) * 2 + 1024)  # inherited by the web process
    os.environ.update(app_env(args.redis_url, max(args.clients)))
    import django

    django.setup()

    modes = list(APPS) if args.mode == "both" else [args.mode]
    print(
        f"redis {args.redis_url}; K={args.messages} snapshots every {args.interval} s "
        f"after {args.warmup} unmeasured; every {args.sample}th viewer timed"
    )
    header = (
        f"{'mode':<13} {'N':>5} {'conn':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'lost':>6} {'KiB/conn':>8} {'RSS MiB':>13}"
    )
    print(header)
    for mode in modes:
        for n in args.clients:
            r = asyncio.run(
                bench(
                    mode, n, args.messages, args.interval, args.sample, args.warmup, args.redis_url
                )
            )
            print(
                f"{r['mode']:<13} {r['clients']:>5} {r['connected']:>5} {r['p50_ms']:>8.1f} "
                f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {r['lost']:>6} "
                f"{r['kib_per_conn']:>8.1f} "
                f"{r['rss_before_mib']:>5.0f}->{r['rss_after_mib']:<5.0f}",
                flush=True,
            )
            print(
                f"    connected in {r['connect_s']:.1f} s; client CPU: "
                f"{r['connect_cpu_s']:.2f} s connecting, {r['read_cpu_s']:.2f} s reading"
            )
            if args.verbose:
                print("    per message (first/median/last ms):", end="")
                print(" ".join(f"{a:.0f}/{b:.0f}/{c:.0f}" for a, b, c in r["per_message"]))
            if r["errors"]:
                print(f"    client errors (first 3): {r['errors']}; web log: {r['log']}")


if __name__ == "__main__":
    main()
