from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dashboard import promql
from dashboard.prometheus import Sample
from dashboard.snapshot import assemble, empty_history, history_series

GIB = 1024**3


def good_answers() -> dict[str, list[Sample] | None]:
    return {
        "pods_total": [Sample({}, 7.0)],
        "pods_running": [Sample({}, 5.0)],
        "cpu_used_percent": [Sample({}, 12.3456)],
        "memory_used_percent": [Sample({}, 40.0)],
        "memory_used_bytes": [Sample({}, 3.0 * GIB)],
        "memory_total_bytes": [Sample({}, 7.5 * GIB)],
        "node_ready": [
            Sample({"node": "kwok-node-2", "condition": "Ready"}, 1.0),
            Sample({"node": "kwok-node-0", "condition": "Ready"}, 1.0),
            Sample({"node": "kwok-node-1", "condition": "Ready"}, 0.0),
        ],
        "node_memory_used": [
            Sample({"nodename": "kwok-node-0", "instance": "10.0.0.7:9100"}, 1.0 * GIB),
            Sample({"nodename": "kwok-node-2", "instance": "10.0.0.9:9100"}, 2.0 * GIB),
            Sample({"nodename": "not-a-node", "instance": "10.0.0.1:9100"}, 5.0 * GIB),
        ],
        "node_memory_total": [
            Sample({"nodename": "kwok-node-0"}, 2.5 * GIB),
            Sample({"nodename": "kwok-node-2"}, 2.5 * GIB),
        ],
    }


def test_a_complete_round_gives_the_design_shape() -> None:
    history = {"cpu": [[1700000000, 10.0]], "memory": [[1700000000, 40.0]]}
    result = assemble(
        good_answers(), ts=1700000012.3456, history=history, history_ok=True, stale_since=None
    )
    assert result.missing == ()
    assert result.snapshot == {
        "ts": 1700000012.346,
        "stale": False,
        "stale_since": None,
        "pods": {"running": 5, "total": 7},
        "cpu": {"used_percent": 12.35},
        "memory": {"used_percent": 40.0, "used_bytes": 3 * GIB, "total_bytes": int(7.5 * GIB)},
        "nodes": [
            {
                "name": "Node 1",
                "ready": True,
                "memory_used_bytes": GIB,
                "memory_total_bytes": int(2.5 * GIB),
            },
            {
                "name": "Node 2",
                "ready": False,
                "memory_used_bytes": None,
                "memory_total_bytes": None,
            },
            {
                "name": "Node 3",
                "ready": True,
                "memory_used_bytes": 2 * GIB,
                "memory_total_bytes": int(2.5 * GIB),
            },
        ],
        "history": history,
    }
    assert result.node_labels == {
        "kwok-node-0": "Node 1",
        "kwok-node-1": "Node 2",
        "kwok-node-2": "Node 3",
    }


def test_no_real_node_name_or_address_leaves_the_server() -> None:
    result = assemble(
        good_answers(), ts=1.0, history=empty_history(), history_ok=True, stale_since=None
    )
    text = json.dumps(result.snapshot)
    for secret in ("kwok-node", "not-a-node", "10.0.0", "9100", "instance", "nodename"):
        assert secret not in text


def test_a_failed_query_is_null_and_makes_the_snapshot_stale() -> None:
    answers = good_answers()
    answers["cpu_used_percent"] = None
    result = assemble(answers, ts=100.0, history=empty_history(), history_ok=True, stale_since=None)
    assert result.snapshot["cpu"] == {"used_percent": None}
    assert result.snapshot["stale"] is True
    assert result.snapshot["stale_since"] == 100.0
    assert result.missing == ("cpu_used_percent",)
    assert result.snapshot["pods"] == {"running": 5, "total": 7}


def test_empty_and_nan_aggregates_are_null_and_stale() -> None:
    answers = good_answers()
    answers["pods_running"] = []
    answers["memory_used_percent"] = [Sample({}, None)]  # NaN or Inf, already parsed
    result = assemble(answers, ts=100.0, history=empty_history(), history_ok=True, stale_since=None)
    assert result.snapshot["pods"]["running"] is None
    assert result.snapshot["memory"]["used_percent"] is None
    assert set(result.missing) == {"pods_running", "memory_used_percent"}
    assert result.snapshot["stale"]


def test_no_nodes_at_all_is_stale_and_keeps_the_last_node_labels() -> None:
    answers = good_answers()
    answers["node_ready"] = []
    result = assemble(answers, ts=1.0, history=empty_history(), history_ok=True, stale_since=None)
    assert result.snapshot["nodes"] == []
    assert result.node_labels == {}  # the caller then keeps the last mapping
    assert result.snapshot["stale"]


def test_a_missing_per_node_memory_join_is_null_but_not_stale() -> None:
    # A cluster whose exporters' host names do not match its node names: nothing failed.
    answers = good_answers()
    answers["node_memory_used"] = []
    answers["node_memory_total"] = []
    result = assemble(answers, ts=1.0, history=empty_history(), history_ok=True, stale_since=None)
    assert all(n["memory_used_bytes"] is None for n in result.snapshot["nodes"])
    assert not result.snapshot["stale"]


def test_stale_since_is_kept_until_a_good_round() -> None:
    bad = good_answers()
    bad["pods_total"] = None
    first = assemble(bad, ts=100.0, history=empty_history(), history_ok=True, stale_since=None)
    second = assemble(
        bad,
        ts=105.0,
        history=empty_history(),
        history_ok=True,
        stale_since=first.snapshot["stale_since"],
    )
    assert second.snapshot["stale_since"] == 100.0
    good = assemble(
        good_answers(), ts=110.0, history=empty_history(), history_ok=True, stale_since=100.0
    )
    assert good.snapshot["stale"] is False
    assert good.snapshot["stale_since"] is None


def test_history_that_could_not_be_refreshed_makes_the_snapshot_stale() -> None:
    result = assemble(
        good_answers(), ts=1.0, history=empty_history(), history_ok=False, stale_since=None
    )
    assert result.missing == ("history",)
    assert result.snapshot["stale"]


def test_percentages_are_clamped_and_rounded() -> None:
    answers = good_answers()
    answers["cpu_used_percent"] = [Sample({}, -0.3)]
    answers["memory_used_percent"] = [Sample({}, 100.0000001)]
    snapshot = assemble(
        answers, ts=1.0, history=empty_history(), history_ok=True, stale_since=None
    ).snapshot
    assert snapshot["cpu"]["used_percent"] == 0.0
    assert snapshot["memory"]["used_percent"] == 100.0
    assert history_series([(10, 12.345678), (40, -1.0)]) == [[10, 12.35], [40, 0.0]]


def test_duplicate_node_series_give_one_node() -> None:
    answers = good_answers()
    answers["node_ready"] = [Sample({"node": "a"}, 0.0), Sample({"node": "a"}, 1.0)]
    nodes = assemble(
        answers, ts=1.0, history=empty_history(), history_ok=True, stale_since=None
    ).snapshot["nodes"]
    assert [(n["name"], n["ready"]) for n in nodes] == [("Node 1", True)]


# Whatever Prometheus sends (already parsed: finite numbers or None, maybe nothing at all),
# the snapshot is valid JSON without NaN and always has the full shape of the `metrics`
# frame in docs/contract.md.
values = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32))
samples = st.lists(st.builds(Sample, st.just({}), values), max_size=2)
node_samples = st.lists(
    st.builds(
        Sample,
        st.fixed_dictionaries(
            {
                "node": st.sampled_from(["n1", "n2", "n3"]),
                "nodename": st.sampled_from(["n1", "n2", "x"]),
            }
        ),
        values,
    ),
    max_size=5,
)
answer_sets = st.fixed_dictionaries(
    {
        **{name: st.one_of(st.none(), samples) for name in promql.SCALARS},
        **{name: st.one_of(st.none(), node_samples) for name in promql.VECTORS},
    }
)


@given(answer_sets, st.one_of(st.none(), st.floats(0, 2e9)), st.booleans())
def test_snapshot_json_never_has_nan_and_keeps_its_shape(
    answers: dict[str, Any], stale_since: float | None, history_ok: bool
) -> None:
    result = assemble(
        answers, ts=1.7e9, history=empty_history(), history_ok=history_ok, stale_since=stale_since
    )
    decoded = json.loads(json.dumps(result.snapshot, allow_nan=False))
    assert set(decoded) == {
        "ts",
        "stale",
        "stale_since",
        "pods",
        "cpu",
        "memory",
        "nodes",
        "history",
    }
    assert set(decoded["pods"]) == {"running", "total"}
    assert set(decoded["memory"]) == {"used_percent", "used_bytes", "total_bytes"}
    assert decoded["stale"] == bool(result.missing)
    assert (decoded["stale_since"] is None) == (not decoded["stale"])
    for node in decoded["nodes"]:
        assert set(node) == {"name", "ready", "memory_used_bytes", "memory_total_bytes"}
        assert node["name"].startswith("Node ")
