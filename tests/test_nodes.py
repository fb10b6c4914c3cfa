from __future__ import annotations

from random import Random

import pytest
from django.core.cache import cache
from hypothesis import given
from hypothesis import strategies as st

from live.nodes import anonymise, node_label, remember


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    cache.clear()


def test_labels_follow_sorted_real_names() -> None:
    assert anonymise(["kwok-node-2", "kwok-node-0", "kwok-node-1"]) == {
        "kwok-node-0": "Node 1",
        "kwok-node-1": "Node 2",
        "kwok-node-2": "Node 3",
    }


def test_duplicates_get_one_label() -> None:
    assert anonymise(["b", "a", "b"]) == {"a": "Node 1", "b": "Node 2"}


@given(st.lists(st.text(min_size=1, max_size=20), max_size=30), st.randoms())
def test_order_of_input_never_changes_the_labels(names: list[str], rnd: Random) -> None:
    shuffled = list(names)
    rnd.shuffle(shuffled)
    mapping = anonymise(names)
    assert anonymise(shuffled) == mapping
    assert sorted(mapping.values(), key=lambda v: int(v.split()[1])) == [
        f"Node {i}" for i in range(1, len(set(names)) + 1)
    ]


def test_node_label_reads_the_remembered_mapping() -> None:
    assert node_label("kwok-node-1") is None
    remember(anonymise(["kwok-node-1", "kwok-node-0"]))
    assert node_label("kwok-node-1") == "Node 2"
    assert node_label("kwok-node-9") is None
    assert node_label(None) is None
    assert node_label("") is None


def test_remember_replaces_the_previous_mapping() -> None:
    remember(anonymise(["a", "b"]))
    remember(anonymise(["b"]))
    assert node_label("b") == "Node 1"
    assert node_label("a") is None
