"""/infra measured for accessibility in Debian's Chromium, on the real stack.

axe-core (devstack/install-axe) audits the page in its steady state, during a kill and on a
phone: no serious or critical violation, and the count of all of them printed. The kill is
made from the keyboard alone; a screen reader hears one polite sentence per kill and one
per heal; a timeline bar opens its durations on focus; and with prefers-reduced-motion
nothing on the page animates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stackkit.stack import Devstack
from tests.chaos.stack import wait_healthy
from tests.e2e.conftest import Audit, until
from tests.e2e.test_dashboard import DESKTOP, HEALTHY_THREE, PHONE, visitor, wait_for_live

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# Every text a polite live region is given, in order, as a screen reader would hear it.
RECORD_ANNOUNCEMENTS = """() => {
    window.__heard = [];
    for (const region of document.querySelectorAll('[aria-live], [role="status"]')) {
        new MutationObserver(() => {
            const text = region.textContent.trim();
            if (text) window.__heard.push(text);
        }).observe(region, {subtree: true, childList: true, characterData: true});
    }
}"""
TERMINATING = '#pods [data-pod][data-status="Terminating"]'


def tab_to(page: Any, selector: str, limit: int = 60) -> None:
    """Presses Tab until `selector` has the focus, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
    raise AssertionError(f"{selector} not reachable with Tab in {limit} presses")


def test_the_page_is_accessible_at_rest_during_a_kill_and_on_a_phone(
    devstack: Devstack,
    chaos_site: str,
    browser: Any,
    audit: Audit,
    artifacts: Path,
) -> None:
    contexts = [
        browser.new_context(viewport=DESKTOP, extra_http_headers=visitor()),
        browser.new_context(viewport=DESKTOP, extra_http_headers=visitor()),
        browser.new_context(viewport=PHONE, extra_http_headers=visitor(), is_mobile=True),
        browser.new_context(
            viewport=DESKTOP, extra_http_headers=visitor(), reduced_motion="reduce"
        ),
    ]
    try:
        clicker, onlooker, phone, calm = (context.new_page() for context in contexts)
        for page in (clicker, onlooker, phone, calm):
            page.goto(f"{chaos_site}/infra")
            wait_for_live(page)
            until(page, HEALTHY_THREE, timeout_s=60)
        for page in (clicker, onlooker):
            page.evaluate(RECORD_ANNOUNCEMENTS)

        failing = audit(onlooker, "/infra, steady state, desktop")
        failing += audit(phone, "/infra, steady state, phone")

        # The kill, from the keyboard alone.
        tab_to(clicker, "#chaos-button")
        clicker.keyboard.press("Enter")
        for page in (onlooker, phone, calm):
            page.wait_for_selector(TERMINATING, timeout=10_000)
        failing += audit(onlooker, "/infra, during a kill, desktop")
        failing += audit(phone, "/infra, during a kill, phone")
        # Terminating pods pulse, healing rows beat: unless the viewer asked for calm.
        moving = onlooker.evaluate("() => document.getAnimations().length")
        still = calm.evaluate("() => document.getAnimations().length")
        assert moving > 0, "nothing animates during a kill: the reduced-motion check proves nothing"
        assert still == 0, f"{still} animations run despite prefers-reduced-motion"
        phone.screenshot(path=str(artifacts / "a11y-phone-during-kill.png"), full_page=True)

        for page in (clicker, onlooker):
            page.wait_for_selector('#chaos-history li.event[data-complete="true"]', timeout=30_000)
        # The viewer hears the kill once and the heal once, however many frames updated
        # the bar in between; the presser hears the same from the button's own message.
        onlooker_heard = onlooker.evaluate("() => window.__heard")
        assert len(onlooker_heard) == 2, onlooker_heard
        assert onlooker_heard[0].startswith("A visitor killed ")
        assert onlooker_heard[1].startswith("Kubernetes healed ")
        clicker_heard = clicker.evaluate("() => window.__heard")
        assert len(clicker_heard) == 2, clicker_heard
        assert clicker_heard[0].startswith("You killed ")
        assert clicker_heard[1].startswith("Kubernetes replaced ")

        # A timeline is reached with Tab and shows its durations when focused.
        tab_to(onlooker, "#chaos-history .tl")
        words = onlooker.locator("#chaos-history .tl:focus .tl-words")
        until(
            onlooker,
            "() => getComputedStyle(document.querySelector("
            "'#chaos-history .tl:focus .tl-words')).opacity === '1'",
        )
        assert "kubelet" in (words.text_content() or "")
        onlooker.screenshot(path=str(artifacts / "accessibility-timeline-focus.png"))
        failing += audit(onlooker, "/infra, healed, a timeline focused")
        assert failing == [], failing
    finally:
        for context in contexts:
            context.close()
    wait_healthy(devstack)


def test_the_audit_fails_a_page_that_is_not_accessible(browser: Any, audit: Audit) -> None:
    """The audit itself: a zero from it means something only if it can say more."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content(
            '<html><body><img src="data:,"><button></button>'
            '<p style="color:#777;background:#888">faint</p></body></html>'
        )
        failing = audit(page, "a page built to fail")
        assert {v["id"] for v in failing} >= {"image-alt", "button-name"}
    finally:
        context.close()
