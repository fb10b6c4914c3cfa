"""The chaos loop as two viewers see it, checked against what the backend measured.

tests/e2e/test_dashboard.py walks the page's side of a kill (messages, countdown,
history). This one holds the backend to its word in a real browser: every viewer sees the
same kill, the recovery time a viewer reads is the one recorded for the event, no real
node name reaches any page, and when Kubernetes' disruption budget refuses the eviction
the visitor reads that, in words, on the page and in the live feed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis

from stackkit.stack import Devstack, RedisDb, events, free_port, manage
from tests.chaos.stack import pods, restore_budget, set_max_unavailable, wait_budget, wait_healthy
from tests.conftest import StartProcess
from tests.e2e.conftest import until
from tests.e2e.test_dashboard import (
    HEALTHY_THREE,
    healed_feed_text,
    start_web,
    visitor,
    wait_for_live,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
def app_env(devstack: Devstack) -> dict[str, str]:
    # A Redis database of this file's own, emptied first: no worker left by another run
    # may hold the leader locks these processes need, and budgets start fresh.
    url = devstack.redis_db(RedisDb.E2E_CHAOS)
    redis.Redis.from_url(url).flushdb()
    wait_healthy(devstack)
    return devstack.app_env(REDIS_URL=url, POLL_INTERVAL="2", TRUSTED_PROXY_COUNT="1")


@pytest.fixture
def url(app_env: dict[str, str], start_process: StartProcess) -> str:
    """The app as `make run` runs it (poller, watcher, web), on a port of its own."""
    start_process(manage("poll_metrics"), app_env, name="poller")
    start_process(manage("watch_pods"), app_env, name="watcher")
    port = free_port()
    start_web(app_env, start_process, port)
    return f"http://127.0.0.1:{port}"


def test_every_viewer_sees_the_kill_and_the_recovery_the_backend_measured(
    devstack: Devstack,
    url: str,
    browser: Any,
    artifacts: Path,
) -> None:
    contexts = [browser.new_context(extra_http_headers=visitor()) for _ in range(2)]
    try:
        clicker, onlooker = (context.new_page() for context in contexts)
        for page in (clicker, onlooker):
            page.goto(f"{url}/infra")
            wait_for_live(page)
            until(page, HEALTHY_THREE, timeout_s=60)
        before = clicker.eval_on_selector_all(
            "#pods [data-pod]", "els => els.map(e => e.dataset.pod)"
        )

        clicker.click("#chaos-button")
        for page in (clicker, onlooker):
            page.wait_for_selector('#pods [data-pod][data-status="Terminating"]', timeout=10_000)
        terminating = {
            page.eval_on_selector_all(
                '#pods [data-pod][data-status="Terminating"]', "els => els.map(e => e.dataset.pod)"
            )[0]
            for page in (clicker, onlooker)
        }
        assert len(terminating) == 1, "both viewers see the same pod die"
        victim = terminating.pop()
        assert victim in before
        clicker.screenshot(path=str(artifacts / "chaos-e2e-terminating.png"), full_page=True)

        shown: list[str] = []
        for page in (clicker, onlooker):
            text = healed_feed_text(page, victim, before)
            found = re.search(r"healed in (\d+\.\d) s", text)
            assert found, text
            shown.append(found.group(1))
            html = page.content()
            assert "kwok-node" not in html, "a real node name reached the page"
        onlooker.screenshot(path=str(artifacts / "chaos-e2e-healed.png"), full_page=True)
        # Kubernetes writes no Event for an eviction; the narrated feed tells it from the
        # victim's DisruptionTarget condition.
        for page in (clicker, onlooker):
            assert f"{victim} was evicted" in (page.text_content("#k8s-events") or "")

        row = next(e for e in events(devstack) if e["pod_name"] == victim)
        assert row["outcome"] == "deleted"
        assert row["recovery_s"] is not None
        assert shown == [f"{row['recovery_s']:.1f}"] * 2
    finally:
        for context in contexts:
            context.close()
    wait_healthy(devstack)


BUDGET_WORDS = "Kubernetes refused: the disruption budget allows only one pod down at a time"


def test_kubernetes_refusing_the_eviction_is_said_in_words_on_the_page_and_in_the_feed(
    devstack: Devstack,
    url: str,
    browser: Any,
    artifacts: Path,
) -> None:
    # A budget that allows no pod down: the app's own look passes (3/3 Ready), and the
    # apiserver refuses the eviction. What the visitor reads is Kubernetes' answer.
    before = {p["metadata"]["uid"] for p in pods(devstack)}
    context = browser.new_context(extra_http_headers=visitor())
    try:
        set_max_unavailable(devstack, 0)
        wait_budget(devstack, healthy=3, allowed=0)
        page = context.new_page()
        page.goto(f"{url}/infra")
        wait_for_live(page)
        page.click("#chaos-button")
        page.wait_for_selector('#chaos-feed [data-refusal="disruption_budget"]', timeout=10_000)
        message = page.text_content("#chaos-message") or ""
        assert message == f"{BUDGET_WORDS}."
        row = page.locator('#chaos-feed [data-refusal="disruption_budget"]').first
        assert row.is_visible()
        assert BUDGET_WORDS in (row.text_content() or "")
        assert not page.is_visible(".feed-empty"), "the feed still says it is quiet"
        page.screenshot(path=str(artifacts / "chaos-e2e-budget-refused.png"), full_page=True)
        latest = events(devstack)[0]
        assert (latest["outcome"], latest["reason"]) == ("budget_refused", "disruption_budget")
        after = pods(devstack)
        assert {p["metadata"]["uid"] for p in after} == before, "a pod died anyway"
        assert not any(p["metadata"].get("deletionTimestamp") for p in after)
    finally:
        context.close()
        restore_budget(devstack)
    wait_healthy(devstack)
