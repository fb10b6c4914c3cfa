from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from dashboard.prometheus import (
    Sample,
    instant,
    make_session,
    parse_number,
    range_points,
    run_concurrently,
    scalar,
)
from stackkit.stack import free_port
from tests.dashboard.promserver import ERROR, FakePrometheus, matrix, serve, value, vector


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    yield from serve()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with make_session() as s:
        yield s


# --- values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", 1.0), ("0.25", 0.25), ("-3e2", -300.0), (7, 7.0), (2.5, 2.5)],
)
def test_finite_values_are_numbers(raw: object, expected: float) -> None:
    assert parse_number(raw) == expected


@pytest.mark.parametrize(
    "raw", ["NaN", "+Inf", "-Inf", "inf", "", "abc", None, True, [], {}, float("nan")]
)
def test_non_finite_or_malformed_values_are_none(raw: object) -> None:
    assert parse_number(raw) is None


@given(st.one_of(st.text(), st.floats(), st.integers(), st.none(), st.booleans()))
def test_parse_number_is_finite_or_none_and_never_raises(raw: object) -> None:
    number = parse_number(raw)
    assert number is None or math.isfinite(number)


# --- instant queries ----------------------------------------------------------------


def test_a_vector_answer_keeps_labels_and_values(
    prom: FakePrometheus, session: requests.Session
) -> None:
    prom.set("up", vector(({"node": "a"}, "1"), ({"node": "b"}, "0")))
    assert instant(session, prom.url, "up") == [
        Sample({"node": "a"}, 1.0),
        Sample({"node": "b"}, 0.0),
    ]


def test_a_scalar_answer_is_one_sample(prom: FakePrometheus, session: requests.Session) -> None:
    prom.set(
        "scalar(up)", {"status": "success", "data": {"resultType": "scalar", "result": [1, "4"]}}
    )
    assert scalar(instant(session, prom.url, "scalar(up)")) == 4.0


def test_nan_and_inf_samples_become_none(prom: FakePrometheus, session: requests.Session) -> None:
    prom.set("q", vector(({"n": "a"}, "NaN"), ({"n": "b"}, "+Inf"), ({"n": "c"}, "2")))
    samples = instant(session, prom.url, "q")
    assert samples is not None
    assert [s.value for s in samples] == [None, None, 2.0]


def test_an_empty_answer_is_an_empty_list_not_a_failure(
    prom: FakePrometheus, session: requests.Session
) -> None:
    prom.set("q", vector())
    assert instant(session, prom.url, "q") == []
    assert scalar([]) is None


@pytest.mark.parametrize(
    ("body", "status", "raw"),
    [
        (ERROR, 400, None),  # bad PromQL
        (value("1"), 503, None),  # overloaded, still JSON
        (ERROR, 200, None),  # status error with HTTP 200
        (None, 200, b"<html>proxy error</html>"),
        ({"status": "success"}, 200, None),  # no data
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
            200,
            None,
        ),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, 200, None),
        (["not", "an", "object"], 200, None),
    ],
)
def test_bad_answers_are_none(
    prom: FakePrometheus, session: requests.Session, body: object, status: int, raw: bytes | None
) -> None:
    prom.set("q", body, status=status, raw=raw)
    assert instant(session, prom.url, "q") is None


def test_a_slow_prometheus_times_out_as_none(
    prom: FakePrometheus, session: requests.Session
) -> None:
    prom.set("q", value("1"), delay_s=1.0)
    started = time.monotonic()
    assert instant(session, prom.url, "q", timeout=(0.5, 0.2)) is None
    assert time.monotonic() - started < 0.9


def test_an_unreachable_prometheus_is_none(session: requests.Session) -> None:
    assert instant(session, f"http://127.0.0.1:{free_port()}", "up", timeout=(0.5, 0.5)) is None


def test_the_query_carries_a_server_side_timeout(
    prom: FakePrometheus, session: requests.Session
) -> None:
    prom.set("q", value("1"))
    instant(session, prom.url + "/", "q", timeout=(1.0, 2.5))
    assert prom.requests[-1]["path"] == "/api/v1/query"
    assert prom.requests[-1]["timeout"] == "2.5s"


# --- range queries --------------------------------------------------------------------


def test_range_points_drop_non_finite_values(
    prom: FakePrometheus, session: requests.Session
) -> None:
    prom.set_range("q", matrix([(100.0, "1"), (130.0, "NaN"), (160.0, "3.5")]))
    points = range_points(session, prom.url, "q", start=100, end=160, step_s=30)
    assert points == [(100, 1.0), (160, 3.5)]
    assert prom.requests[-1]["step"] == "30"


def test_range_with_no_series_is_empty_history(
    prom: FakePrometheus, session: requests.Session
) -> None:
    prom.set_range("q", matrix())
    assert range_points(session, prom.url, "q", start=0, end=60, step_s=30) == []


@pytest.mark.parametrize(
    "body",
    [
        matrix([(1.0, "1")], [(1.0, "2")]),  # two series: not the aggregate we asked for
        value("1"),  # an instant vector
        ERROR,
        {"status": "success", "data": {"resultType": "matrix", "result": [{"values": [[1]]}]}},
    ],
)
def test_bad_range_answers_are_none(
    prom: FakePrometheus, session: requests.Session, body: object
) -> None:
    prom.set_range("q", body)
    assert range_points(session, prom.url, "q", start=0, end=60, step_s=30) is None


# --- one round ------------------------------------------------------------------------


def test_a_round_runs_its_queries_side_by_side(
    prom: FakePrometheus, session: requests.Session
) -> None:
    for name in "abcdef":
        prom.set(name, value("1"), delay_s=0.3)
    started = time.monotonic()
    results = run_concurrently({n: (lambda n=n: instant(session, prom.url, n)) for n in "abcdef"})
    assert time.monotonic() - started < 1.0  # six 0.3 s queries in sequence take 1.8 s
    assert {n: scalar(r) for n, r in results.items()} == dict.fromkeys("abcdef", 1.0)


def test_a_round_survives_a_call_that_raises_or_hangs() -> None:
    def boom() -> int:
        raise RuntimeError("bug")

    def hang() -> int:
        time.sleep(1.0)
        return 1

    started = time.monotonic()
    results = run_concurrently({"ok": lambda: 2, "boom": boom, "hang": hang}, deadline_s=0.2)
    assert time.monotonic() - started < 0.8
    assert results == {"ok": 2, "boom": None, "hang": None}
