"""Which pod dies, and when the app will not even ask.

How many pods may be down at once is not decided here: the namespace's
PodDisruptionBudget says it, and the apiserver enforces it on every eviction
(chaos/kube.py's evict_pod). What the app adds is pacing, one kill in flight: while a
victim is still shutting down, no new press asks, so visitors watch one recovery at a
time."""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chaos.pods import Pod, matches

# A visitor can not influence or predict the victim, not even by seeding: the OS's
# randomness, not the Mersenne Twister.
SYSTEM_RANDOM: random.Random = secrets.SystemRandom()


@dataclass(frozen=True)
class Refusal:
    # pod_terminating: a kill (or a rollout) is already under way; no_eligible_pod: no
    # serving pod is one a ReplicaSet will replace.
    reason: str


def choose_victim(
    *,
    pods: Iterable[Pod],
    namespace: str,
    labels: Mapping[str, str],
    rng: random.Random = SYSTEM_RANDOM,
) -> Pod | Refusal:
    """A random eligible pod (ours, serving, owned by a ReplicaSet that will bring it
    back), or why there must be none.

    Pods outside the namespace or selector are ignored entirely. A Terminating pod
    blocks: one kill at a time, each seen through. Whether the kill may leave the rest
    short is the disruption budget's call, made by the apiserver when we evict."""
    ours = [p for p in pods if p.namespace == namespace and matches(p, labels)]
    if any(p.deleting for p in ours):
        return Refusal("pod_terminating")
    eligible = [p for p in ours if p.serving and p.replicaset_uid is not None]
    if not eligible:
        return Refusal("no_eligible_pod")
    # Sorted so that the choice depends on the random draw only, not on list order.
    eligible.sort(key=lambda p: (p.name, p.uid))
    return rng.choice(eligible)
