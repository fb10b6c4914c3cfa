"""The `metrics` frame (docs/contract.md, "Websocket"): typed, assembled from one poll round.

Pure functions of what Prometheus answered, so every rule here (what counts as stale, how
nodes are named, what null means) is tested without a server. Real node names go in and
only "Node N" labels come out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypedDict

from dashboard import promql
from dashboard.prometheus import Point, Sample, scalar
from live.nodes import anonymise

# History points and percentages are shown with one decimal; two keep the frame small
# (it goes to every viewer every few seconds) without visible rounding.
PERCENT_DIGITS = 2


class Pods(TypedDict):
    running: int | None
    total: int | None


class Cpu(TypedDict):
    used_percent: float | None


class Memory(TypedDict):
    used_percent: float | None
    used_bytes: int | None
    total_bytes: int | None


class Node(TypedDict):
    name: str
    ready: bool
    memory_used_bytes: int | None
    memory_total_bytes: int | None


class History(TypedDict):
    cpu: list[list[float]]
    memory: list[list[float]]


class Snapshot(TypedDict):
    ts: float
    stale: bool
    stale_since: float | None
    pods: Pods
    cpu: Cpu
    memory: Memory
    nodes: list[Node]
    history: History


# What one round asked Prometheus, by the names in dashboard.promql; None = no answer.
Answers = Mapping[str, list[Sample] | None]


@dataclass(frozen=True)
class Assembled:
    snapshot: Snapshot
    # Real name -> "Node N", for live.nodes.remember; empty when Kubernetes'
    # node list was not available this round (the last known mapping then stays).
    node_labels: dict[str, str]
    # Queries whose answer was missing, empty where a value was expected, or not finite.
    missing: tuple[str, ...]


def empty_history() -> History:
    return {"cpu": [], "memory": []}


def history_series(points: Iterable[Point]) -> list[list[float]]:
    return [[ts, round(_percent(value), PERCENT_DIGITS)] for ts, value in points]


def _percent(value: float) -> float:
    # rate() over a counter reset, or MemAvailable read a moment apart from MemTotal, can
    # step just outside 0..100; a percentage card must not show -0.3 %.
    return min(100.0, max(0.0, value))


def _rounded_percent(value: float | None) -> float | None:
    return None if value is None else round(_percent(value), PERCENT_DIGITS)


def _integer(value: float | None) -> int | None:
    return None if value is None else round(value)


def _by_label(samples: list[Sample] | None, label: str) -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for sample in samples or ():
        name = sample.labels.get(label)
        if name:
            # Two series for one node (a second exporter during a rollout): the larger
            # reading is the safer one to show.
            previous = found.get(name)
            if previous is None or (sample.value is not None and sample.value > previous):
                found[name] = sample.value
    return found


def _nodes(answers: Answers) -> tuple[list[Node], dict[str, str]]:
    ready = _by_label(answers.get("node_ready"), promql.NODE_LABEL["node_ready"])
    used = _by_label(answers.get("node_memory_used"), promql.NODE_LABEL["node_memory_used"])
    total = _by_label(answers.get("node_memory_total"), promql.NODE_LABEL["node_memory_total"])
    # Kubernetes' node list decides which nodes exist; an exporter on a machine that is
    # not a node (or a join that did not match) adds nothing.
    labels = anonymise(ready)
    nodes: list[Node] = [
        {
            "name": labels[real],
            "ready": ready[real] == 1.0,
            "memory_used_bytes": _integer(used.get(real)),
            "memory_total_bytes": _integer(total.get(real)),
        }
        for real in sorted(labels)
    ]
    return nodes, labels


def assemble(
    answers: Answers,
    *,
    ts: float,
    history: History,
    history_ok: bool,
    stale_since: float | None,
) -> Assembled:
    """Builds the snapshot of one round.

    The snapshot is stale when any value it should carry is unknown: a query that got no
    answer, an aggregate that came back empty or NaN, no nodes at all, or history that
    could not be refreshed. Unknown values are None (JSON null); `stale_since` keeps the
    moment the data first went stale (passed in from the previous round) until a round
    is complete again.
    """
    values = {name: scalar(answers.get(name)) for name in promql.SCALARS}
    missing = [name for name, value in values.items() if value is None]
    missing += [name for name in promql.VECTORS if answers.get(name) is None]
    if answers.get("node_ready") == []:
        missing.append("node_ready")
    if not history_ok:
        missing.append("history")
    nodes, labels = _nodes(answers)
    stale = bool(missing)
    snapshot: Snapshot = {
        "ts": round(ts, 3),
        "stale": stale,
        "stale_since": (ts if stale_since is None else stale_since) if stale else None,
        "pods": {
            "running": _integer(values["pods_running"]),
            "total": _integer(values["pods_total"]),
        },
        "cpu": {"used_percent": _rounded_percent(values["cpu_used_percent"])},
        "memory": {
            "used_percent": _rounded_percent(values["memory_used_percent"]),
            "used_bytes": _integer(values["memory_used_bytes"]),
            "total_bytes": _integer(values["memory_total_bytes"]),
        },
        "nodes": nodes,
        "history": history,
    }
    if snapshot["stale_since"] is not None:
        snapshot["stale_since"] = round(snapshot["stale_since"], 3)
    return Assembled(snapshot, labels, tuple(dict.fromkeys(missing)))
