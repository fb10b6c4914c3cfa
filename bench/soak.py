"""Ten minutes of strangers: does the demo stay up, truthful and one kill at a time?

On the local stack (`devstack/up`) it starts what production runs, two web processes
(daphne exactly as the Procfile starts it), a poller and a pod watcher, on a redis-server,
a SQLite file and a way to Prometheus (a proxy) of its own, and for `--duration` seconds:

  - keeps `--viewers` websocket viewers open, half on each web process, each from a
    loopback address of its own; a closed viewer reconnects after 0.25-2.75 s, as the page;
  - presses the chaos button `--press-rate` times a second from `--addresses` loopback
    addresses, alternating between the web processes, and loads the page and the snapshot
    API beside it;
  - cuts Prometheus off for `--prometheus-outage` seconds, restarts Redis once, and sends one
    reconnect storm of `--storm` new viewers within about a second (and one more at the
    end of the warm-up, so the RSS it leaves behind is not counted as growth);
  - watches the namespace it presses in as the cluster admin, as `kubectl get pods -w` would.

It prints: 5xx answers by status (503 is allowed only while a dependency is down), kills
answered 200 against deletions the watch saw, the most pods terminating at once,
metrics broadcasts a connected viewer missed, failed handshakes, and the web processes'
RSS at start, after the warm-up and at the end. Exit status 1 if one of these is broken.

    .venv/bin/python bench/soak.py                   # the full ten minutes
    .venv/bin/python bench/soak.py --duration 120 --viewers 200 --storm 1000   # a quick look

It presses in the tests' namespace (chaos-test) as the tests' ServiceAccount, so a
`make run` beside it is left alone; a test pressing there meanwhile shows up as
"deletions by others", reported, never counted as ours.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import websockets
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stackkit.podwatch import PodWatch  # noqa: E402
from stackkit.servers import PrometheusProxy, RedisServer  # noqa: E402
from stackkit.stack import (  # noqa: E402
    STATE_DIR,
    Devstack,
    chaos_session,
    daphne_command,
    events,
    free_port,
    manage,
    read_env_file,
    wait_http,
)
from stackkit.ws import next_frame, open_websocket, raise_fd_limit, source_address  # noqa: E402

# A dependency's outage, and this long after it, may answer 503: clients notice a Redis
# that is back on their next try, and the poller's Prometheus on its next round.
RECOVERY_GRACE_S = 15.0
# A viewer is expected to get a broadcast sent at least this long after it connected
# and this long before it was closed: a frame in flight at either edge is not "lost".
EDGE_S = 1.0


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the app under test ----------------------------------------------------------------


@dataclass
class App:
    urls: list[str]
    web_pids: list[int]
    procs: list[subprocess.Popen[bytes]]
    devstack: Devstack
    redis: RedisServer
    prometheus: PrometheusProxy

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.prometheus.cut()
        self.redis.stop()


def start_app(workdir: Path, viewers: int, storm: int) -> App:
    devstack = Devstack(read_env_file(STATE_DIR / "env"))
    devstack.database_url = f"sqlite:///{workdir / 'soak.sqlite3'}"
    # Its own Redis and its own way to Prometheus, so that the outages below are the
    # soak's app's alone and a `make run` beside it never notices.
    own_redis = RedisServer(workdir)
    prometheus = PrometheusProxy(upstream=devstack.prometheus_url)
    prometheus.start()
    # The tests' namespace and ServiceAccount, never `make run`'s chaos-demo.
    env = devstack.app_env(
        REDIS_URL=own_redis.url,
        PROMETHEUS_URL=prometheus.url,
        DJANGO_DEBUG="false",
        # The caps stay the production defaults; only the per-process cap must fit the
        # storm on top of the viewers, as it does by default (10,000).
        WS_MAX_PER_PROCESS=str(max(10_000, viewers + storm)),
    )
    subprocess.run(manage("migrate", "--noinput", "-v0"), cwd=ROOT, env=env, check=True)

    def spawn(args: list[str], name: str, **extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env={**env, **extra},
            stdout=(workdir / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )

    ports = [free_port(), free_port()]
    webs = [spawn(daphne_command(port), f"web-{port}") for port in ports]
    workers = [
        spawn(manage("poll_metrics"), "poller", METRICS_PORT=str(free_port())),
        spawn(manage("watch_pods"), "watcher", METRICS_PORT=str(free_port())),
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    for url in urls:
        wait_http(f"{url}/readyz", timeout=60)  # 503 until Redis answers
    return App(urls, [p.pid for p in webs], [*webs, *workers], devstack, own_redis, prometheus)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# --- what the clients saw --------------------------------------------------------------


@dataclass
class Answer:
    at: float
    kind: str  # "press" or "view"
    status: int  # 0: no HTTP answer at all
    body: dict[str, Any]


@dataclass
class Connection:
    opened: float
    closed: float | None = None
    code: int | None = None
    metrics: set[float] = field(default_factory=set)


@dataclass
class Seen:
    answers: list[Answer] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    first_seen: dict[float, float] = field(default_factory=dict)  # metrics ts -> arrival
    handshake_failures: Counter[str] = field(default_factory=Counter)
    outages: list[tuple[str, float, float]] = field(default_factory=list)
    storms: list[dict[str, Any]] = field(default_factory=list)
    rss: list[tuple[float, list[int]]] = field(default_factory=list)
    started: float = 0.0  # monotonic time the scenario began
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def outage_at(self, t: float) -> str | None:
        for name, start, end in self.outages:
            if start <= t <= end + RECOVERY_GRACE_S:
                return name
        return None


def address(block: int, i: int) -> str:
    """Loopback address number i of a block: Linux routes all of 127.0.0.0/8 to lo, so a
    client can bind any of them and look like a visitor of its own to the app."""
    return f"127.{block}.{i // 250}.{i % 250 + 1}"


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws/infra/"


def note_frame(seen: Seen, conn: Connection, raw: str | bytes, now: float) -> None:
    frame = json.loads(raw)
    if frame.get("type") == "metrics":
        ts = frame["data"]["ts"]
        conn.metrics.add(ts)
        first = seen.first_seen.get(ts)
        if first is None or now < first:
            seen.first_seen[ts] = now


async def viewer(seen: Seen, base: str, source: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            ws = await websockets.connect(
                ws_url(base),
                origin=websockets.Origin(base),
                local_addr=(source, 0),
                open_timeout=30,
                max_queue=None,
                ping_interval=None,
            )
        except Exception as exc:
            seen.handshake_failures[type(exc).__name__] += 1
            await asyncio.sleep(random.uniform(0.25, 2.75))
            continue
        conn = Connection(opened=time.monotonic())
        seen.connections.append(conn)
        try:
            while not stop.is_set():
                recv = asyncio.ensure_future(ws.recv())
                halt = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({recv, halt}, return_when=asyncio.FIRST_COMPLETED)
                if recv not in done:
                    recv.cancel()
                    break
                halt.cancel()
                note_frame(seen, conn, recv.result(), time.monotonic())
        except websockets.ConnectionClosed as exc:
            conn.code = exc.rcvd.code if exc.rcvd else None
        finally:
            conn.closed = time.monotonic()
            await ws.close()
        if not stop.is_set():
            await asyncio.sleep(random.uniform(0.25, 2.75))


async def storm_viewers(ports: list[int], n: int, wait_s: float) -> dict[str, int]:
    """n new viewers at once, spread over the web processes, each from an address of its
    own; each must get in, then get a broadcast it was not seeded with on connect (the
    first metrics frame is the cached one)."""

    async def one(i: int) -> str:
        try:
            viewer = await asyncio.wait_for(
                open_websocket(ports[i % len(ports)], source_address(30, i)), 30
            )
        except Exception as exc:
            return f"handshake: {type(exc).__name__}: {str(exc)[:40]}"
        try:
            seed: float | None = None
            async with asyncio.timeout(wait_s):
                while True:
                    frame = await next_frame(viewer)
                    if frame.get("type") != "metrics":
                        continue
                    if seed is None:
                        seed = frame["data"]["ts"]
                    elif frame["data"]["ts"] != seed:
                        return "ok"
        except TimeoutError:
            return "no broadcast"
        except ConnectionError as exc:
            return f"lost: {exc}"
        finally:
            viewer.sock.close()

    return dict(Counter(await asyncio.gather(*(one(i) for i in range(n)))))


def storm_process(ports: list[int], n: int, wait_s: float, out: Any) -> None:
    """A process of its own, so the storm's clients do not queue behind the viewers'."""
    raise_fd_limit(n + 1024)
    started = time.monotonic()
    results = asyncio.run(storm_viewers(ports, n, wait_s))
    out.put({"viewers": n, "results": results, "s": time.monotonic() - started})


async def storm(seen: Seen, urls: list[str], n: int, wait_s: float) -> dict[str, Any]:
    ports = [int(url.rsplit(":", 1)[1]) for url in urls]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=storm_process, args=(ports, n, wait_s, out))
    child.start()
    result: dict[str, Any] = await asyncio.get_running_loop().run_in_executor(
        None, out.get, True, wait_s + 120
    )
    child.join(timeout=30)
    for key, count in result["results"].items():
        if key.startswith("handshake"):
            seen.handshake_failures[f"storm {key}"] += count
    return result


# --- presses and page views ------------------------------------------------------------


class FromAddress(HTTPAdapter):
    """Connections from one loopback source address."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def visitors(urls: list[str], n: int) -> list[tuple[str, requests.Session]]:
    out = []
    for i in range(n):
        url = urls[i % len(urls)]
        session = chaos_session(url)
        session.mount("http://", FromAddress(address(40, i)))
        out.append((url, session))
    return out


def ask(seen: Seen, kind: str, method: str, session: requests.Session, url: str) -> None:
    at = time.monotonic()
    try:
        response = session.request(method, url, timeout=15)
    except requests.RequestException as exc:
        seen.record(Answer(at, kind, 0, {"error": type(exc).__name__}))
        return
    body: dict[str, Any] = {}
    if response.headers.get("Content-Type", "").startswith("application/json"):
        body = response.json()
    seen.record(Answer(at, kind, response.status_code, body))


def crowd(seen: Seen, urls: list[str], addresses: int, rate: float, stop: threading.Event) -> None:
    people = itertools.cycle(visitors(urls, addresses))
    period = 1.0 / rate
    next_at = time.monotonic()
    with_threads: list[threading.Thread] = []
    while not stop.is_set():
        base, session = next(people)
        jobs = [("press", "POST", f"{base}/api/infra/chaos")]
        # Every other tick, the page and the API beside the press.
        if random.random() < 0.5:
            jobs.append(("view", "GET", f"{base}/infra"))
            jobs.append(("view", "GET", f"{base}/api/infra/snapshot"))
        for kind, method, url in jobs:
            thread = threading.Thread(target=ask, args=(seen, kind, method, session, url))
            thread.start()
            with_threads.append(thread)
        with_threads = [t for t in with_threads if t.is_alive()]
        next_at += period
        stop.wait(max(0.0, next_at - time.monotonic()))
    for thread in with_threads:
        thread.join(timeout=20)


# --- the run ---------------------------------------------------------------------------


async def scenario(args: argparse.Namespace, app: App, seen: Seen) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The run's zero: the schedule below, the RSS samples and the report's times.
    started = seen.started = time.monotonic()
    duration: float = args.duration

    def at(fraction: float) -> float:
        return started + duration * fraction

    async def sleep_until(t: float) -> None:
        await asyncio.sleep(max(0.0, t - time.monotonic()))

    async def sample_rss() -> None:
        while not stop.is_set():
            seen.rss.append((time.monotonic() - started, [rss_bytes(p) for p in app.web_pids]))
            await asyncio.sleep(5)

    async def run_storm(what: str) -> None:
        log(f"{what}: {args.storm} new viewers at once")
        result = await storm(seen, app.urls, args.storm, wait_s=30)
        seen.storms.append(result)
        log(f"{what}: {result['results']} in {result['s']:.1f} s")

    tasks = [
        asyncio.create_task(viewer(seen, app.urls[i % len(app.urls)], address(20, i), stop))
        for i in range(args.viewers)
    ]
    tasks.append(asyncio.create_task(sample_rss()))
    log(f"{args.viewers} viewers connecting; presses at {args.press_rate}/s")

    # The warm-up ends with a storm of the same size: a process keeps the memory of the
    # largest crowd it has held (CPython's allocator keeps what it got from the system;
    # measured flat over repeated storms), so the RSS that shows a leak is the one after
    # the first storm, not the one before it.
    await sleep_until(at(0.05))
    await run_storm("warm-up storm")

    await sleep_until(at(0.25))
    log(f"Prometheus stopped for {args.prometheus_outage:.0f} s")
    down = time.monotonic()
    app.prometheus.cut()
    await asyncio.sleep(args.prometheus_outage)
    app.prometheus.mend()
    seen.outages.append(("prometheus", down, time.monotonic()))
    log("Prometheus back")

    await sleep_until(at(0.5))
    log("Redis restarting")
    down = time.monotonic()
    await loop.run_in_executor(None, app.redis.restart)
    seen.outages.append(("redis", down, time.monotonic()))
    log(f"Redis back after {time.monotonic() - down:.1f} s")

    await sleep_until(at(0.7))
    await run_storm("reconnect storm")

    await sleep_until(at(1.0))
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


def report(args: argparse.Namespace, app: App, seen: Seen, watch: Any, first_id: int) -> bool:
    ok = True

    def verdict(good: bool, line: str) -> None:
        nonlocal ok
        ok &= good
        print(f"  {'ok  ' if good else 'FAIL'} {line}")

    print(
        f"\nsoak: {args.duration:.0f} s, 2 web processes, {args.viewers} viewers, presses "
        f"{args.press_rate}/s from {args.addresses} addresses, Prometheus down "
        f"{args.prometheus_outage:.0f} s, Redis restarted once, storm of {args.storm}"
    )
    statuses = Counter((a.kind, a.status) for a in seen.answers)
    print(f"  answers: {dict(sorted(statuses.items()))}")
    bad: Counter[tuple[int, str | None]] = Counter()
    for a in seen.answers:
        if a.status >= 500 or a.status == 0:
            outage = seen.outage_at(a.at)
            allowed = a.status == 503 and outage is not None
            bad[(a.status, outage if allowed else "no dependency down")] += 1
    unexplained = sum(n for (status, why), n in bad.items() if why == "no dependency down")
    verdict(unexplained == 0, f"5xx (or no answer) by status and cause: {dict(bad) or 0}")
    for a in seen.answers:
        if (a.status >= 500 or a.status == 0) and seen.outage_at(a.at) is None:
            print(f"       at {a.at - seen.started:6.1f} s: {a.kind} {a.status} {a.body}")

    terminations = watch
    rows = [row for row in events(app.devstack) if row["id"] > first_id]
    by_id = {row["id"]: row for row in rows}
    kills = [a.body for a in seen.answers if a.kind == "press" and a.status == 200]
    deleted = [row for row in rows if row["outcome"] == "deleted"]
    our_uids = {by_id[k["event_id"]]["pod_uid"] for k in kills if k["event_id"] in by_id}
    phantom = [uid for uid in our_uids if uid not in terminations.since]
    others = set(terminations.since) - our_uids
    print(f"  kills answered 200: {len(kills)}; deletions the watch saw: {len(terminations.since)}")
    verdict(
        len(deleted) == len(kills) == len(our_uids) and not phantom,
        f"phantom kills (a 200 or a 'deleted' row without a deletion seen): "
        f"{len(phantom) + abs(len(deleted) - len(kills))}",
    )
    spans = sorted(
        (terminations.since[uid], terminations.gone.get(uid, float("inf")))
        for uid in our_uids
        if uid in terminations.since
    )
    stacked = sum(gone > nxt for (_, gone), (nxt, _) in itertools.pairwise(spans))
    verdict(stacked == 0, f"stacked kills (ours terminating at the same time): {stacked}")
    print(
        f"  most pods terminating at once: {terminations.most}"
        + (f" (deletions by others meanwhile: {len(others)})" if others else "")
    )
    if not others:
        verdict(terminations.most <= 1, "never more than one pod terminating")
    verdict(len(kills) > 0, "at least one kill happened (something was tested)")

    end = time.monotonic()
    lost = expected = 0
    for conn in seen.connections:
        closed = conn.closed if conn.closed is not None else end
        for ts, first in seen.first_seen.items():
            if conn.opened + EDGE_S <= first <= closed - EDGE_S:
                expected += 1
                lost += ts not in conn.metrics
    reconnects = len(seen.connections) - args.viewers
    closes = Counter(c.code for c in seen.connections if c.code is not None)
    print(
        f"  viewer connections: {len(seen.connections)} ({reconnects} reconnects, closes by "
        f"code {dict(closes) or 0}); metrics broadcasts: {len(seen.first_seen)}"
    )
    verdict(lost == 0, f"broadcasts lost: {lost} of {expected} expected deliveries")
    for result in seen.storms:
        got_in = result["results"].get("ok", 0)
        verdict(
            got_in == args.storm,
            f"storm: {got_in}/{args.storm} got in and got a broadcast in {result['s']:.1f} s "
            f"({result['results']})",
        )
    failed = sum(seen.handshake_failures.values())
    verdict(failed == 0, f"handshakes failed: {failed} {dict(seen.handshake_failures) or ''}")

    mib = 1024 * 1024
    first_rss = seen.rss[0][1]
    # After the warm-up storm: the first sample once it is over and its viewers are gone.
    warm = next((r for t, r in seen.rss if t >= args.duration * 0.15), first_rss)
    last = seen.rss[-1][1]
    peak = [max(r[i] for _, r in seen.rss) for i in range(len(first_rss))]
    for i, url in enumerate(app.urls):
        growth = (last[i] - warm[i]) / warm[i] * 100
        verdict(
            growth < 10,
            f"web {url}: RSS start {first_rss[i] / mib:.0f} MiB, after warm-up "
            f"{warm[i] / mib:.0f} MiB, peak {peak[i] / mib:.0f} MiB, end {last[i] / mib:.0f} "
            f"MiB: {growth:+.1f} % after the warm-up",
        )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--storm", type=int, default=5000)
    parser.add_argument("--press-rate", type=float, default=4.0, help="presses a second")
    parser.add_argument("--addresses", type=int, default=100)
    parser.add_argument("--prometheus-outage", type=float, default=60)
    args = parser.parse_args()

    needed = 2 * (args.viewers + args.storm) + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))

    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    app = start_app(workdir, args.viewers, args.storm)
    log(f"app: {' '.join(app.urls)} (logs in {workdir})")
    seen = Seen()
    first_id = max((row["id"] for row in events(app.devstack)), default=0)
    watch = PodWatch(app.devstack)
    stop_crowd = threading.Event()
    presser = threading.Thread(
        target=crowd, args=(seen, app.urls, args.addresses, args.press_rate, stop_crowd)
    )
    presser.start()
    try:
        asyncio.run(scenario(args, app, seen))
    finally:
        stop_crowd.set()
        presser.join(timeout=60)
        terminations = watch.close()
        ok = report(args, app, seen, terminations, first_id)
        app.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
