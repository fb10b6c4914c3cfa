"""How fast does a kill reach every viewer, and how fast is it shown healed?

With N websocket viewers connected to one web process, fire M chaos kills one after
another (each once the namespace is healthy again) and print, from the moment the POST
is sent:
  - to each viewer seeing the victim Terminating (p50/p95 over all viewer x kill), and to
    the LAST viewer seeing it (p50/p95 over kills): "everyone saw it";
  - to each viewer seeing the replacement Running and Ready, same two ways.
The target: p95 <= 500 ms from POST to every viewer seeing Terminating.

It needs the local stack (`devstack/up`). By default it starts its own daphne and
`watch_pods` on a Redis database and SQLite file of its own, with budgets raised so the
kills are not rate-limited; `--url` measures an app that is already running instead.

    .venv/bin/python bench/chaos_latency.py --viewers 1000 --kills 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stackkit.stack import STATE_DIR, RedisDb, free_port, read_env_file, wait_http  # noqa: E402

BENCH_REDIS_DB = int(RedisDb.BENCH_CHAOS_LATENCY)
CSRF = "benchbenchbenchbenchbenchbench32"


@dataclass
class Viewer:
    # Raw pods frames with their arrival time (monotonic), decoded after each round: a
    # thousand viewers share this one client process, so the less each does per frame,
    # the less the client's own queueing inflates the numbers.
    frames: list[tuple[float, str]] = field(default_factory=list)
    # Every frame's size in bytes, by its type: kept by one viewer only (the same frames
    # reach them all), for the frame-size table.
    sizes: dict[str, list[int]] | None = None


@dataclass
class Round:
    before: set[str]
    sent_at: float
    victim: str = ""
    until: float = 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<50} no samples"
    ms = [v * 1000 for v in values]
    return (
        f"{label:<50} p50 {pct(ms, 0.5):6.0f} ms  p95 {pct(ms, 0.95):6.0f} ms  "
        f"max {max(ms):6.0f} ms  n={len(ms)}"
    )


async def watch(url: str, viewer: Viewer, ready: asyncio.Event) -> None:
    origin = url.replace("ws://", "http://").split("/ws/")[0]
    async with websockets.connect(url, origin=origin, max_queue=None, open_timeout=60) as ws:
        ready.set()
        async for text in ws:
            if not isinstance(text, str):
                continue
            if text.startswith('{"type":"pods"'):
                viewer.frames.append((time.monotonic(), text))
            if viewer.sizes is not None:
                kind = text[len('{"type":"') :].split('"', 1)[0]
                viewer.sizes.setdefault(kind, []).append(len(text.encode()))


def first_seen(viewer: Viewer, rnd: Round) -> tuple[float | None, float | None]:
    """Seconds from the POST until this viewer first saw the victim Terminating, and a
    pod that was not there before the kill Running and Ready (None: never)."""
    terminating = healed = None
    for at, text in viewer.frames:
        if not rnd.sent_at <= at <= rnd.until:
            continue
        pods = json.loads(text)["data"]["pods"]
        if terminating is None and any(
            p["name"] == rnd.victim and p["status"] == "Terminating" for p in pods
        ):
            terminating = at - rnd.sent_at
        if healed is None and any(
            p["name"] not in rnd.before and p["status"] == "Running" and p["ready"] for p in pods
        ):
            healed = at - rnd.sent_at
    return terminating, healed


def healthy_names(base: str) -> set[str] | None:
    data = requests.get(f"{base}/api/infra/snapshot", timeout=5).json().get("pods") or {}
    pods = data.get("pods") or []
    if len(pods) == 3 and all(p["status"] == "Running" and p["ready"] for p in pods):
        return {p["name"] for p in pods}
    return None


async def connect_viewers(ws_url: str, crowd: list[Viewer]) -> list[asyncio.Task[None]]:
    tasks = []
    for start in range(0, len(crowd), 100):
        batch = []
        for viewer in crowd[start : start + 100]:
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(watch(ws_url, viewer, ready)))
            batch.append(ready.wait())
        await asyncio.wait_for(asyncio.gather(*batch), timeout=120)
    return tasks


async def run(base: str, viewers: int, kills: int, warmup: int) -> None:
    crowd = [Viewer() for _ in range(viewers)]
    crowd[0].sizes = {}
    started = time.monotonic()
    tasks = await connect_viewers(base.replace("http://", "ws://") + "/ws/infra/", crowd)
    print(f"{viewers} viewers connected in {time.monotonic() - started:.1f} s", flush=True)

    session = requests.Session()
    session.cookies.set("csrftoken", CSRF, domain="127.0.0.1")
    session.headers.update({"X-CSRFToken": CSRF, "Referer": f"{base}/infra"})
    rounds: list[Round] = []
    posts: list[float] = []
    refused = 0
    while len(rounds) < kills + warmup:
        deadline = time.monotonic() + 60
        while (names := await asyncio.to_thread(healthy_names, base)) is None:
            if time.monotonic() > deadline:
                raise SystemExit("chaos-demo did not get back to 3/3 healthy within 60 s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # let the previous round's last frames drain
        rnd = Round(before=names, sent_at=time.monotonic())
        response = await asyncio.to_thread(session.post, f"{base}/api/infra/chaos", timeout=15)
        posted = time.monotonic() - rnd.sent_at
        if response.status_code == 409:
            # The cluster is shared (other test runs kill pods too): wait and try again.
            refused += 1
            if refused > 2 * kills:
                raise SystemExit("the guard keeps refusing; is something else killing pods?")
            continue
        if response.status_code != 200:
            raise SystemExit(f"HTTP {response.status_code} {response.text}")
        rnd.victim = response.json()["pod"]
        posts.append(posted)
        await asyncio.sleep(8.0)  # Terminating, replacement Ready, victim gone
        rnd.until = time.monotonic()
        rounds.append(rnd)
        seen = [first_seen(v, rnd) for v in crowd]
        gone = [t for t, _ in seen if t is not None]
        back = [h for _, h in seen if h is not None]
        label = "warm-up" if len(rounds) <= warmup else f"kill {len(rounds) - warmup}/{kills}"
        print(
            f"{label}: {rnd.victim}: POST answered in "
            f"{posted * 1000:.0f} ms; Terminating seen by {len(gone)}/{viewers}, the last "
            f"after {max(gone, default=float('nan')) * 1000:.0f} ms; replacement Ready seen "
            f"by {len(back)}/{viewers}, the last after {max(back, default=float('nan')):.2f} s",
            flush=True,
        )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    # The first press after the processes start (and the crowd connects) pays one-time
    # costs; --warmup rounds are shown above but kept out of the percentiles.
    rounds, posts = rounds[warmup:], posts[warmup:]
    print()
    print(
        f"viewers={viewers} kills={kills} after {warmup} warm-up (one web process, one "
        f"watcher), {refused} presses refused"
    )
    print(summary("POST answered", posts))
    for index, what in ((0, "the victim Terminating"), (1, "the replacement Running+Ready")):
        every: list[float] = []
        last: list[float] = []
        missing = 0
        for rnd in rounds:
            times = [t for t in (first_seen(v, rnd)[index] for v in crowd) if t is not None]
            missing += viewers - len(times)
            every.extend(times)
            if len(times) == viewers:
                last.append(max(times))
        print(summary(f"POST -> one viewer sees {what}", every))
        print(summary(f"POST -> every viewer has seen {what}", last))
        if missing:
            print(f"  ({missing} viewer x kill samples never saw it)")
    print()
    print("frames one viewer received, by type (bytes; the first frames on connect included)")
    for kind, sizes in sorted((crowd[0].sizes or {}).items()):
        print(
            f"  {kind:<8} n={len(sizes):<4} median {statistics.median(sizes):8.0f}  "
            f"max {max(sizes):8d}  total {sum(sizes):9d}"
        )


def start_app(env: dict[str, str], logs: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "infra_site.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=(logs / "web.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [sys.executable, "manage.py", "watch_pods"],
            cwd=ROOT,
            env=env,
            stdout=(logs / "watcher.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    return base, procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument(
        "--warmup", type=int, default=1, help="kills first, shown but not counted (default 1)"
    )
    parser.add_argument("--url", help="measure an already running app instead of starting one")
    args = parser.parse_args()

    procs: list[subprocess.Popen[bytes]] = []
    if args.url:
        base = args.url.rstrip("/")
    else:
        stack_env = read_env_file(STATE_DIR / "env")
        workdir = Path(tempfile.mkdtemp(prefix="chaos-bench-"))
        redis_url = stack_env["REDIS_URL"].rsplit("/", 1)[0] + f"/{BENCH_REDIS_DB}"
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        env = {
            **os.environ,
            **stack_env,
            "REDIS_URL": redis_url,
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "CHAOS_RATE_PER_IP": "1000/m",
            "CHAOS_BURST_PER_IP": "1000/10s",
            "CHAOS_RATE_GLOBAL": "1000/m",
            "WS_MAX_PER_IP": str(args.viewers + 100),
            # Every viewer connects from one address; the door counts them all.
            "REQUEST_MAX_CONNECTIONS_PER_IP": str(args.viewers + 200),
            "WS_MAX_PER_PROCESS": str(args.viewers + 100),
            "DJANGO_DEBUG": "false",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        base, procs = start_app(env, workdir)
        print(f"app: {base} (logs in {workdir})", flush=True)
    try:
        asyncio.run(run(base, args.viewers, args.kills, args.warmup))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
