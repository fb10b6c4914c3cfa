"""A kill's recovery timeline in a real browser, against the real stack: one viewer presses
the button, another watches the kill's bar appear, grow and complete, and reads the same
phase durations the watcher stored for the event. Screenshots of the bars and the 24 h
chart, desktop and phone, land in test-artifacts/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stackkit.stack import Devstack, events
from tests.chaos.stack import wait_healthy
from tests.e2e.conftest import until
from tests.e2e.test_dashboard import DESKTOP, HEALTHY_THREE, PHONE, visitor, wait_for_live

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

LABELS = {
    "created": ("controller", "the ReplicaSet controller created a replacement"),
    "scheduled": ("scheduler", "the scheduler placed it on a node"),
    "started": ("kubelet", "the kubelet started its containers"),
    "ready": ("probe", "the readiness probe passed"),
}


def row(event_id: str) -> str:
    return f'#chaos-history li.event[data-event-id="{event_id}"]'


def expected_words(phases: dict[str, Any]) -> list[str]:
    words = []
    for step in phases["steps"]:
        label, what = LABELS[step["name"]]
        assert step["state"] == "done", step
        words.append(f"{label} {step['s']:.2f} s: {what}")
    words.append(f"victim shut down in {phases['terminated']['s']:.2f} s")
    return words


def test_a_kill_s_bar_appears_grows_and_completes_for_another_viewer(
    devstack: Devstack, chaos_site: str, browser: Any, artifacts: Path
) -> None:
    contexts = [
        browser.new_context(viewport=DESKTOP, extra_http_headers=visitor()),
        browser.new_context(viewport=DESKTOP, extra_http_headers=visitor()),
        browser.new_context(viewport=PHONE, extra_http_headers=visitor(), is_mobile=True),
    ]
    try:
        clicker, onlooker, phone = (context.new_page() for context in contexts)
        for page in (clicker, onlooker, phone):
            page.goto(f"{chaos_site}/infra")
            wait_for_live(page)
            until(page, HEALTHY_THREE, timeout_s=60)
        # Every state the onlooker's bar goes through, as its phases' states.
        onlooker.evaluate(
            """() => {
                window.__bars = [];
                new MutationObserver(() => {
                    const li = document.querySelector('#chaos-history li.event');
                    if (!li) return;
                    const states = [...li.querySelectorAll('.tl-seg')]
                        .map(s => s.dataset.state).join(',');
                    if (window.__bars.at(-1) !== states) window.__bars.push(states);
                }).observe(document.querySelector('#chaos-history'),
                           {subtree: true, attributes: true, childList: true});
            }"""
        )

        clicker.click("#chaos-button")
        until(clicker, "() => document.querySelector('#chaos-message').textContent.length > 0")
        found = re.match(r"You killed (\S+)\.", clicker.text_content("#chaos-message") or "")
        assert found
        victim = found.group(1)
        clicker.wait_for_selector('#chaos-history li[data-mine="true"]', timeout=10_000)
        event_id = clicker.get_attribute('#chaos-history li[data-mine="true"]', "data-event-id")
        assert event_id

        # The bar shows up for the onlooker while the kill is healing, then completes.
        onlooker.wait_for_selector(f"{row(event_id)} .tl:not([hidden])", timeout=10_000)
        onlooker.wait_for_selector(f'{row(event_id)}[data-healed="true"]', timeout=30_000)
        onlooker.wait_for_selector(f'{row(event_id)}[data-complete="true"]', timeout=30_000)
        bars = onlooker.evaluate("() => window.__bars")
        done_counts = [b.split(",").count("done") for b in bars]
        assert done_counts == sorted(done_counts), f"the bar only grows: {bars}"
        assert done_counts[0] < 4 <= done_counts[-1], f"seen growing, not only finished: {bars}"

        stored = next(e for e in events(devstack) if str(e["id"]) == event_id)
        assert stored["pod_name"] == victim
        phases = json.loads(stored["phases"])
        assert phases["complete"] is True
        words = onlooker.eval_on_selector_all(
            f"{row(event_id)} .tl-word", "els => els.map(e => e.textContent)"
        )
        assert words == expected_words(phases)
        total = sum(step["s"] for step in phases["steps"])
        assert total == pytest.approx(stored["recovery_s"], abs=0.02)
        assert f"healed in {stored['recovery_s']:.1f} s" in (
            onlooker.text_content(f"{row(event_id)} [data-field=recovery]") or ""
        )
        # The chart has a stack for it (one rect per measured phase), and the p50 line.
        until(
            onlooker,
            "() => document.querySelectorAll('#recovery-chart .rchart-bars rect').length >= 1",
        )
        assert onlooker.get_attribute("#recovery-chart .rchart-p50", "points")

        # The same durations on hover, drawn as a tooltip; screenshots for people.
        onlooker.hover(f"{row(event_id)} .tl")
        until(
            onlooker,
            "(sel) => getComputedStyle(document.querySelector(sel)).opacity === '1'",
            f"{row(event_id)} .tl-words",
        )
        onlooker.locator(".history-panel").screenshot(path=str(artifacts / "timeline-desktop.png"))
        onlooker.mouse.move(0, 0)
        onlooker.locator(".chaos").screenshot(path=str(artifacts / "recovery-chart-desktop.png"))
        onlooker.screenshot(path=str(artifacts / "timeline-page-desktop.png"), full_page=True)

        phone.wait_for_selector(f'{row(event_id)}[data-complete="true"]', timeout=30_000)
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        phone.locator(".history-panel").screenshot(path=str(artifacts / "timeline-phone.png"))
        phone.locator(".chaos").screenshot(path=str(artifacts / "recovery-chart-phone.png"))
    finally:
        for context in contexts:
            context.close()
    wait_healthy(devstack)
