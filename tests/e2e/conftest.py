"""A real browser: Debian's Chromium driven by Playwright, headless.

Never `playwright install`: it downloads a browser, which this project's machines cannot.
Screenshots go to `test-artifacts/` at the repository root (CI keeps that folder).
The accessibility audit injects axe-core, which `devstack/install-axe` puts in a cache
folder outside the repo.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stackkit.stack import ROOT, Devstack, RedisDb, free_port, manage
from tests.conftest import IN_CI, StartProcess, unavailable

ARTIFACTS = ROOT / "test-artifacts"
INSTALL_AXE = ROOT / "devstack" / "install-axe"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's hosts,
# which a closed network refuses; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


DESKTOP = {"width": 1280, "height": 800}


def until(page: Any, predicate: str, arg: Any = None, timeout_s: float = 15) -> None:
    """Polls a JS function in the page until it returns true.

    Not `page.wait_for_function`: that evaluates a string with eval(), which the page's
    strict CSP (no 'unsafe-eval') rightly refuses; `evaluate` goes through DevTools."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(predicate, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {predicate}")
        time.sleep(0.05)


# Module scope, not session: while Playwright's sync API is open it keeps an event loop
# running on this thread, and every async test that pytest (or pytest-django's
# reordering) schedules after it would fail with "cannot be called from a running loop".
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        message = f"Chromium not found at {CHROMIUM} (devstack/install-packages installs it)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API refuses to run inside a running asyncio loop; pytest-asyncio
    # does not start one for sync tests, so this is safe.
    # While it runs, though, Playwright keeps its own loop on this thread, and Django then
    # refuses every ORM call made meanwhile (test database set-up and teardown
    # included) as if made from async code; those calls are plain sync code.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as pw:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Opens /infra in a fresh context; fails the test on script errors or CSP refusals."""
    contexts: list[Any] = []
    problems: list[str] = []

    def open_(
        url: str, viewport: dict[str, int] = DESKTOP, headers: dict[str, str] | None = None
    ) -> Any:
        context = browser.new_context(viewport=viewport, extra_http_headers=headers or {})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console: {msg.text}")
                if "Content Security Policy" in msg.text
                else None
            ),
        )
        page.goto(f"{url}/infra")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == []


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def axe_core_path() -> Path:
    """Where devstack/install-axe puts axe-core (its version read from the script, so the
    two never disagree); AXE_CORE_JS overrides."""
    if os.environ.get("AXE_CORE_JS"):
        return Path(os.environ["AXE_CORE_JS"])
    found = re.search(r"^AXE_CORE_VERSION=(\S+)$", INSTALL_AXE.read_text(), re.MULTILINE)
    assert found, f"no AXE_CORE_VERSION line in {INSTALL_AXE}"
    cache = os.environ.get("INFRA_CHAOS_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infra-chaos"
    )
    return Path(cache) / f"npm-axe-core-{found.group(1)}" / "node_modules/axe-core/axe.min.js"


# What the audit fails on; moderate and minor findings are printed, not failed.
AXE_FAILING = {"serious", "critical"}
Audit = Callable[[Any, str], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def axe_source() -> str:
    path = axe_core_path()
    if not path.exists():
        unavailable(f"axe-core not found at {path} (run devstack/install-axe)")
    return path.read_text()


@pytest.fixture
def audit(axe_source: str, capsys: pytest.CaptureFixture[str]) -> Audit:
    """Runs axe-core in a page and prints what it found (in `make test`'s output too, past
    pytest's capture); returns the serious and critical violations. The engine is
    evaluated through DevTools, which the page's CSP does not govern, so the page keeps
    its real policy while being audited."""

    def run(page: Any, name: str) -> list[dict[str, Any]]:
        if not page.evaluate("() => typeof window.axe === 'object'"):
            page.evaluate(f"() => {{ {axe_source}\n; window.axe = axe; }}")
        result = page.evaluate(
            """async () => {
                const r = await axe.run(document, { resultTypes: ['violations'] });
                return r.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length,
                    targets: v.nodes.slice(0, 3).map(n => n.target.join(' ')),
                }));
            }"""
        )
        failing = [v for v in result if v["impact"] in AXE_FAILING]
        with capsys.disabled():
            print(
                f"\naxe-core on {name}: {len(result)} violations "
                f"({len(failing)} serious or critical): "
                + (", ".join(f"{v['id']} ({v['impact']}, {v['nodes']})" for v in result) or "none")
            )
        return failing

    return run


@pytest.fixture
def chaos_site(devstack: Devstack, start_process: StartProcess) -> str:
    """The whole app on the real stack, as `make run` starts it (web, poller, watcher), on a
    healthy test namespace; returns its base URL. Visitors are told apart by X-Forwarded-For."""
    import redis

    from tests.chaos.stack import wait_healthy
    from tests.e2e.test_dashboard import start_web

    # The chaos browser tests' database (they run one after another), emptied first.
    url = devstack.redis_db(RedisDb.E2E_CHAOS)
    redis.Redis.from_url(url).flushdb()
    wait_healthy(devstack)
    env = devstack.app_env(REDIS_URL=url, POLL_INTERVAL="2", TRUSTED_PROXY_COUNT="1")
    start_process(manage("poll_metrics"), env, name="poller")
    start_process(manage("watch_pods"), env, name="watcher")
    port = free_port()
    start_web(env, start_process, port)
    return f"http://127.0.0.1:{port}"
