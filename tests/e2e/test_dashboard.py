"""/infra in a real browser against the real stack: web + poller + watcher processes,
Prometheus, Redis and the kwok cluster."""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stackkit.stack import Devstack, RedisDb, daphne_command, free_port, manage, wait_http
from tests.chaos.stack import scale
from tests.conftest import StartProcess
from tests.e2e.conftest import DESKTOP, until

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# Poll often so a test waits seconds, not tens of seconds, for the next number.
POLL_INTERVAL_S = "2"
PHONE = {"width": 390, "height": 844}
# Scrapes every 5 s, a poll every 2 s and a rate window: a minute is generous.
CLUSTER_CHANGE_TIMEOUT_S = 60
HEALTHY_THREE = """() => {
    const pods = [...document.querySelectorAll('#pods [data-pod]')];
    return pods.length === 3
        && pods.every(p => p.dataset.status === 'Running' && p.dataset.ready === 'true');
}"""
REPLACEMENT_RUNNING = """(before) => [...document.querySelectorAll('#pods [data-pod]')].some(
    p => !before.includes(p.dataset.pod) && p.dataset.status === 'Running')"""


@pytest.fixture
def app_env(devstack: Devstack) -> dict[str, str]:
    import redis

    # A Redis database of these tests' own, emptied before each: the web, poller and
    # watcher they start must not stand by behind (or read frames from) workers that other
    # test runs left on the shared test database, and each test starts with fresh budgets.
    url = devstack.redis_db(RedisDb.E2E_DASHBOARD)
    redis.Redis.from_url(url).flushdb()
    return devstack.app_env(REDIS_URL=url, POLL_INTERVAL=POLL_INTERVAL_S)


def start_web(
    app_env: dict[str, str], start_process: StartProcess, port: int, **env: str
) -> subprocess.Popen[bytes]:
    """A daphne on a given port (the `web_server` fixture picks its own, and a restart must
    come back on the same one)."""
    proc = start_process(
        daphne_command(port),
        {**app_env, **env},
        name=f"web-{port}",
    )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc


@pytest.fixture
def workers(app_env: dict[str, str], start_process: StartProcess) -> None:
    start_process(manage("poll_metrics"), app_env, name="poller")
    start_process(manage("watch_pods"), app_env, name="watcher")


# Time for a fresh Prometheus to hold two history steps plus one poller refresh.
HISTORY_TIMEOUT_S = 150


def healed_feed_text(page: Any, victim: str, before: list[str]) -> str:
    """Waits for the kill to heal as a viewer sees it: a replacement Running, three healthy
    pods again, and the feed's row for the victim marked healed. Returns that row's text."""
    until(page, REPLACEMENT_RUNNING, before, timeout_s=30)
    until(page, HEALTHY_THREE, timeout_s=30)
    healed = page.locator('#chaos-feed li[data-healed="true"]').first
    healed.wait_for(timeout=30_000)
    text = healed.text_content() or ""
    assert victim in text
    return text


def count_is(selector: str, n: int) -> str:
    return f"() => document.querySelectorAll({selector!r}).length === {n}"


def number(page: Any, selector: str) -> float:
    text = page.text_content(selector) or ""
    assert re.fullmatch(r"\d+(\.\d)?", text), f"{selector} shows {text!r}, not a number"
    return float(text)


def wait_for_live(page: Any, timeout_ms: int = 45_000) -> None:
    page.wait_for_selector('#connection[data-state="live"]', timeout=timeout_ms)


def test_page_shows_real_numbers_and_follows_the_cluster_live(
    devstack: Devstack,
    app_env: dict[str, str],
    start_process: StartProcess,
    workers: None,
    open_page: Callable[..., Any],
    artifacts: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    start_web(app_env, start_process, int(url.rsplit(":", 1)[1]))
    page = open_page(url)
    wait_for_live(page)
    # Marks this document: if the page reloaded, the mark would be gone.
    page.evaluate("window.__sameDocument = true")

    # The numbers come from Prometheus and the watch.
    until(page, "() => /^\\d+$/.test(document.querySelector('#metric-pods .value').textContent)")
    pods_before = number(page, "#metric-pods .value")
    assert pods_before >= 3
    assert 0 <= number(page, "#metric-cpu .value") <= 100
    assert 0 < number(page, "#metric-memory .value") <= 100
    for card in ("pods", "cpu", "memory"):
        assert page.get_attribute(f"#metric-{card}", "data-level") in {"ok", "warning", "critical"}
    assert page.locator("#nodes li").count() >= 1
    # A kill from an earlier test may still be healing.
    until(page, HEALTHY_THREE, timeout_s=CLUSTER_CHANGE_TIMEOUT_S)
    # On a Prometheus that has just started (a fresh CI machine) the 30-minute history
    # needs two 30 s steps of data, and the poller refreshes it once a minute.
    until(
        page,
        "() => !!document.querySelector('#spark-cpu .spark-line').getAttribute('points')",
        timeout_s=HISTORY_TIMEOUT_S,
    )
    assert page.locator("#spark-cpu .spark-line").get_attribute("points")
    assert page.text_content("#connection") == "live"
    page.screenshot(path=str(artifacts / "dashboard-desktop.png"), full_page=True)

    phone = open_page(url, PHONE)
    wait_for_live(phone)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    box = phone.locator("#chaos-button").bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE["width"]
    phone.screenshot(path=str(artifacts / "dashboard-phone.png"), full_page=True)

    try:
        scale(devstack, 5)
        # The watch shows the new pods at once, Prometheus's count follows a scrape later.
        until(page, count_is("#pods [data-pod]", 5), timeout_s=CLUSTER_CHANGE_TIMEOUT_S)
        until(
            page,
            "(n) => Number(document.querySelector('#metric-pods .value').textContent) === n",
            pods_before + 2,
            timeout_s=CLUSTER_CHANGE_TIMEOUT_S,
        )
    finally:
        scale(devstack, 3)
    until(page, count_is("#pods [data-pod]", 3), timeout_s=CLUSTER_CHANGE_TIMEOUT_S)
    assert page.evaluate("window.__sameDocument") is True


def test_badge_reconnects_when_the_server_comes_back(
    app_env: dict[str, str],
    start_process: StartProcess,
    workers: None,
    open_page: Callable[..., Any],
    artifacts: Path,
) -> None:
    port = free_port()
    web = start_web(app_env, start_process, port)
    page = open_page(f"http://127.0.0.1:{port}")
    wait_for_live(page)

    web.terminate()
    web.wait(timeout=15)
    page.wait_for_selector('#connection[data-state="reconnecting"]', timeout=15_000)
    assert page.text_content("#connection") == "reconnecting…"
    page.screenshot(path=str(artifacts / "dashboard-reconnecting.png"))
    # Numbers stay on screen while the connection is down: old data beats an empty page.
    assert page.text_content("#metric-cpu .value") != "—"

    started = time.monotonic()
    start_web(app_env, start_process, port)
    # Backoff is capped at 30 s; after a short outage the next try is due within seconds.
    wait_for_live(page, timeout_ms=40_000)
    assert time.monotonic() - started < 40
    assert page.text_content("#connection") == "live"


def visitor() -> dict[str, str]:
    # With one trusted proxy the client address is the last X-Forwarded-For entry: each
    # run brings a new visitor, so earlier presses (by other tests) cannot spend its budget.
    octets = ".".join(str(random.randint(1, 254)) for _ in range(3))
    return {"X-Forwarded-For": f"10.{octets}"}


def test_a_kill_is_seen_by_every_viewer_and_the_feed_shows_the_recovery(
    app_env: dict[str, str],
    start_process: StartProcess,
    workers: None,
    open_page: Callable[..., Any],
    artifacts: Path,
) -> None:
    """Two viewers, one presses the button."""
    port = free_port()
    start_web(app_env, start_process, port, TRUSTED_PROXY_COUNT="1", CHAOS_RATE_PER_IP="1/m")
    url = f"http://127.0.0.1:{port}"
    clicker = open_page(url, DESKTOP, visitor())
    onlooker = open_page(url, PHONE, visitor())
    for page in (clicker, onlooker):
        wait_for_live(page)
        until(page, HEALTHY_THREE, timeout_s=CLUSTER_CHANGE_TIMEOUT_S)
    before = clicker.eval_on_selector_all("#pods [data-pod]", "els => els.map(e => e.dataset.pod)")

    clicker.click("#chaos-button")
    until(clicker, "() => document.querySelector('#chaos-message').textContent.length > 0")
    found = re.match(r"You killed (\S+)\.", clicker.text_content("#chaos-message") or "")
    assert found, clicker.text_content("#chaos-message")
    victim = found.group(1)
    assert victim in before

    # The dot turns red for everyone, not only for the visitor who pressed.
    for page in (clicker, onlooker):
        page.wait_for_selector(
            f'#pods [data-pod="{victim}"][data-status="Terminating"]', timeout=10_000
        )
    clicker.screenshot(path=str(artifacts / "chaos-terminating-desktop.png"), full_page=True)

    for page in (clicker, onlooker):
        text = healed_feed_text(page, victim, before)
        assert re.search(r"healed in \d+\.\d s", text), text
        assert re.fullmatch(r"\d+\.\d", page.text_content("#recovery-p50") or "")
        assert victim in (page.locator("#chaos-history li").first.text_content() or "")
    assert (clicker.locator("#chaos-feed li").first.text_content() or "").strip().startswith("You")
    until(
        clicker,
        "(pod) => document.querySelector('#chaos-message').textContent"
        ".startsWith(`Kubernetes replaced ${pod} in `)",
        victim,
    )
    assert "A visitor killed" in (onlooker.locator("#chaos-feed li").first.text_content() or "")
    clicker.screenshot(path=str(artifacts / "chaos-healed-desktop.png"), full_page=True)
    onlooker.screenshot(path=str(artifacts / "chaos-healed-phone.png"), full_page=True)

    # Over the visitor's budget: a countdown instead of a stuck or silently dead button.
    clicker.click("#chaos-button")
    until(clicker, "() => document.querySelector('#chaos-button').textContent.includes('Try')")
    assert re.fullmatch(
        r"Try again in \d+ s", (clicker.text_content("#chaos-button") or "").strip()
    )
    assert clicker.is_disabled("#chaos-button")
    assert "breather" in (clicker.text_content("#chaos-message") or "")
