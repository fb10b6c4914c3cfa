"""The chaos budgets' logic: the real Lua script, run by fakeredis's Lua engine, with a
frozen clock. The same script on the real Redis and a real daphne is proven in
tests/integration/test_budgets.py."""

from __future__ import annotations

import fakeredis
import pytest
import redis
from django.test import Client, override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos import ratelimit
from chaos.ratelimit import (
    SCOPE_GLOBAL,
    SCOPE_RESERVED,
    SCOPE_VISITOR,
    RateLimitUnavailable,
    chaos_rate_check,
    reserved_presses,
)
from infra_site.env import Rate, parse_rate
from tests.chaos.fakes import FakeApi
from tests.conftest import free_port


class Clock:
    def __init__(self, now: float = 1_000_000.25) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    frozen = Clock()
    server = fakeredis.FakeServer()
    monkeypatch.setattr(ratelimit, "time", frozen)
    monkeypatch.setattr(ratelimit, "store", lambda: fakeredis.FakeRedis(server=server))
    return frozen


def press(identity: str = "203.0.113.7") -> ratelimit.RateDecision:
    return chaos_rate_check(identity=identity)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("3/m", Rate(3, 60_000)),
        ("30/m", Rate(30, 60_000)),
        ("2/10s", Rate(2, 10_000)),
        ("10/10m", Rate(10, 600_000)),
        ("100/h", Rate(100, 3_600_000)),
        ("1/d", Rate(1, 86_400_000)),
    ],
)
def test_parse_rate(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "3", "0/m", "3/x", "m/3", "-1/m", "3/m "])
def test_parse_rate_refuses_what_is_not_a_rate(text: str) -> None:
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate(text)


def test_reserved_presses() -> None:
    assert reserved_presses(30, 30) == 9
    assert reserved_presses(30, 0) == 0
    assert reserved_presses(5, 30) == 1
    assert reserved_presses(1, 90) == 0  # returning visitors keep at least one
    assert reserved_presses(3, 90) == 2


@override_settings(CHAOS_RATE_PER_IP="3/m", CHAOS_RATE_GLOBAL="1000/m")
def test_a_burst_across_a_minute_edge_gets_three_not_six(clock: Clock) -> None:
    # Where a fixed window would reset: 3 presses just before, 3 just after.
    clock.now = 1_000_019.9
    before = [press().limited for _ in range(3)]
    clock.now = 1_000_020.1
    after = [press().limited for _ in range(3)]
    assert before == [False, False, False]
    assert after == [True, True, True]


@override_settings(CHAOS_RATE_PER_IP="3/m", CHAOS_RATE_GLOBAL="1000/m")
def test_retry_after_is_exactly_when_the_oldest_press_leaves_the_window(clock: Clock) -> None:
    presses = [0.0, 10.5, 20.0]
    start = clock.now
    for offset in presses:
        clock.now = start + offset
        assert not press().limited
    clock.now = start + 30.2
    refused = press()
    assert refused.limited
    assert refused.scope == SCOPE_VISITOR
    # The first press (at start) leaves the minute at start + 60: 29.8 s from now -> 30.
    assert refused.retry_after == 30
    clock.now += refused.retry_after - 1
    assert press().limited, "one second early"
    clock.now += 1
    assert not press().limited, "free after Retry-After"
    # And then limited again at once: the window now holds 10.5, 20.0 and this press.
    assert press().limited


@override_settings(CHAOS_RATE_PER_IP="3/m", CHAOS_RATE_GLOBAL="1000/m")
def test_refused_presses_spend_nothing(clock: Clock) -> None:
    start = clock.now
    for _ in range(3):
        assert not press().limited
    for second in range(1, 60):  # hammering all minute long does not push the end away
        clock.now = start + second
        assert press().limited
    clock.now = start + 60
    assert not press().limited


@override_settings(CHAOS_RATE_PER_IP="3/m", CHAOS_RATE_GLOBAL="30/m")
def test_visitors_have_budgets_of_their_own(clock: Clock) -> None:
    for _ in range(3):
        assert not press("203.0.113.7").limited
    assert press("203.0.113.7").limited
    assert not press("203.0.113.8").limited
    assert not press("2001:db8:1::/56").limited


@override_settings(
    CHAOS_RATE_PER_IP="3/m", CHAOS_RATE_GLOBAL="30/m", CHAOS_GLOBAL_RESERVE_PERCENT=30
)
def test_ten_addresses_cannot_lock_out_an_eleventh(clock: Clock) -> None:
    attackers = [f"198.51.100.{n}" for n in range(10)]
    passed = 0
    for _ in range(5):
        for address in attackers:
            decision = press(address)
            passed += not decision.limited
            clock.now += 0.05
    # 30 - 9 reserved: they got 21 of 30, not all 30.
    assert passed == 21
    refused = press(attackers[0])
    assert refused.limited
    assert refused.scope in {SCOPE_VISITOR, SCOPE_RESERVED}
    assert not press("203.0.113.99").limited, "the newcomer still gets in"


@override_settings(
    CHAOS_RATE_PER_IP="3/m", CHAOS_RATE_GLOBAL="30/m", CHAOS_GLOBAL_RESERVE_PERCENT=30
)
def test_the_reserve_says_so_and_the_spent_global_budget_says_so(clock: Clock) -> None:
    # 21 presses by 7 visitors (3 each, which their own budgets allow).
    for n in range(7):
        for _ in range(3):
            assert not press(f"198.51.100.{n}").limited
    # A returning visitor with budget of their own left is refused by the reserve...
    regular = "198.51.100.50"
    assert not press(regular).limited  # a newcomer: the 22nd press
    reserved = press(regular)
    assert (reserved.limited, reserved.scope) == (True, SCOPE_RESERVED)
    # ...newcomers take the rest, and then the budget is spent for everyone.
    for n in range(8):
        assert not press(f"203.0.113.{n}").limited
    spent = press("192.0.2.1")
    assert (spent.limited, spent.scope) == (True, SCOPE_GLOBAL)
    assert 1 <= spent.retry_after <= 60


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=15_000), min_size=1, max_size=40),
    count=st.integers(min_value=1, max_value=5),
    window_s=st.sampled_from([1, 10, 60]),
)
def test_never_more_than_the_count_in_any_window_and_never_refused_with_room(
    gaps: list[int], count: int, window_s: int
) -> None:
    server = fakeredis.FakeServer()
    frozen = Clock()
    with (
        pytest.MonkeyPatch.context() as patch,
        override_settings(CHAOS_RATE_PER_IP=f"{count}/{window_s}s", CHAOS_RATE_GLOBAL="1000/h"),
    ):
        patch.setattr(ratelimit, "time", frozen)
        patch.setattr(ratelimit, "store", lambda: fakeredis.FakeRedis(server=server))
        accepted: list[int] = []
        now_ms = 1_000_000_000
        for gap in gaps:
            now_ms += gap
            frozen.now = now_ms / 1000
            in_window = [t for t in accepted if t > now_ms - window_s * 1000]
            decision = press()
            # Refused exactly when the window is full: no more, and no fewer.
            assert decision.limited == (len(in_window) >= count)
            if decision.limited:
                # Retry-After is honest: by then the count-th newest press has left.
                blocking = sorted(in_window)[-count]
                assert now_ms + decision.retry_after * 1000 >= blocking + window_s * 1000
                assert now_ms + (decision.retry_after - 1) * 1000 < blocking + window_s * 1000
            else:
                accepted.append(now_ms)


def test_redis_down_is_unavailable_never_open(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=1)
    monkeypatch.setattr(ratelimit, "store", lambda: dead)
    with pytest.raises(RateLimitUnavailable):
        press()


@pytest.mark.django_db
@override_settings(TRUSTED_PROXY_COUNT=1)
@pytest.mark.usefixtures("clock")
def test_a_press_from_an_unknown_client_is_refused(cluster: FakeApi) -> None:
    # Behind one proxy, a request without its X-Forwarded-For entry: the socket peer is
    # the proxy, which must not stand in for every visitor.
    response = Client().post("/api/infra/chaos", REMOTE_ADDR="10.0.0.5")
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": "client_unknown"}
    assert cluster.deleted == []


@pytest.mark.django_db
@override_settings(
    CHAOS_MIN_READY=3,  # the guard refuses: budgets are spent, no pod dies
    CHAOS_RATE_PER_IP="1/m",
    CHAOS_RATE_GLOBAL="2/m",
    CHAOS_GLOBAL_RESERVE_PERCENT=0,
)
@pytest.mark.usefixtures("clock", "cluster")
def test_the_429_says_whose_budget_is_spent(cluster: FakeApi) -> None:
    def post(ip: str) -> tuple[int, str | None]:
        response = Client().post("/api/infra/chaos", REMOTE_ADDR=ip)
        return response.status_code, response.json().get("scope")

    assert post("203.0.113.1") == (409, None)
    assert post("203.0.113.1") == (429, SCOPE_VISITOR)
    assert post("203.0.113.2") == (409, None)
    assert post("203.0.113.3") == (429, SCOPE_GLOBAL)
