"""One poll round: the PromQL set against Prometheus, concurrently, into a snapshot.

Holds what must survive between rounds: the history (range queries are refreshed about
once a minute, not every round) and the moment the data went stale. The management
command `poll_metrics` owns the loop, the leader lock and publishing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import cast

import requests

from dashboard import promql
from dashboard.prometheus import Point, Sample, instant, make_session, range_points
from dashboard.prometheus import run_concurrently as default_runner
from dashboard.snapshot import Assembled, History, assemble, empty_history, history_series

log = logging.getLogger(__name__)

# How often the 30-minute history is fetched again. Between refreshes the page appends
# each round's live value to the line itself.
HISTORY_REFRESH_S = 60.0

Runner = Callable[[Mapping[str, Callable[[], object]]], dict[str, object]]


class MetricsPoller:
    def __init__(
        self,
        *,
        base_url: str,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        runner: Runner = default_runner,
    ) -> None:
        self.base_url = base_url
        self.session = session or make_session()
        self.clock = clock
        self.runner = runner
        self.history: History = empty_history()
        self.history_at: float | None = None
        self.stale_since: float | None = None

    def resume_from(self, previous: object) -> None:
        """Carries over the previous leader's stale_since, so a failover during an outage
        does not make the badge claim the data just went stale."""
        if isinstance(previous, dict) and previous.get("stale"):
            since = previous.get("stale_since")
            if isinstance(since, int | float) and math.isfinite(since):
                self.stale_since = float(since)

    def _history_due(self, now: float) -> bool:
        return self.history_at is None or now - self.history_at >= HISTORY_REFRESH_S

    def poll(self) -> Assembled:
        now = self.clock()
        instant_calls: dict[str, Callable[[], list[Sample] | None]] = {
            name: partial(instant, self.session, self.base_url, expr)
            for name, expr in {**promql.SCALARS, **promql.VECTORS}.items()
        }
        range_calls: dict[str, Callable[[], list[Point] | None]] = {}
        refresh = self._history_due(now)
        if refresh:
            # Aligned to the step, so consecutive refreshes return the same timestamps
            # and the sparkline does not jitter sideways.
            end = math.floor(now / promql.HISTORY_STEP_S) * promql.HISTORY_STEP_S
            range_calls = {
                series: partial(
                    range_points,
                    self.session,
                    self.base_url,
                    expr,
                    start=end - promql.HISTORY_WINDOW_S,
                    end=end,
                    step_s=promql.HISTORY_STEP_S,
                )
                for series, expr in promql.HISTORY.items()
            }
        # One round, all queries side by side; names do not collide (see dashboard.promql).
        answers = self.runner(
            {**instant_calls, **{f"history:{k}": c for k, c in range_calls.items()}}
        )
        # The casts restate what each call returns; the runner only passes answers through.
        samples = {name: cast("list[Sample] | None", answers.get(name)) for name in instant_calls}
        history_ok = True
        if refresh:
            fetched = {
                series: cast("list[Point] | None", answers.get(f"history:{series}"))
                for series in range_calls
            }
            if all(points is not None for points in fetched.values()):
                self.history = {
                    "cpu": history_series(fetched["cpu"] or []),
                    "memory": history_series(fetched["memory"] or []),
                }
                self.history_at = now
            else:
                # Keep the last good history (the past does not change) and try again
                # next round rather than a minute later.
                history_ok = False
        assembled = assemble(
            samples,
            ts=now,
            history=self.history,
            history_ok=history_ok,
            stale_since=self.stale_since,
        )
        was_stale = self.stale_since is not None
        self.stale_since = assembled.snapshot["stale_since"]
        if assembled.missing and not was_stale:
            log.warning("metrics stale: no usable answer for %s", ", ".join(assembled.missing))
        elif not assembled.missing and was_stale:
            log.info("metrics fresh again")
        return assembled
