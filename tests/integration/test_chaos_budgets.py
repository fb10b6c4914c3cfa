"""The chaos button's budgets on a real daphne and the real Redis: django-ratelimit's
windows as the contract promises them (docs/contract.md, "Budgets").

Presses run with GUARD_ALWAYS_REFUSES: no pod matches, so the app's look refuses every one
(409) after the budgets counted it, and no pod dies. Windows are real seconds here, and
the counters live in a redis-server of each test's own: on a shared stack, another
suite flushing the shared test database must not hand out fresh budgets mid-test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from chaos.views import SCOPE_GLOBAL, SCOPE_VISITOR
from stackkit.servers import RedisServer
from stackkit.stack import chaos_session
from tests.chaos.stack import GUARD_ALWAYS_REFUSES, press

pytestmark = pytest.mark.integration

WebServer = Callable[..., str]


@pytest.fixture
def web_server(web_server: WebServer, private_redis: RedisServer) -> WebServer:
    def start(**overrides: str) -> str:
        return web_server(REDIS_URL=private_redis.url, **overrides)

    return start


def test_a_greedy_visitor_gets_what_the_windows_promise_and_no_more(
    web_server: WebServer,
) -> None:
    # Short windows so real time can cross several edges of both: 3 per 20 s, 1 per 4 s.
    url = web_server(
        CHAOS_RATE_PER_IP="3/20s",
        CHAOS_BURST_PER_IP="1/4s",
        CHAOS_RATE_GLOBAL="1000/m",
        **GUARD_ALWAYS_REFUSES,
    )
    session = chaos_session(url)
    passed: list[float] = []
    refusals: list[tuple[float, int]] = []
    start = time.monotonic()
    while time.monotonic() - start < 45:
        response = press(session, url)
        now = time.monotonic()
        if response.status_code == 409:
            passed.append(now)
        else:
            assert response.status_code == 429, response.text
            body = response.json()
            assert body["scope"] == SCOPE_VISITOR
            assert response.headers["Retry-After"] == str(body["retry_after"])
            refusals.append((now, body["retry_after"]))
        time.sleep(0.2)
    print(f"{len(passed)} presses passed, {len(refusals)} refused in 45 s")
    # Never more than the short window's pace across any edge, nor twice the long one's.
    for i, at in enumerate(passed):
        assert sum(1 for t in passed[i:] if t < at + 4) <= 2, passed
        assert sum(1 for t in passed[i:] if t < at + 20) <= 6, passed
    # And the budget is really given (3 a window of 20 s, give or take an edge).
    assert len(passed) >= 6, passed
    # Retry-After is honest: no press passed before the end a refusal announced.
    for refused_at, retry_after in refusals:
        assert not [t for t in passed if refused_at < t < refused_at + retry_after - 1.2]


def test_retry_after_is_when_the_press_passes_again(web_server: WebServer) -> None:
    url = web_server(CHAOS_RATE_PER_IP="2/m", CHAOS_BURST_PER_IP="2/10s", **GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    assert [press(session, url).status_code for _ in range(2)] == [409, 409]
    refused = press(session, url)
    refused_at = time.monotonic()
    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 61
    # The windows end within the last second before Retry-After runs out.
    if retry_after > 2:
        time.sleep(max(0.0, refused_at + retry_after - 1.5 - time.monotonic()))
        assert press(session, url).status_code == 429, "free well before Retry-After"
    time.sleep(max(0.0, refused_at + retry_after + 0.1 - time.monotonic()))
    assert press(session, url).status_code == 409, "still refused after Retry-After"


def test_concurrent_presses_cannot_overshoot(web_server: WebServer) -> None:
    url = web_server(
        CHAOS_RATE_PER_IP="3/m",
        CHAOS_BURST_PER_IP="3/10s",
        CHAOS_RATE_GLOBAL="1000/m",
        **GUARD_ALWAYS_REFUSES,
    )
    session = chaos_session(url)
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(lambda _: press(session, url).status_code, range(32)))
    # Never more than the budget. Fewer may pass, even none: the windows are counted one
    # after the other, and racing presses can each take the last place of a different one.
    assert set(codes) <= {409, 429}
    assert codes.count(409) <= 3


def test_a_crowd_of_fresh_addresses_answered_busy_does_not_lock_out_the_next_visitor(
    web_server: WebServer,
) -> None:
    # The shipped budgets (3/m and 1/10 s per visitor, 30 kills a minute for everyone).
    # Forty fresh addresses press in the same instant: most are answered "busy" and spend
    # nothing of everyone's budget, so nobody is refused 429 and a newcomer still gets in.
    url = web_server(TRUSTED_PROXY_COUNT="1", **GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    start = threading.Barrier(40)

    def one(i: int) -> requests.Response:
        start.wait()
        return press(session, url, **{"X-Forwarded-For": f"198.51.100.{i + 1}"})

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(one, range(40)))
    statuses = [a.status_code for a in answers]
    errors = [a.json()["error"] for a in answers]
    print(
        f"40 at once: {errors.count('busy')} busy, {errors.count('not_enough_healthy')} "
        f"reached the kill step, {statuses.count(429)} rate-limited"
    )
    assert set(statuses) == {409}, statuses
    assert errors.count("not_enough_healthy") < 30
    assert press(session, url, **{"X-Forwarded-For": "203.0.113.99"}).status_code == 409


def test_everyone_s_budget_of_kills_says_when_it_is_spent(web_server: WebServer) -> None:
    url = web_server(TRUSTED_PROXY_COUNT="1", CHAOS_RATE_GLOBAL="3/m", **GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    codes = [press(session, url, **{"X-Forwarded-For": f"192.0.2.{n}"}) for n in range(1, 6)]
    assert [c.status_code for c in codes] == [409, 409, 409, 429, 429]
    body = codes[-1].json()
    assert body["scope"] == SCOPE_GLOBAL
    assert 1 <= body["retry_after"] <= 61
    assert codes[-1].headers["Retry-After"] == str(body["retry_after"])


def test_ipv6_visitors_are_one_per_56(web_server: WebServer) -> None:
    url = web_server(TRUSTED_PROXY_COUNT="1", CHAOS_BURST_PER_IP="3/10s", **GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    # Four /64s of one home's /56.
    codes = [
        press(session, url, **{"X-Forwarded-For": f"2001:db8:7:{n:x}::1"}).status_code
        for n in range(4)
    ]
    assert codes == [409, 409, 409, 429]
    assert press(session, url, **{"X-Forwarded-For": "2001:db8:7:100::1"}).status_code == 409
