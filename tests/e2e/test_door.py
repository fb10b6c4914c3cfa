"""A real web process keeps a page out, and the page says why: too many tabs from one
address (4429) and a full server (4503), on daphne started as the Procfile starts it.
(The retry timings are proven with a scripted socket in test_dashboard_frames.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stackkit.stack import Devstack
from tests.e2e.conftest import until
from tests.integration.scrape import sample_sum

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def open_viewers(url: str, want: float, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while (now := sample_sum(f"{url}/metrics", "infra_open_websockets")) != want:
        assert time.monotonic() < deadline, f"{now:.0f} viewers open, not {want:.0f}"
        time.sleep(0.1)


DOOR_KIND = "() => document.querySelector('#door').dataset.kind ?? ''"


@pytest.mark.parametrize(
    ("cap", "kind", "title"),
    [
        ("WS_MAX_PER_IP", "tabs", "Too many tabs open."),
        ("WS_MAX_PER_PROCESS", "full", "The server is full."),
    ],
)
def test_a_page_over_a_cap_says_why_and_gets_in_when_there_is_room(
    devstack: Devstack,
    web_server: Callable[..., str],
    open_page: Callable[..., Any],
    artifacts: Path,
    cap: str,
    kind: str,
    title: str,
) -> None:
    url = web_server(**{cap: "1"})
    first = open_page(url)
    open_viewers(url, 1)
    until(first, "() => document.querySelector('#connection').dataset.state !== 'reconnecting'")

    second = open_page(url)
    until(second, f"() => ({DOOR_KIND})() === {kind!r}")
    assert second.text_content("#door-title") == title
    assert second.get_attribute("#connection", "data-state") == "paused"
    status = second.locator("#door [role=status]")
    assert status.get_attribute("aria-live") == "polite"
    assert status.is_visible()
    assert second.is_visible("#door-retry")
    second.screenshot(path=str(artifacts / f"door-real-{kind}.png"), animations="disabled")
    # The page that got in says nothing of the sort.
    assert first.evaluate(DOOR_KIND) == ""
    open_viewers(url, 1)

    # Room again: the first tab closes, and "Try now" lets the second in at once.
    first.close()
    open_viewers(url, 0)
    second.click("#door-retry")
    open_viewers(url, 1)
    until(second, f"() => ({DOOR_KIND})() === ''")
    until(second, "() => document.querySelector('#connection').dataset.state !== 'paused'")
    assert second.is_hidden("#door-next")
