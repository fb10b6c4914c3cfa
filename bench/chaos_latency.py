"""How fast does a kill reach every viewer, and how fast is it shown healed?

With N websocket viewers connected to one web process, fire M chaos kills one after
another (each once the namespace is healthy again) and print, from the moment the POST
is sent:
  - to each viewer seeing the victim Terminating (p50/p95 over all viewer x kill), and to
    the LAST viewer seeing it (p50/p95 over kills): "everyone saw it";
  - to each viewer seeing the replacement Running and Ready, same two ways.
The target (issue 4): p95 <= 500 ms from POST to every viewer seeing Terminating.

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

from tests.conftest import free_port, read_env_file, wait_http  # noqa: E402

BENCH_REDIS_DB = 11
CSRF = "benchbenchbenchbenchbenchbench32"


@dataclass
class Viewer:
    # Per kill round: when this viewer first saw the victim Terminating, and a new pod
    # Running and Ready (monotonic seconds).
    terminating: dict[int, float] = field(default_factory=dict)
    healed: dict[int, float] = field(default_factory=dict)


@dataclass
class Round:
    index: int = -1
    before: set[str] = field(default_factory=set)
    sent_at: float = 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<44} no samples"
    ms = [v * 1000 for v in values]
    return (
        f"{label:<44} p50 {pct(ms, 0.5):7.0f} ms   p95 {pct(ms, 0.95):7.0f} ms   "
        f"max {max(ms):7.0f} ms   n={len(ms)}"
    )


async def watch(url: str, viewer: Viewer, current: Round, ready: asyncio.Event) -> None:
    async with websockets.connect(
        url,
        origin=url.replace("ws://", "http://").split("/ws/")[0],
        max_queue=None,
        open_timeout=60,
    ) as ws:
        ready.set()
        async for text in ws:
            now = time.monotonic()
            frame = json.loads(text)
            if frame.get("type") != "pods" or current.index < 0:
                continue
            pods = frame["data"]["pods"]
            k = current.index
            if k not in viewer.terminating and any(
                p["status"] == "Terminating" and p["name"] in current.before for p in pods
            ):
                viewer.terminating[k] = now
            if k not in viewer.healed and any(
                p["name"] not in current.before and p["status"] == "Running" and p["ready"]
                for p in pods
            ):
                viewer.healed[k] = now


def healthy_names(base: str) -> set[str] | None:
    data = requests.get(f"{base}/api/infra/snapshot", timeout=5).json().get("pods") or {}
    pods = data.get("pods") or []
    if len(pods) == 3 and all(p["status"] == "Running" and p["ready"] for p in pods):
        return {p["name"] for p in pods}
    return None


async def run(base: str, viewers: int, kills: int) -> None:
    ws_url = base.replace("http://", "ws://") + "/ws/infra/"
    current = Round()
    crowd = [Viewer() for _ in range(viewers)]
    tasks = []
    started = time.monotonic()
    for start in range(0, viewers, 100):
        batch = []
        for viewer in crowd[start : start + 100]:
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(watch(ws_url, viewer, current, ready)))
            batch.append(ready.wait())
        await asyncio.wait_for(asyncio.gather(*batch), timeout=120)
    print(f"{viewers} viewers connected in {time.monotonic() - started:.1f} s", flush=True)

    starts: dict[int, float] = {}
    session = requests.Session()
    session.cookies.set("csrftoken", CSRF, domain="127.0.0.1")
    session.headers.update({"X-CSRFToken": CSRF, "Referer": f"{base}/infra"})
    for k in range(kills):
        deadline = time.monotonic() + 60
        while (names := await asyncio.to_thread(healthy_names, base)) is None:
            if time.monotonic() > deadline:
                raise SystemExit("chaos-demo did not get back to 3/3 healthy within 60 s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # let the last frames of the previous round drain
        current.before = names
        current.sent_at = starts[k] = time.monotonic()
        current.index = k
        response = await asyncio.to_thread(session.post, f"{base}/api/infra/chaos", timeout=15)
        posted = time.monotonic() - current.sent_at
        if response.status_code != 200:
            raise SystemExit(f"kill {k + 1}: HTTP {response.status_code} {response.text}")
        deadline = time.monotonic() + 30
        while not all(k in v.healed for v in crowd):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        seen = [v.terminating[k] - current.sent_at for v in crowd if k in v.terminating]
        healed = [v.healed[k] - current.sent_at for v in crowd if k in v.healed]
        print(
            f"kill {k + 1}/{kills}: {response.json()['pod']}  POST {posted * 1000:.0f} ms, "
            f"all saw Terminating {max(seen, default=float('nan')) * 1000:.0f} ms "
            f"({len(seen)}/{viewers}), all saw healed {max(healed, default=float('nan')):.2f} s "
            f"({len(healed)}/{viewers})",
            flush=True,
        )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    print()
    print(f"viewers={viewers} kills={kills} (one web process, one watcher)")
    print_results(crowd, starts, viewers)


def print_results(crowd: list[Viewer], starts: dict[int, float], viewers: int) -> None:
    for attr, what in (("terminating", "Terminating"), ("healed", "replacement Running+Ready")):
        every: list[float] = []
        last: list[float] = []
        missing = 0
        for k, sent_at in starts.items():
            times = [getattr(v, attr)[k] - sent_at for v in crowd if k in getattr(v, attr)]
            missing += viewers - len(times)
            every.extend(times)
            if len(times) == viewers:
                last.append(max(times))
        print(summary(f"POST -> a viewer sees {what}", every))
        print(summary(f"POST -> every viewer has seen {what}", last))
        if missing:
            print(f"  ({missing} viewer x kill samples never saw it)")


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
    parser.add_argument("--url", help="measure an already running app instead of starting one")
    args = parser.parse_args()

    procs: list[subprocess.Popen[bytes]] = []
    if args.url:
        base = args.url.rstrip("/")
    else:
        stack_env = read_env_file(ROOT / ".devstack" / "env")
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
            "CHAOS_RATE_GLOBAL": "1000/m",
            "WS_MAX_PER_IP": str(args.viewers + 100),
            "WS_MAX_PER_PROCESS": str(args.viewers + 100),
            "DJANGO_DEBUG": "false",
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        base, procs = start_app(env, workdir)
        print(f"app: {base} (logs in {workdir})", flush=True)
    try:
        asyncio.run(run(base, args.viewers, args.kills))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
