"""The chaos button's every answer, in a real browser, with the POST answered by the test.

The page comes from Django's live server (no stack needed): what is under test is that the
button always says what happened and is never left stuck, whatever the server answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHAOS_URL = "**/api/infra/chaos"


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/infra")
    yield page
    context.close()
    assert errors == []


def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    def handle(route: Any) -> None:
        route.fulfill(
            status=status,
            content_type="application/json",
            headers=headers or {},
            body=json.dumps(body),
        )

    return handle


def press(page: Any) -> tuple[str, str]:
    """Clicks, waits for the button to settle, returns (button text, message)."""
    page.click("#chaos-button")
    until(page, "() => document.querySelector('#chaos-message').textContent !== ''")
    return (
        (page.text_content("#chaos-button") or "").strip(),
        page.text_content("#chaos-message") or "",
    )


def test_a_kill_is_confirmed_and_the_button_comes_back(page: Any) -> None:
    seen: list[dict[str, str]] = []

    def handle(route: Any) -> None:
        seen.append(route.request.headers)
        answer(200, {"ok": True, "pod": "chaos-demo-1-abcde", "event_id": 7})(route)

    page.route(CHAOS_URL, handle)
    label, message = press(page)

    assert message.startswith("You killed chaos-demo-1-abcde.")
    assert label == "Unleash chaos"
    # The kill is in the feed at once, marked as the visitor's own.
    feed = page.locator('#chaos-feed li[data-event-id="7"]')
    assert feed.get_attribute("data-mine") == "true"
    text = " ".join((feed.locator(".event-text").text_content() or "").split())
    assert text == "You killed chaos-demo-1-abcde"
    assert "healing" in (feed.text_content() or "")
    assert page.is_enabled("#chaos-button")
    # Django's CSRF check needs the token in a header; the page supplies it.
    assert seen[0].get("x-csrftoken")


def test_rate_limited_shows_a_countdown_then_re_enables(page: Any) -> None:
    page.route(
        CHAOS_URL,
        answer(429, {"ok": False, "error": "rate_limited", "retry_after": 2}, {"Retry-After": "2"}),
    )
    label, message = press(page)

    assert label == "Try again in 2 s"
    assert page.is_disabled("#chaos-button")
    assert "breather" in message
    until(page, "() => !document.querySelector('#chaos-button').disabled", timeout_s=5)
    assert (page.text_content("#chaos-button") or "").strip() == "Unleash chaos"


def test_rate_limited_without_a_body_uses_the_retry_after_header(page: Any) -> None:
    def handle(route: Any) -> None:
        route.fulfill(status=429, headers={"Retry-After": "41"}, body="Too many")

    page.route(CHAOS_URL, handle)
    label, _ = press(page)

    assert label == "Try again in 41 s"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (409, {"ok": False, "error": "not_enough_healthy"}, "Kubernetes is still healing"),
        (503, {"ok": False, "error": "cluster_unavailable"}, "not answering"),
        (403, {"ok": False, "error": "csrf_failed"}, "Reload the page"),
        (500, {}, "Something went wrong (HTTP 500)"),
    ],
)
def test_refusals_and_failures_are_explained_and_never_stick(
    page: Any, status: int, body: dict[str, Any], expected: str
) -> None:
    page.route(CHAOS_URL, answer(status, body))
    label, message = press(page)

    assert expected in message
    assert label == "Unleash chaos"
    assert page.is_enabled("#chaos-button")


def test_chaos_switched_off_by_the_server_disables_the_button(page: Any) -> None:
    page.route(CHAOS_URL, answer(403, {"ok": False, "error": "chaos_disabled"}))
    _, message = press(page)

    assert "switched off" in message
    assert page.is_disabled("#chaos-button")


def test_network_error_is_explained_and_never_sticks(page: Any) -> None:
    page.route(CHAOS_URL, lambda route: route.abort("connectionrefused"))
    label, message = press(page)

    assert "did not get through" in message
    assert label == "Unleash chaos"
    assert page.is_enabled("#chaos-button")


def test_a_double_click_sends_one_request(page: Any) -> None:
    calls: list[int] = []

    def handle(route: Any) -> None:
        calls.append(1)
        answer(200, {"ok": True, "pod": "chaos-demo-1-abcde", "event_id": 8})(route)

    page.route(CHAOS_URL, handle)
    page.dblclick("#chaos-button")
    until(page, "() => document.querySelector('#chaos-message').textContent !== ''")

    assert calls == [1]
