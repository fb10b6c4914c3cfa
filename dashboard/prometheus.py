"""The one seam to Prometheus's HTTP API: thin functions that take a requests.Session.

Every failure (connection refused, timeout, non-200, `status: error`, a body of the wrong
shape) comes back as None rather than an exception, and every NaN or infinite sample as
a None value: the poller must keep running through a Prometheus outage, and JSON must
never carry NaN. "No answer" (None) and "an answer with no samples" ([]) stay distinct,
because only the caller knows whether an empty result is normal.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

# (connect, read) seconds. The whole round must fit well inside one poll interval (5 s).
TIMEOUT: tuple[float, float] = (1.0, 3.0)
# A read timeout bounds each socket read, not a whole response: a server that trickles
# bytes could hold a query far longer. The round gives up on such a query at this point.
ROUND_DEADLINE_S = 4.0
# Enough connections for one round's queries to run side by side.
MAX_CONCURRENT = 12

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float | None


Point = tuple[int, float]


def make_session() -> requests.Session:
    session = requests.Session()
    # No retries: a failed query is retried by the next round, 5 s later, with fresh data.
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=MAX_CONCURRENT, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["Accept"] = "application/json"
    return session


def parse_number(raw: object) -> float | None:
    """Prometheus sends sample values as strings ("1", "NaN", "+Inf"); only finite ones count."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None
    try:
        number = float(raw)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _get_data(
    session: requests.Session, url: str, params: dict[str, str], timeout: tuple[float, float]
) -> dict[str, Any] | None:
    try:
        response = session.get(url, params=params, timeout=timeout)
        if response.status_code != 200:
            log.debug("prometheus %s: HTTP %s", params.get("query"), response.status_code)
            return None
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        # ValueError covers a body that is not JSON (a proxy's HTML error page, say).
        log.debug("prometheus %s: %s", params.get("query"), exc)
        return None
    if not isinstance(body, dict) or body.get("status") != "success":
        log.debug("prometheus %s: %.200r", params.get("query"), body)
        return None
    data = body.get("data")
    return data if isinstance(data, dict) else None


def _labels(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


def _server_timeout(timeout: tuple[float, float]) -> str:
    # Prometheus abandons the evaluation itself once we would have stopped waiting.
    return f"{timeout[1]:g}s"


def instant(
    session: requests.Session,
    base_url: str,
    promql: str,
    *,
    timeout: tuple[float, float] = TIMEOUT,
) -> list[Sample] | None:
    """The samples of an instant query, or None when Prometheus did not answer properly."""
    data = _get_data(
        session,
        f"{base_url.rstrip('/')}/api/v1/query",
        {"query": promql, "timeout": _server_timeout(timeout)},
        timeout,
    )
    if data is None:
        return None
    result = data.get("result")
    try:
        if data.get("resultType") == "scalar" and isinstance(result, list):
            return [Sample({}, parse_number(result[1]))]
        if data.get("resultType") == "vector" and isinstance(result, list):
            return [
                Sample(_labels(item.get("metric")), parse_number(item["value"][1]))
                for item in result
            ]
    except (KeyError, IndexError, TypeError, AttributeError):
        log.debug("prometheus %s: malformed result %.200r", promql, result)
    return None


def scalar(samples: list[Sample] | None) -> float | None:
    """The one value of an aggregate query; None if it failed, was empty or not finite."""
    if not samples or len(samples) != 1:
        return None
    return samples[0].value


def range_points(
    session: requests.Session,
    base_url: str,
    promql: str,
    *,
    start: float,
    end: float,
    step_s: int,
    timeout: tuple[float, float] = TIMEOUT,
) -> list[Point] | None:
    """The points of a one-series range query, non-finite ones dropped; None on failure.

    An aggregate with no data at all yields no series: that is an empty history ([]), not
    a failure. Several series mean the query is not the aggregate it should be: a failure.
    """
    data = _get_data(
        session,
        f"{base_url.rstrip('/')}/api/v1/query_range",
        {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": str(step_s),
            "timeout": _server_timeout(timeout),
        },
        timeout,
    )
    if data is None or data.get("resultType") != "matrix":
        return None
    result = data.get("result")
    if not isinstance(result, list) or len(result) > 1:
        return None
    if not result:
        return []
    points: list[Point] = []
    try:
        for ts, raw in result[0]["values"]:
            value = parse_number(raw)
            if value is not None:
                points.append((int(float(ts)), value))
    except (KeyError, TypeError, ValueError):
        log.debug("prometheus %s: malformed matrix", promql)
        return None
    return points


def run_concurrently(
    calls: Mapping[str, Callable[[], T | None]], *, deadline_s: float = ROUND_DEADLINE_S
) -> dict[str, T | None]:
    """Runs one round of queries side by side, so a round takes the slowest query's time.

    A call that raises or is still running at the deadline counts as unanswered (None):
    one bad query must cost the round that query's value, not the whole snapshot.
    """
    if not calls:
        return {}
    pool = ThreadPoolExecutor(
        max_workers=min(MAX_CONCURRENT, len(calls)), thread_name_prefix="promql"
    )
    try:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        wait(futures.values(), timeout=deadline_s)
        results: dict[str, T | None] = {}
        for name, future in futures.items():
            if not future.done():
                log.debug("prometheus query %s: no answer within %s s", name, deadline_s)
                results[name] = None
            elif (error := future.exception()) is not None:
                log.warning("prometheus query %s failed unexpectedly: %r", name, error)
                results[name] = None
            else:
                results[name] = future.result()
        return results
    finally:
        # Do not wait for stragglers: their own read timeout ends them soon after.
        pool.shutdown(wait=False, cancel_futures=True)
