"""Reading metrics in integration tests: an exposition endpoint directly, or PromQL.

Reading an endpoint directly does not go through Prometheus's query API, so it cannot
disturb tests that count the queries Prometheus answers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from prometheus_client.parser import text_string_to_metric_families

from stackkit.stack import STATE_DIR, Devstack


def sample_sum(url: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    text = requests.get(url, timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def promql(devstack: Devstack, query: str) -> list[dict[str, object]]:
    body = requests.get(
        f"{devstack.prometheus_url}/api/v1/query", params={"query": query}, timeout=5
    ).json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_promql_value(
    devstack: Devstack, query: str, expected: float, *, timeout: float = 60
) -> float:
    """Polls `query` until its single result equals `expected`; returns the seconds taken."""
    started = time.monotonic()
    seen: list[dict[str, object]] = []
    while time.monotonic() - started < timeout:
        seen = promql(devstack, query)
        if len(seen) == 1 and float(seen[0]["value"][1]) == expected:  # type: ignore[index]
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"{query} did not become {expected} within {timeout} s: {seen}")


@contextmanager
def prometheus_target(*ports: int) -> Iterator[str]:
    """Has the devstack Prometheus scrape 127.0.0.1:<port> for each port, in job
    "app-tests" (file-based discovery, re-read every 5 s). Yields the target file's id,
    also set as the `run` label on every series scraped from it."""
    run = uuid.uuid4().hex[:12]
    directory = STATE_DIR / "prometheus-targets"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"test-{run}.json"
    targets = [{"targets": [f"127.0.0.1:{port}" for port in ports], "labels": {"run": run}}]
    # Written under another name and renamed, so Prometheus never reads half a file.
    partial = directory / f".test-{run}.tmp"
    partial.write_text(json.dumps(targets))
    partial.rename(path)
    try:
        yield run
    finally:
        path.unlink(missing_ok=True)
