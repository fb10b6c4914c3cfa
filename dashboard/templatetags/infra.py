"""Formatting for the server-rendered `/infra` page.

static/infra.js applies the same rules when frames arrive; both follow the same thresholds
and number formats, so a number looks the same before and after the first live update.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django import template

register = template.Library()

WARNING_PERCENT = 70.0
CRITICAL_PERCENT = 90.0
# Sparkline viewBox is 0 0 100 SPARK_HEIGHT; the line keeps a margin so its stroke is not
# clipped at the extremes.
SPARK_HEIGHT = 40.0
SPARK_MARGIN = 4.0
# A flat-ish series would otherwise be stretched into dramatic zig-zags of noise.
SPARK_MIN_SPAN = 10.0
GIB = 1024**3


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@register.filter
def level(percent: Any) -> str:
    """ok / warning / critical by threshold; unknown when there is no value."""
    value = _number(percent)
    if value is None:
        return "unknown"
    if value >= CRITICAL_PERCENT:
        return "critical"
    if value >= WARNING_PERCENT:
        return "warning"
    return "ok"


@register.filter
def pods_level(pods: Any) -> str:
    """The pod card's level: every pod running is ok, a few starting or failing is a
    warning, fewer than half running is critical."""
    if not isinstance(pods, dict):
        return "unknown"
    running, total = _number(pods.get("running")), _number(pods.get("total"))
    if running is None or total is None:
        return "unknown"
    if total == 0 or running >= total:
        return "ok"
    return "critical" if running < total / 2 else "warning"


@register.filter
def decimal1(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:.1f}"


@register.filter
def integer(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else str(round(number))


@register.filter
def gib(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else f"{number / GIB:.1f}"


def ratio_percent(used: Any, total: Any) -> float:
    """used / total in percent, clamped to 0..100, and 0 when either is unknown."""
    a, b = _number(used), _number(total)
    if a is None or b is None or b <= 0:
        return 0.0
    return round(max(0.0, min(100.0, a / b * 100)), 2)


# Bar widths take the whole object: a filter *argument* that fails to resolve (no data
# yet) raises in Django templates, where a missing filtered value quietly becomes "".
@register.filter
def memory_percent(node: Any) -> float:
    if not isinstance(node, dict):
        return 0.0
    return ratio_percent(node.get("memory_used_bytes"), node.get("memory_total_bytes"))


@register.filter
def memory_level(node: Any) -> str:
    if not isinstance(node, dict) or _number(node.get("memory_total_bytes")) is None:
        return "unknown"
    return level(memory_percent(node))


@register.filter
def node_memory(node: Any) -> str:
    """ "3.1 / 7.8 GiB", or a plain "no data" for nodes without a node-exporter."""
    if not isinstance(node, dict):
        return ""
    used, total = _number(node.get("memory_used_bytes")), _number(node.get("memory_total_bytes"))
    if used is None or total is None:
        return "no data"
    return f"{gib(used)} / {gib(total)} GiB"


# One cell per pod on the pods card; beyond this the wall would only be noise.
MAX_POD_CELLS = 120


@register.filter
def pod_cells(pods: Any) -> list[bool]:
    """True for each running pod, False for each other one, capped at MAX_POD_CELLS."""
    if not isinstance(pods, dict):
        return []
    running, total = _number(pods.get("running")), _number(pods.get("total"))
    if running is None or total is None or total <= 0:
        return []
    cells = min(int(total), MAX_POD_CELLS)
    lit = round(max(0.0, min(running, total)) / total * cells)
    return [True] * lit + [False] * (cells - lit)


def to_datetime(value: Any) -> datetime | None:
    """A snapshot/event time (epoch seconds or ISO 8601) as an aware datetime."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    number = _number(value)
    if number is None:
        return None
    # Milliseconds are accepted too: JavaScript-minded producers send them.
    seconds = number / 1000 if number > 1e11 else number
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


@register.filter
def iso(value: Any) -> str:
    moment = to_datetime(value)
    return "" if moment is None else moment.isoformat()


@register.filter
def clock(value: Any) -> str:
    """HH:MM:SS in UTC; the script re-renders it in the viewer's own time zone."""
    moment = to_datetime(value)
    return "" if moment is None else moment.strftime("%H:%M:%S")


def spark_points(points: Sequence[Any]) -> str:
    """SVG polyline points for [[ts, value], ...] scaled into the sparkline's viewBox."""
    clean: list[tuple[float, float]] = []
    for point in points:
        if isinstance(point, list | tuple) and len(point) == 2:
            ts, value = _number(point[0]), _number(point[1])
            if ts is not None and value is not None:
                clean.append((ts, value))
    if len(clean) < 2:
        return ""
    clean.sort()
    t0, t1 = clean[0][0], clean[-1][0]
    low = min(v for _, v in clean)
    high = max(v for _, v in clean)
    if high - low < SPARK_MIN_SPAN:
        middle = (high + low) / 2
        low, high = middle - SPARK_MIN_SPAN / 2, middle + SPARK_MIN_SPAN / 2
    # `or 1.0`: at magnitudes where floats cannot tell the ends apart, draw a flat line.
    width = (t1 - t0) or 1.0
    span = (high - low) or 1.0
    usable = SPARK_HEIGHT - 2 * SPARK_MARGIN
    return " ".join(
        f"{(t - t0) / width * 100:.2f},"
        f"{SPARK_HEIGHT - SPARK_MARGIN - (v - low) / span * usable:.2f}"
        for t, v in clean
    )


@register.filter
def sparkline(points: Any) -> str:
    return spark_points(points) if isinstance(points, list) else ""


@register.filter
def sparkarea(points: Any) -> str:
    """The polyline closed along the bottom edge, for the soft fill under the line."""
    line = sparkline(points)
    if not line:
        return ""
    first_x = line.split(" ", 1)[0].split(",")[0]
    last_x = line.rsplit(" ", 1)[-1].split(",")[0]
    return f"{first_x},{SPARK_HEIGHT:g} {line} {last_x},{SPARK_HEIGHT:g}"


@register.filter
def pod_suffix(name: Any) -> str:
    """The random tail that tells replicas apart (chaos-demo-7d9f-abcde -> abcde)."""
    text = "" if name is None else str(name)
    return text.rsplit("-", 1)[-1] if "-" in text else text


@register.filter
def pod_prefix(name: Any) -> str:
    """Everything before the tail, dash included (chaos-demo-7d9f-abcde -> chaos-demo-7d9f-)."""
    text = "" if name is None else str(name)
    return text[: len(text) - len(pod_suffix(text))]


@register.filter
def pod_node(pod: Any) -> str:
    """Where the pod runs; a pending pod without a node is waiting for the scheduler."""
    if not isinstance(pod, dict):
        return ""
    if pod.get("node"):
        return str(pod["node"])
    return "unscheduled" if pod.get("status") == "Pending" else ""


_RATE_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


@register.filter
def rate_text(rate: Any) -> str:
    """django-ratelimit's "3/m" or "5/10m" in words: "3 per minute", "5 per 10 minutes"."""
    count, _, period = str(rate).partition("/")
    digits = period.rstrip("smhd")
    unit = _RATE_UNITS.get(period[len(digits) :])
    if not count.isdigit() or unit is None or (digits and not digits.isdigit()):
        return str(rate)
    if digits and int(digits) != 1:
        return f"{count} per {digits} {unit}s"
    return f"{count} per {unit}"


@register.filter
def seconds(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:.1f}"
