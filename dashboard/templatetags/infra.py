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

from runtime.env import parse_rate

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


# The largest unit that divides the window names it: 600 s is "10 minutes".
_RATE_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


@register.filter
def rate_text(rate: Any) -> str:
    """A rate setting ("3/m", "5/10m"; runtime.env.parse_rate) in words: "3 per
    minute", "5 per 10 minutes". Anything that is not a rate is shown as it is."""
    try:
        parsed = parse_rate(str(rate))
    except ValueError:
        return str(rate)
    window_s = parsed.window_ms // 1000
    for unit, unit_s in _RATE_UNITS:
        if window_s and window_s % unit_s == 0:
            units = window_s // unit_s
            per = unit if units == 1 else f"{units} {unit}s"
            return f"{parsed.count} per {per}"
    return str(rate)


@register.filter
def seconds(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:.1f}"


# -- recovery timelines (chaos/timeline.py's phases) and the 24 h recovery chart

# Who did each phase, in the words of the page. static/infra.js has the same table.
PHASE_LABELS = {
    "created": ("controller", "the ReplicaSet controller created a replacement"),
    "scheduled": ("scheduler", "the scheduler placed it on a node"),
    "started": ("kubelet", "the kubelet started its containers"),
    "ready": ("probe", "the readiness probe passed"),
}
# Bars share one scale so kills compare at a glance; never shorter than this many seconds.
TIMELINE_MIN_SCALE_S = 5.0
CHART_WIDTH = 240.0
CHART_HEIGHT = 60.0
CHART_BAR = 1.6
CHART_WINDOW_S = 24 * 3600
# The chart's line: the median of each kill's recovery and the ones before it, this many.
RUNNING_P50_OF = 10


def _steps(phases: Any) -> list[dict[str, Any]]:
    if not isinstance(phases, dict) or not isinstance(phases.get("steps"), list):
        return []
    return [step for step in phases["steps"] if isinstance(step, dict)]


def _timeline_end(event: Any) -> float | None:
    """How far the bar reaches: the recovery once healed, else the last moment seen."""
    if not isinstance(event, dict):
        return None
    total = _number(event.get("recovery_s"))
    if total is not None:
        return total
    ends = [_number(step.get("end_s")) for step in _steps(event.get("phases"))]
    known = [end for end in ends if end is not None]
    return max(known) if known else None


@register.filter
def timeline_scale(events: Any) -> float:
    """Seconds that the full width of every bar in a list of kills stands for."""
    longest = TIMELINE_MIN_SCALE_S
    for event in events if isinstance(events, list) else []:
        end = _timeline_end(event)
        terminated = event.get("phases", {}) if isinstance(event, dict) else {}
        victim = (terminated or {}).get("terminated") if isinstance(terminated, dict) else None
        victim_s = _number(victim.get("s")) if isinstance(victim, dict) else None
        longest = max(longest, end or 0.0, victim_s or 0.0)
    return float(math.ceil(longest))


def duration(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:.2f} s"


def _phase_words(step: dict[str, Any]) -> dict[str, str]:
    name = str(step.get("name"))
    label, what = PHASE_LABELS.get(name, (name, name))
    state = step.get("state")
    if state == "done":
        text = f"{label} {duration(step.get('s'))}: {what}"
    elif state == "unknown":
        text = f"{label}: not seen"
    else:
        text = f"{label}: waiting"
    return {"phase": name, "state": str(state), "text": text}


@register.simple_tag
def timeline(event: Any, scale: Any = None) -> dict[str, Any]:
    """Everything one kill's bar needs: a rect per phase (x, width in 0..100 of the shared
    scale; an unknown run is drawn once, up to the next moment known), the victim's
    termination, and the same durations as words for the tooltip and screen readers."""
    event = event if isinstance(event, dict) else {}
    phases = event.get("phases") if isinstance(event.get("phases"), dict) else None
    span = _number(scale) or TIMELINE_MIN_SCALE_S
    total = _number(event.get("recovery_s"))
    healed = total is not None

    def x(seconds: float) -> float:
        return round(max(0.0, min(100.0, seconds / span * 100)), 2)

    rects = []
    start = 0.0
    pending_shown = False
    steps = _steps(phases)
    for i, step in enumerate(steps):
        end = _number(step.get("end_s"))
        if end is None and healed and i == len(steps) - 1:
            end = total
        state = str(step.get("state"))
        if end is not None:
            rects.append(
                {
                    "phase": step.get("name"),
                    "state": state,
                    "x": x(start),
                    "width": x(end) - x(start),
                }
            )
            start = end
        elif state == "pending" and not pending_shown:
            # The phase in progress: a short pulse where the bar will grow.
            pending_shown = True
            rects.append(
                {"phase": step.get("name"), "state": "pending", "x": x(start), "width": 2.0}
            )
        else:
            rects.append({"phase": step.get("name"), "state": state, "x": x(start), "width": 0.0})
    victim = phases.get("terminated") if phases else None
    victim_s = _number(victim.get("s")) if isinstance(victim, dict) else None
    words = [_phase_words(step) for step in steps]
    if isinstance(victim, dict):
        if victim_s is not None:
            text = f"victim shut down in {duration(victim_s)}"
        elif victim.get("state") == "unknown":
            text = "victim's shutdown: not seen"
        else:
            text = "victim still shutting down"
        words.append({"phase": "victim", "state": str(victim.get("state")), "text": text})
    return {
        "known": phases is not None,
        "complete": bool(phases and phases.get("complete")),
        "rects": rects,
        "victim_width": x(victim_s) if victim_s is not None else 0.0,
        "words": words,
    }


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


@register.simple_tag
def recovery_chart(points: Any, now: Any = None) -> dict[str, Any]:
    """The 24 h chart: per kill a stack of its phases (bottom up, in order; what was not
    measured on top, in grey), scaled to the slowest; and the running p50 line.

    `points` are chaos.selectors.recovery_chart()'s `[id, epoch_s, recovery_s, [s, …]]`."""
    clean: list[tuple[float, float, list[float | None]]] = []
    for point in points if isinstance(points, list) else []:
        if not isinstance(point, list | tuple) or len(point) != 4:
            continue
        ts, total = _number(point[1]), _number(point[2])
        if ts is None or total is None:
            continue
        parts = point[3] if isinstance(point[3], list) else []
        clean.append((ts, total, [_number(p) for p in parts]))
    clean.sort(key=lambda p: p[0])
    moment = _number(now)
    right = moment if moment is not None else datetime.now(tz=UTC).timestamp()
    left = right - CHART_WINDOW_S
    clean = [p for p in clean if p[0] >= left]
    top = float(math.ceil(max([TIMELINE_MIN_SCALE_S, *(p[1] for p in clean)])))

    def y(seconds: float) -> float:
        return seconds / top * CHART_HEIGHT

    bars = []
    line = []
    totals: list[float] = []
    for ts, total, parts in clean:
        bx = round(min(CHART_WIDTH - CHART_BAR, (ts - left) / CHART_WINDOW_S * CHART_WIDTH), 2)
        segments = []
        base = 0.0
        for name, part in zip(PHASE_LABELS, parts, strict=False):
            if part is None or part <= 0:
                continue
            segments.append(
                {
                    "phase": name,
                    "y": round(CHART_HEIGHT - y(base + part), 2),
                    "height": round(y(part), 2),
                }
            )
            base += part
        if total - base > 0.005:
            segments.append(
                {
                    "phase": "unknown",
                    "y": round(CHART_HEIGHT - y(total), 2),
                    "height": round(y(total - base), 2),
                }
            )
        bars.append({"x": bx, "segments": segments})
        totals.append(total)
        p50 = _median(totals[-RUNNING_P50_OF:])
        line.append(f"{bx + CHART_BAR / 2:.2f},{CHART_HEIGHT - y(p50):.2f}")
    if clean:
        p50_all = _median([p[1] for p in clean])
        label = (
            f"{len(clean)} recoveries in the last 24 hours, from {min(totals):.1f} to "
            f"{max(totals):.1f} seconds, median {p50_all:.1f} seconds"
        )
    else:
        label = "No recoveries in the last 24 hours yet"
    return {
        "bars": bars,
        "p50": " ".join(line),
        "top": f"{top:g}",
        "label": label,
        "empty": not clean,
    }
