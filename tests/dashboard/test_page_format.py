"""The page's formatting rules (dashboard/templatetags/infra.py); static/infra.js mirrors
them, so a number looks the same before and after the first live frame."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.templatetags import infra


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "ok"),
        (69.99, "ok"),
        (70, "warning"),
        (89.9, "warning"),
        (90, "critical"),
        (100.0, "critical"),
        (None, "unknown"),
        (math.nan, "unknown"),
        (math.inf, "unknown"),
        ("95", "unknown"),
        (True, "unknown"),
    ],
)
def test_level_thresholds(value: object, expected: str) -> None:
    assert infra.level(value) == expected


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ({"running": 3, "total": 3}, "ok"),
        ({"running": 0, "total": 0}, "ok"),
        ({"running": 2, "total": 3}, "warning"),
        ({"running": 1, "total": 3}, "critical"),
        ({"running": None, "total": 3}, "unknown"),
        (None, "unknown"),
    ],
)
def test_pods_level(pods: object, expected: str) -> None:
    assert infra.pods_level(pods) == expected


def test_numbers_render_a_dash_when_missing() -> None:
    assert infra.decimal1(18.66) == "18.7"
    assert infra.decimal1(None) == "—"
    assert infra.decimal1(math.nan) == "—"
    assert infra.integer(14.0) == "14"
    assert infra.gib(1.5 * 1024**3) == "1.5"
    assert infra.seconds(None) == "—"


def test_node_memory() -> None:
    gib = 1024**3
    node = {"memory_used_bytes": 2 * gib, "memory_total_bytes": 8 * gib}
    assert infra.node_memory(node) == "2.0 / 8.0 GiB"
    assert infra.memory_percent(node) == 25.0
    assert infra.memory_level(node) == "ok"
    empty = {"memory_used_bytes": None, "memory_total_bytes": None}
    assert infra.node_memory(empty) == "no data"
    assert infra.memory_percent(empty) == 0.0
    assert infra.memory_level(empty) == "unknown"
    # More used than total (a racy scrape) is drawn full, not past the end of the bar.
    assert infra.memory_percent({"memory_used_bytes": 9, "memory_total_bytes": 8}) == 100.0


@pytest.mark.parametrize(
    "value",
    [
        1_795_680_000,
        1_795_680_000.0,
        1_795_680_000_000,
        "2026-11-26T08:00:00+00:00",
        "2026-11-26T08:00:00",
    ],
)
def test_times_accept_epoch_seconds_milliseconds_and_iso(value: object) -> None:
    assert infra.to_datetime(value) == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    assert infra.clock(value) == "08:00:00"


@pytest.mark.parametrize("value", [None, "yesterday", math.nan, 1e300, True])
def test_bad_times_render_nothing(value: object) -> None:
    assert infra.to_datetime(value) is None
    assert infra.clock(value) == ""
    assert infra.iso(value) == ""


def test_pod_name_parts() -> None:
    assert infra.pod_suffix("chaos-demo-7d9f-abcde") == "abcde"
    assert infra.pod_prefix("chaos-demo-7d9f-abcde") == "chaos-demo-7d9f-"
    assert infra.pod_prefix("solo") == ""
    assert infra.pod_suffix("solo") == "solo"
    assert infra.pod_suffix(None) == ""


def test_pod_cells() -> None:
    assert infra.pod_cells({"running": 2, "total": 3}) == [True, True, False]
    assert infra.pod_cells({"running": 5, "total": 0}) == []
    assert infra.pod_cells(None) == []
    many = infra.pod_cells({"running": 500, "total": 1000})
    assert len(many) == infra.MAX_POD_CELLS
    assert many.count(True) == infra.MAX_POD_CELLS // 2


def test_sparkline_needs_two_points_and_skips_garbage() -> None:
    assert infra.sparkline([]) == ""
    assert infra.sparkline([[1, 5.0]]) == ""
    assert infra.sparkline("nope") == ""
    assert infra.sparkline([[1, 5.0], [2, None], ["x", 1], [3]]) == ""
    assert infra.sparkarea([[1, 5.0]]) == ""


def test_sparkline_sorts_by_time_and_keeps_small_wiggles_small() -> None:
    line = infra.sparkline([[20, 50.5], [10, 50.0]])
    points = [tuple(map(float, p.split(","))) for p in line.split()]
    assert [x for x, _ in points] == [0.0, 100.0]
    # Half a percentage point of change stays a gentle slope, not a full-height swing.
    assert abs(points[0][1] - points[1][1]) < 2


def test_sparkarea_closes_along_the_bottom() -> None:
    area = infra.sparkarea([[10, 1.0], [20, 80.0]]).split()
    height = f"{infra.SPARK_HEIGHT:g}"
    assert area[0] == f"0.00,{height}"
    assert area[-1] == f"100.00,{height}"
    assert len(area) == 4


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**10),
            st.floats(allow_nan=True, allow_infinity=True, width=32),
        ),
        max_size=80,
    )
)
def test_sparkline_stays_inside_its_box(series: list[tuple[int, float]]) -> None:
    line = infra.sparkline([list(p) for p in series])
    for point in line.split():
        x, y = map(float, point.split(","))
        assert 0 <= x <= 100
        assert infra.SPARK_MARGIN - 0.01 <= y <= infra.SPARK_HEIGHT - infra.SPARK_MARGIN + 0.01


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        ({"node": "Node 2", "status": "Running"}, "Node 2"),
        ({"node": None, "status": "Pending"}, "unscheduled"),
        ({"node": None, "status": "Running"}, ""),
        (None, ""),
    ],
)
def test_pod_node(pod: object, expected: str) -> None:
    assert infra.pod_node(pod) == expected


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("3/m", "3 per minute"),
        ("100/h", "100 per hour"),
        ("5/10m", "5 per 10 minutes"),
        ("1/1d", "1 per day"),
        ("4/120s", "4 per 2 minutes"),
        ("2/90s", "2 per 90 seconds"),
        ("weird", "weird"),
        ("0/m", "0/m"),
        ("3/0m", "3/0m"),
        ("3/x", "3/x"),
    ],
)
def test_rate_text(rate: str, expected: str) -> None:
    assert infra.rate_text(rate) == expected
