"""static/infra.js against scripted websocket frames, in a real browser.

Django's live server renders the page; Playwright stands in for the websocket server, so
each test decides exactly which frames arrive and when the connection drops. The real
stack's end-to-end runs are in test_dashboard.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache

from chaos.models import ChaosEvent
from chaos.selectors import refresh_history
from tests.dashboard.test_timeline_page import PARTIAL_DRAWN, PARTIAL_WORDS
from tests.e2e.conftest import until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WS_URL = "**/ws/infra/"
GIB = 1024**3


def text_is(selector: str) -> str:
    return f"(want) => document.querySelector({selector!r})?.textContent.trim() === want"


def metrics(cpu: float | None = 20.0, **overrides: Any) -> dict[str, Any]:
    now = time.time()
    data: dict[str, Any] = {
        "ts": now,
        "stale": False,
        "stale_since": None,
        "pods": {"running": 3, "total": 3},
        "cpu": {"used_percent": cpu},
        "memory": {"used_percent": 40.0, "used_bytes": 4 * GIB, "total_bytes": 10 * GIB},
        "nodes": [
            {
                "name": "Node 1",
                "ready": True,
                "memory_used_bytes": GIB,
                "memory_total_bytes": 4 * GIB,
            },
        ],
        "history": {"cpu": [[now - 60, 10.0], [now - 30, 30.0]], "memory": []},
    }
    data.update(overrides)
    return data


def pods(*items: tuple[str, str], events: list[Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "namespace": "chaos-demo",
        "desired": 3,
        "ready": sum(1 for _, status in items if status == "Running"),
        "pods": [
            {
                "name": name,
                "status": status,
                "ready": status == "Running",
                "node": "Node 1",
                "age_s": 5,
            }
            for name, status in items
        ],
    }
    if events is not None:
        data["events"] = events
    return data


class FakeServer:
    """The websocket end of every connection the page opens."""

    def __init__(self) -> None:
        self.sockets: list[Any] = []

    def accept(self, ws: Any) -> None:
        self.sockets.append(ws)

    def send(self, kind: str, data: Any) -> None:
        self.sockets[-1].send(json.dumps({"type": kind, "data": data}))

    def send_raw(self, message: str | bytes) -> None:
        self.sockets[-1].send(message)


# This module's own open_page, in place of the e2e conftest's: the page of Django's live
# server, its websocket answered by a FakeServer the test scripts.
@pytest.fixture
def open_page(
    browser: Any, live_server: Any, settings: Any
) -> Iterator[Callable[..., tuple[Any, FakeServer]]]:
    # One poll a second: "nothing heard for three polls" becomes three seconds.
    settings.POLL_INTERVAL = 1.0
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(fake_clock: bool = False, **context_options: Any) -> tuple[Any, FakeServer]:
        context = browser.new_context(**{"timezone_id": "UTC", **context_options})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        if fake_clock:
            # The page's timers then run only when the test moves its clock on.
            page.clock.install()
        server = FakeServer()
        page.route_web_socket(WS_URL, server.accept)
        page.goto(f"{live_server.url}/infra")
        if fake_clock:
            page.clock.pause_at(datetime.now(UTC) + timedelta(seconds=1))
        until(page, "() => document.querySelector('#connection').dataset.state !== undefined")
        deadline = time.monotonic() + 10
        while not server.sockets:
            assert time.monotonic() < deadline, "the page never opened its websocket"
            page.wait_for_timeout(50)
        return page, server

    yield open_
    for context in contexts:
        context.close()
    assert errors == []


def test_frames_update_numbers_levels_nodes_and_sparklines(open_page: Callable[..., Any]) -> None:
    page, server = open_page()
    server.send("metrics", metrics(cpu=42.0))
    until(page, text_is("#metric-cpu .value"), "42.0")
    until(page, text_is("#connection"), "live")
    assert page.get_attribute("#metric-cpu", "data-level") == "ok"
    assert page.text_content("#memory-used") == "4.0"
    assert page.locator("#nodes li").count() == 1
    assert "1.0 / 4.0 GiB" in (page.text_content("#nodes li") or "")
    assert page.get_attribute("#nodes .bar-fill", "width") == "25.00"
    # Two history points plus the live value, whose tip is marked at the right edge.
    assert len((page.get_attribute("#spark-cpu .spark-line", "points") or "").split()) == 3
    assert page.is_visible("#metric-cpu .spark-dot")
    assert page.evaluate("document.querySelector('#metric-cpu .spark-dot').style.left") == "100%"
    assert "hidden" in (page.evaluate("document.querySelector('#waiting').outerHTML"))

    server.send("metrics", metrics(cpu=95.0, pods={"running": 2, "total": 3}))
    until(page, text_is("#metric-cpu .value"), "95.0")
    assert page.get_attribute("#metric-cpu", "data-level") == "critical"
    assert page.get_attribute("#metric-pods", "data-level") == "warning"
    assert page.locator("#metric-pods .cells li.on").count() == 2

    server.send("metrics", metrics(cpu=None))
    until(page, text_is("#metric-cpu .value"), "—")
    assert page.get_attribute("#metric-cpu", "data-level") == "unknown"


def test_numbers_glide_unless_the_viewer_prefers_reduced_motion(
    open_page: Callable[..., Any],
) -> None:
    sample = """async () => {
        const seen = new Set();
        const end = performance.now() + 900;
        while (performance.now() < end) {
            seen.add(document.querySelector('#metric-cpu .value').textContent);
            await new Promise(requestAnimationFrame);
        }
        return [...seen];
    }"""
    for reduce, expect_glide in [("no-preference", True), ("reduce", False)]:
        page, server = open_page(reduced_motion=reduce)
        server.send("metrics", metrics(cpu=10.0))
        until(page, text_is("#metric-cpu .value"), "10.0")
        server.send("metrics", metrics(cpu=60.0))
        seen = set(page.evaluate(sample))
        assert "60.0" in seen or page.text_content("#metric-cpu .value") == "60.0"
        assert bool(seen - {"10.0", "60.0"}) is expect_glide, (reduce, sorted(seen))


def test_stale_snapshot_and_silence_both_show_stale_since(open_page: Callable[..., Any]) -> None:
    page, server = open_page()
    since = datetime(2026, 11, 26, 7, 59, 1, tzinfo=UTC).timestamp()
    server.send("metrics", metrics(stale=True, stale_since=since))
    until(page, text_is("#connection"), "stale since 07:59:01")
    assert page.get_attribute("#connection", "data-state") == "stale"

    server.send("metrics", metrics())
    until(page, text_is("#connection"), "live")
    # No frame for three poll intervals (1 s each here): the poller is gone.
    until(
        page, "() => document.querySelector('#connection').dataset.state === 'stale'", timeout_s=6
    )
    assert (page.text_content("#connection") or "").startswith("stale since ")


def test_pods_update_in_place(open_page: Callable[..., Any]) -> None:
    page, server = open_page()
    server.send("pods", pods(("chaos-demo-1-aaaaa", "Running"), ("chaos-demo-1-bbbbb", "Running")))
    until(page, "() => document.querySelectorAll('#pods [data-pod]').length === 2")
    page.evaluate("document.querySelector('[data-pod=\"chaos-demo-1-aaaaa\"]').mark = 1")

    server.send(
        "pods",
        pods(
            ("chaos-demo-1-aaaaa", "Terminating"),
            ("chaos-demo-1-bbbbb", "Running"),
            ("chaos-demo-1-ccccc", "Pending"),
        ),
    )
    until(page, "() => document.querySelectorAll('#pods [data-pod]').length === 3")
    victim = page.locator('[data-pod="chaos-demo-1-aaaaa"]')
    assert victim.get_attribute("data-status") == "Terminating"
    # The same element, restyled: its pulse is not restarted by every frame.
    assert page.evaluate("document.querySelector('[data-pod=\"chaos-demo-1-aaaaa\"]').mark") == 1
    assert page.get_attribute('[data-pod="chaos-demo-1-ccccc"]', "data-status") == "Pending"
    assert page.text_content("#pods-ready") == "1"

    server.send("pods", pods(("chaos-demo-1-bbbbb", "Running"), ("chaos-demo-1-ccccc", "Running")))
    until(page, "() => document.querySelectorAll('#pods [data-pod]').length === 2")
    assert page.locator('#pods [data-status="Running"]').count() == 2


def test_kubernetes_events_panel_appears_with_the_first_events(
    open_page: Callable[..., Any],
) -> None:
    page, server = open_page()
    assert page.is_hidden(".k8s-panel")
    server.send(
        "pods",
        pods(
            ("chaos-demo-1-aaaaa", "Running"),
            events=[
                {
                    "at": "2026-11-26T08:00:00+00:00",
                    "reason": "Killing",
                    "text": "Stopping container nginx",
                }
            ],
        ),
    )
    until(page, "() => !document.querySelector('.k8s-panel').hidden")
    assert "08:00:00 Killing Stopping container nginx" in (page.text_content("#k8s-events") or "")


def test_chaos_frames_fill_the_feed_and_then_the_recovery(open_page: Callable[..., Any]) -> None:
    page, server = open_page()
    event = {
        "id": 41,
        "pod": "chaos-demo-1-aaaaa",
        "at": "2026-11-26T08:00:00+00:00",
        "outcome": "deleted",
        "recovery_s": None,
    }
    server.send("chaos", event)
    until(page, "() => document.querySelectorAll('#chaos-feed li').length === 1")
    assert "A visitor killed chaos-demo-1-aaaaa" in (page.text_content("#chaos-feed li") or "")
    assert "healing" in (page.text_content("#chaos-feed li") or "")
    assert "chaos-demo-1-aaaaa" in (page.text_content("#chaos-history li") or "")

    server.send(
        "chaos", {**event, "recovery_s": 2.44, "recovery": {"p50_s": 2.1, "p95_s": 3.9, "count": 5}}
    )
    until(page, "() => document.querySelector('#chaos-feed li').dataset.healed === 'true'")
    assert page.locator("#chaos-feed li").count() == 1
    assert "healed in 2.4 s" in (page.text_content("#chaos-feed li") or "")
    assert page.text_content("#recovery-p50") == "2.1"
    assert page.text_content("#recovery-p95") == "3.9"
    assert page.text_content("#recovery-count") == "5"

    server.send("chaos", {**event, "id": 42, "pod": "chaos-demo-1-bbbbb"})
    until(page, "() => document.querySelectorAll('#chaos-feed li').length === 2")
    # Newest first.
    assert "chaos-demo-1-bbbbb" in (page.text_content("#chaos-feed li") or "")


def test_hostile_frames_are_ignored_and_names_stay_text(open_page: Callable[..., Any]) -> None:
    page, server = open_page()
    server.send_raw("{not json")
    server.send_raw(b"\x00\x01binary")
    server.send("surprise", {"x": 1})
    server.send_raw(json.dumps({"no": "type"}))
    evil = '<img src=x id=pwned onerror="document.title=1">'
    server.send("pods", pods((evil, "Running")))
    server.send(
        "chaos", {"id": '1"]', "pod": evil, "at": None, "outcome": "deleted", "recovery_s": None}
    )
    server.send("metrics", metrics(cpu=33.0))

    until(page, text_is("#metric-cpu .value"), "33.0")
    assert page.locator("#pwned").count() == 0
    assert page.locator("#pods [data-pod]").first.get_attribute("data-pod") == evil
    assert evil in (page.text_content("#chaos-feed") or "")
    assert page.text_content("#connection") == "live"


def test_a_dropped_connection_reconnects_and_resyncs(open_page: Callable[..., Any]) -> None:
    page, server = open_page()
    server.send("metrics", metrics())
    until(page, text_is("#connection"), "live")

    server.sockets[-1].close()
    ChaosEvent.objects.create(
        outcome=ChaosEvent.Outcome.DELETED,
        pod_name="chaos-demo-1-missed",
        client_hash="h",
        recovery_s=1.5,
    )
    # As the watcher does when it records a heal: the cached history is recomputed.
    refresh_history()
    until(page, "() => document.querySelector('#connection').dataset.state === 'reconnecting'")
    assert page.text_content("#connection") == "reconnecting…"
    # The first retry comes within the first backoff step (0.25-2.75 s), well under 5 s.
    deadline = time.monotonic() + 5
    while len(server.sockets) < 2:
        assert time.monotonic() < deadline, "no reconnect attempt"
        page.wait_for_timeout(50)
    server.send("metrics", metrics())
    until(page, text_is("#connection"), "live")
    # A kill that happened while the page was away shows up in the history after resync.
    until(page, "() => document.querySelector('#chaos-history').textContent.includes('missed')")
    assert "healed in 1.5 s" in (page.text_content("#chaos-history li") or "")


def test_a_375_px_phone_never_scrolls_sideways(open_page: Callable[..., Any]) -> None:
    page, server = open_page(viewport={"width": 375, "height": 812}, timezone_id="Asia/Kolkata")
    long_name = "chaos-demo-" + "x" * 40 + "-abcde"
    server.send("metrics", metrics(cpu=99.9))
    server.send(
        "pods",
        pods(
            (long_name, "Terminating"),
            ("chaos-demo-1-bbbbb", "Running"),
            ("chaos-demo-1-ccccc", "Running"),
            ("chaos-demo-1-ddddd", "Pending"),
            events=[{"at": 0, "reason": "SuccessfulCreate", "text": "Created pod: " + long_name}],
        ),
    )
    server.send(
        "chaos",
        {
            "id": 1,
            "pod": long_name,
            "at": "2026-11-26T08:00:00",
            "outcome": "deleted",
            "recovery_s": 12.25,
        },
    )
    until(page, "() => document.querySelectorAll('#chaos-feed li').length === 1")

    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    # Times show in the viewer's zone (UTC+5:30 here); one without a zone is read as UTC,
    # as the server reads it.
    assert page.text_content("#chaos-feed time") == "13:30:00"


def sockets_after(page: Any, server: FakeServer, ms: int) -> int:
    """Moves the page's (fake) clock on by `ms` and returns how many sockets it opened."""
    page.clock.run_for(ms)
    page.wait_for_timeout(200)  # real time, for a new socket to reach the route
    return len(server.sockets)


def door_shows(page: Any, kind: str) -> None:
    until(page, "(kind) => document.querySelector('#door').dataset.kind === kind", kind)
    assert page.get_attribute("#connection", "data-state") == "paused"
    assert page.text_content("#connection") == "paused"
    assert page.is_visible("#door-next")
    assert page.is_visible(f"#door .door-icon-{kind}")


def test_too_many_tabs_says_so_and_retries_slowly(
    open_page: Callable[..., Any], artifacts: Path
) -> None:
    page, server = open_page(fake_clock=True)
    server.sockets[-1].close(code=4429, reason="too many connections")
    door_shows(page, "tabs")
    message = page.locator("#door [role=status]")
    assert message.get_attribute("aria-live") == "polite"
    assert (message.text_content() or "").startswith("Too many tabs open. ")
    page.screenshot(path=str(artifacts / "door-too-many-tabs.png"), animations="disabled")

    # Slowly: not within 30 s, then within 30 + 60 s.
    assert sockets_after(page, server, 29_000) == 1
    assert sockets_after(page, server, 62_000) == 2
    server.sockets[-1].close(code=4429, reason="too many connections")
    # The same reason again: the notice is not rewritten (nor announced again).
    page.evaluate("document.querySelector('#door-text').mark = 1")
    page.wait_for_timeout(200)
    assert page.evaluate("document.querySelector('#door-text').mark") == 1

    # Closing other tabs and pressing "Try now" goes in at once, without waiting.
    page.click("#door-retry")
    deadline = time.monotonic() + 5
    while len(server.sockets) < 3:
        assert time.monotonic() < deadline, "Try now opened no connection"
        page.wait_for_timeout(50)
    # Kept open for a second, it is in, even before any frame (a fresh server has none).
    page.clock.run_for(900)
    assert page.get_attribute("#door", "data-kind") == "tabs"
    page.clock.run_for(200)
    assert page.get_attribute("#door", "data-kind") is None
    assert page.get_attribute("#connection", "data-state") == "stale"
    assert page.is_hidden("#door-next")
    assert (page.text_content("#door [role=status]") or "").strip() == ""


def test_server_full_says_so_and_retries_later_with_jitter(
    open_page: Callable[..., Any], artifacts: Path
) -> None:
    page, server = open_page(fake_clock=True, viewport={"width": 390, "height": 844})
    server.send("metrics", metrics())
    until(page, text_is("#connection"), "live")
    server.sockets[-1].close(code=4503, reason="server full")
    door_shows(page, "full")
    assert (page.text_content("#door [role=status]") or "").startswith("The server is full. ")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(artifacts / "door-server-full-phone.png"), animations="disabled")
    # Later, with jitter: after 5 s at the earliest, 25 s at the latest.
    assert sockets_after(page, server, 4_900) == 1
    assert sockets_after(page, server, 20_200) == 2
    # Let in again: the notice goes, the numbers are live.
    server.send("metrics", metrics())
    until(page, text_is("#connection"), "live")
    assert page.get_attribute("#door", "data-kind") is None


def test_too_slow_reconnects_at_once_and_a_lost_one_waits(open_page: Callable[..., Any]) -> None:
    page, server = open_page(fake_clock=True)
    server.send("metrics", metrics())
    until(page, text_is("#connection"), "live")
    # 4408: the page fell behind; a new connection catches it up, with no wait at all.
    server.sockets[-1].close(code=4408, reason="too far behind")
    assert sockets_after(page, server, 0) == 2
    assert page.get_attribute("#door", "data-kind") is None
    # Any other close waits a random 0.25-2.75 s: after a restart, pages spread out.
    server.sockets[-1].close()
    assert sockets_after(page, server, 240) == 2
    assert sockets_after(page, server, 2_600) == 3


def step(
    name: str, state: str, s: float | None = None, end_s: float | None = None
) -> dict[str, Any]:
    return {"name": name, "state": state, "s": s, "end_s": end_s}


def test_a_kill_s_timeline_grows_with_its_frames_and_says_what_was_missed(
    open_page: Callable[..., Any],
) -> None:
    # No history cached by an earlier test: the chart starts empty.
    cache.clear()
    page, server = open_page()
    server.send("metrics", metrics())
    names = ("created", "scheduled", "started", "ready")
    # Within the chart's 24 hours.
    recently = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    kill = {"id": 41, "pod": "chaos-demo-1-aaaaa", "at": recently}
    pending = {"state": "pending", "s": None}

    def frame(steps: list[dict[str, Any]], recovery_s: float | None, **extra: Any) -> None:
        phases = {
            "complete": False,
            "unknown": [],
            "steps": steps,
            "terminated": pending,
            **extra,
        }
        server.send(
            "chaos", {**kill, "outcome": "deleted", "recovery_s": recovery_s, "phases": phases}
        )

    row = '#chaos-history li[data-event-id="41"]'
    segs = f"{row} .tl-seg"

    def drawn() -> list[tuple[str, str, float, float]]:
        return [
            (s["phase"], s["state"], float(s["x"]), float(s["width"]))
            for s in page.eval_on_selector_all(
                segs,
                "els => els.map(e => ({phase: e.dataset.phase, state: e.dataset.state,"
                " x: e.getAttribute('x'), width: e.getAttribute('width')}))",
            )
        ]

    frame([step(n, "pending") for n in names], None)
    until(page, f"() => !!document.querySelector('{row} .tl:not([hidden])')")
    # Nothing measured yet: a pulse where the first phase will grow.
    assert [d[1] for d in drawn()] == ["pending"] * 4
    assert drawn()[0][3] > 0

    frame([step("created", "done", 0.5, 0.5), *(step(n, "pending") for n in names[1:])], None)
    until(page, f"() => document.querySelector('{segs}').dataset.state === 'done'")
    # On the list's 5 s scale: half a second is a tenth of the width.
    assert drawn()[0] == ("created", "done", 0.0, 10.0)

    # Healed after a watcher restart: scheduled and started unseen, drawn grey as one
    # stretch up to the moment known, then the measured probe phase.
    frame(
        [
            step("created", "done", 0.5, 0.5),
            step("scheduled", "unknown"),
            step("started", "unknown", None, 2.0),
            step("ready", "done", 0.5, 2.5),
        ],
        2.5,
        unknown=["scheduled", "started"],
    )
    until(page, f"() => document.querySelector('{row}').dataset.healed === 'true'")
    # Exactly as the server draws the same kill.
    assert drawn() == PARTIAL_DRAWN
    words = page.eval_on_selector_all(f"{row} .tl-word", "els => els.map(e => e.textContent)")
    assert words == PARTIAL_WORDS
    assert page.get_attribute(row, "data-complete") == "false"
    # The chart got its stack: the measured phases, and the rest of the 2.5 s in grey.
    until(page, "() => document.querySelectorAll('#recovery-chart .rchart-bars rect').length === 3")
    chart = page.eval_on_selector_all(
        "#recovery-chart .rchart-bars rect", "els => els.map(e => e.dataset.phase)"
    )
    assert chart == ["created", "ready", "unknown"]
    # A slower kill rescales every bar: 8 s now spans the width.
    server.send(
        "chaos",
        {
            "id": 42,
            "pod": "chaos-demo-1-bbbbb",
            "at": recently,
            "outcome": "deleted",
            "recovery_s": 7.6,
            "phases": None,
        },
    )
    until(page, "() => document.querySelector('#chaos-history').dataset.scale === '8'")
    assert drawn()[0] == ("created", "done", 0.0, 6.25)
