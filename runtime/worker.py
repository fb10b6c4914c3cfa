"""The shape shared by the background processes (poller, pod watcher).

A management command that loops over `step()` while it holds its leader lock, stands by
while another replica holds it, and stops cleanly on SIGTERM. Tests call `step()` directly.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from prometheus_client import start_http_server

from runtime.leader import LeaderLock
from runtime.metrics import WORKER_LEADING

log = logging.getLogger(__name__)

# How often a standby asks for the lock; with the TTL this bounds the takeover time.
STANDBY_RETRY_S = 1.0


class WorkerCommand(BaseCommand):
    lock_name: str = ""
    # Short, so a standby takes over within a few seconds of the leader dying. A heartbeat
    # thread renews it, so a step may take longer than the TTL (a 5 s watch call does).
    lock_ttl_s: float = 4.0
    # A leader whose loop has not come round for this long is hung: its heartbeat stops
    # renewing, so a standby takes over instead of the dashboard freezing for everyone.
    max_step_s: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopping = threading.Event()
        self.progress_at = time.monotonic()

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="run one step and exit")
        parser.add_argument(
            "--run-for", type=float, default=None, metavar="SECONDS", help="exit after this long"
        )

    def step(self) -> bool:
        """Does one unit of work; returns whether it brought fresh news (the loop does not
        need the answer: it tells tests and `--once` scripts what the step found)."""
        raise NotImplementedError

    def interval(self) -> float:
        """Seconds to wait between two steps while leading."""
        return 0.0

    def on_leadership_lost(self) -> None:
        """Hook for subclasses holding state that is only valid while leading."""

    def serve_metrics(self) -> None:
        """Serves this process's metrics on METRICS_PORT, standby or not, so Prometheus
        sees every replica and which one leads."""
        port = int(settings.METRICS_PORT)
        if not port:
            return
        try:
            start_http_server(port, addr=str(settings.METRICS_ADDR))
        except OSError as exc:
            raise CommandError(
                f"METRICS_PORT: cannot serve metrics on {settings.METRICS_ADDR}:{port}: {exc}"
            ) from exc
        log.info("%s: metrics on port %d", self.lock_name, port)

    def heartbeat(self, lock: LeaderLock) -> None:
        """Renews the lock while this process leads and its loop is alive."""
        while not self.stopping.wait(self.lock_ttl_s / 4):
            if not lock.held:
                continue
            if time.monotonic() - self.progress_at > self.max_step_s:
                log.error(
                    "%s: no progress for %.0f s, letting the lock lapse",
                    self.lock_name,
                    self.max_step_s,
                )
                lock.held = False
                continue
            lock.acquire_or_renew()

    def handle(self, *args: Any, **options: Any) -> None:
        if options["once"]:
            self.step()
            return
        self.serve_metrics()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        deadline = time.monotonic() + options["run_for"] if options["run_for"] else None
        lock = LeaderLock(self.lock_name, ttl_s=self.lock_ttl_s)
        leading = False
        leading_gauge = WORKER_LEADING.labels(worker=self.lock_name)
        leading_gauge.set(0)
        threading.Thread(target=self.heartbeat, args=(lock,), daemon=True).start()
        try:
            while not self.stopping.is_set():
                self.progress_at = time.monotonic()
                if deadline is not None and time.monotonic() >= deadline:
                    break
                # While leading, the heartbeat keeps `held` true, or clears it when lost.
                if lock.held or lock.acquire_or_renew():
                    if not leading:
                        log.info("%s: leading", self.lock_name)
                        leading_gauge.set(1)
                    leading = True
                    started = time.monotonic()
                    try:
                        self.step()
                    except Exception:
                        # A worker that dies stops the dashboard for everyone; log and go on.
                        log.exception("%s: step failed", self.lock_name)
                    self.stopping.wait(max(0.0, self.interval() - (time.monotonic() - started)))
                else:
                    if leading:
                        log.info("%s: lost leadership, standing by", self.lock_name)
                        self.on_leadership_lost()
                        leading_gauge.set(0)
                    leading = False
                    self.stopping.wait(STANDBY_RETRY_S)
        finally:
            lock.release()
            leading_gauge.set(0)
