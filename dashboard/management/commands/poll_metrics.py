"""`python manage.py poll_metrics`: one poller for every viewer (docs/architecture.md).

Every POLL_INTERVAL seconds the leader runs the PromQL set once, publishes the snapshot
(which also stores it in the cache for new viewers and the page) and refreshes the node
labels the pod watcher reads. Standby replicas wait for the leader lock (WorkerCommand).
A Prometheus outage makes snapshots stale, never stops the loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings

from dashboard.poller import MetricsPoller
from live.nodes import remember
from live.publish import latest, publish
from runtime.metrics import POLL_FAILURES, POLL_SECONDS
from runtime.worker import WorkerCommand

log = logging.getLogger(__name__)


class Command(WorkerCommand):
    help = "Polls Prometheus every POLL_INTERVAL seconds and publishes the metrics snapshot."
    lock_name = "poller"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.poller: MetricsPoller | None = None

    def interval(self) -> float:
        return float(settings.POLL_INTERVAL)

    def on_leadership_lost(self) -> None:
        # What we knew (history, stale_since) may be outdated when we lead again; the
        # next leader term starts from the published snapshot instead.
        self.poller = None

    def _new_poller(self) -> MetricsPoller:
        poller = MetricsPoller(base_url=str(settings.PROMETHEUS_URL))
        try:
            poller.resume_from(latest("metrics"))
        except Exception:  # the cache is Redis: an outage must not stop the first round
            log.warning("poll_metrics: could not read the previous snapshot", exc_info=True)
        return poller

    def step(self) -> bool:
        if self.poller is None:
            self.poller = self._new_poller()
        started = time.monotonic()
        assembled = self.poller.poll()
        POLL_SECONDS.observe(time.monotonic() - started)
        if assembled.missing:
            POLL_FAILURES.inc()
        if assembled.node_labels:
            remember(assembled.node_labels)
        publish("metrics", assembled.snapshot)
        # A round with a query unanswered still publishes (the snapshot marked stale), but
        # brought no fresh news.
        return not assembled.missing
