from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from chaos.pods import Pod
from chaos.victims import Refusal, choose_victim
from tests.chaos.fakes import LABELS, NS, T0, pod

pods_strategy = st.builds(
    Pod,
    uid=st.uuids().map(str),
    name=st.text("abcdef-0123", min_size=1, max_size=8),
    namespace=st.sampled_from([NS, NS, NS, "kube-system", "default"]),
    phase=st.sampled_from(["Running", "Running", "Pending", "Succeeded", "Failed", "Unknown"]),
    ready=st.booleans(),
    deleting=st.sampled_from([False, False, False, True]),
    replicaset_uid=st.sampled_from(["rs-1", "rs-2", None]),
    node=st.sampled_from(["kwok-node-0", None]),
    created_at=st.just(T0),
    labels=st.sampled_from([LABELS, {"app": "other"}, {}, {**LABELS, "extra": "x"}]),
)


@settings(max_examples=500)
@given(
    pods=st.lists(pods_strategy, max_size=8),
    seed=st.integers(),
)
def test_the_victim_is_always_eligible_or_there_is_none(pods: list[Pod], seed: int) -> None:
    choice = choose_victim(pods=pods, namespace=NS, labels=LABELS, rng=random.Random(seed))
    ours = [
        p
        for p in pods
        if p.namespace == NS and all(p.labels.get(k) == v for k, v in LABELS.items())
    ]
    serving = [p for p in ours if p.phase == "Running" and p.ready and not p.deleting]
    eligible = [p for p in serving if p.replicaset_uid is not None]
    nothing_in_flight = not any(p.deleting for p in ours)
    if isinstance(choice, Refusal):
        # Refusing is only allowed while a kill is in flight or nothing is eligible.
        assert not nothing_in_flight or not eligible
    else:
        assert choice in eligible
        assert nothing_in_flight


def test_refuses_while_a_pod_is_terminating() -> None:
    pods = [pod(f"p{i}", uid=f"u{i}") for i in range(5)] + [pod("gone", deleting=True)]
    assert choose_victim(pods=pods, namespace=NS, labels=LABELS) == Refusal("pod_terminating")


def test_how_many_stay_ready_is_left_to_the_disruption_budget() -> None:
    # One pod not Ready: the app still picks a serving one; the apiserver, checking the
    # budget on the eviction, is the one to say no (tests/chaos/test_services.py).
    pods = [pod("a", uid="a"), pod("b", uid="b"), pod("c", uid="c", ready=False)]
    assert choose_victim(pods=pods, namespace=NS, labels=LABELS) in pods[:2]


def test_pods_outside_the_namespace_or_selector_are_never_chosen_nor_counted() -> None:
    strangers = [
        pod("sys", uid="s", namespace="kube-system"),
        pod("other", uid="o", labels={"app": "other"}),
    ]
    ours = [pod("a", uid="a"), pod("b", uid="b")]
    assert choose_victim(pods=strangers, namespace=NS, labels=LABELS) == Refusal("no_eligible_pod")
    for seed in range(20):
        victim = choose_victim(
            pods=strangers + ours, namespace=NS, labels=LABELS, rng=random.Random(seed)
        )
        assert victim in ours


def test_bare_pods_are_not_killed() -> None:
    pods = [pod(f"p{i}", uid=f"u{i}", owner=None) for i in range(4)]
    assert choose_victim(pods=pods, namespace=NS, labels=LABELS) == Refusal("no_eligible_pod")


def test_every_eligible_pod_can_be_chosen() -> None:
    pods = [pod(f"p{i}", uid=f"u{i}") for i in range(4)]
    chosen = {
        choose_victim(pods=pods, namespace=NS, labels=LABELS).name  # type: ignore[union-attr]
        for _ in range(200)
    }
    assert chosen == {"p0", "p1", "p2", "p3"}
