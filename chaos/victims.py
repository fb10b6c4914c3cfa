"""Which pod dies, and when nothing may: the guards between a stranger and an outage."""

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
    # pod_terminating: a kill (or a rollout) is already under way; not_enough_healthy:
    # one more kill would leave fewer than the minimum serving; no_eligible_pod: the
    # serving pods are not ones a ReplicaSet will replace.
    reason: str


def choose_victim(
    *,
    pods: Iterable[Pod],
    namespace: str,
    labels: Mapping[str, str],
    min_ready: int,
    rng: random.Random = SYSTEM_RANDOM,
) -> Pod | Refusal:
    """A random eligible pod (ours, serving, owned by a ReplicaSet that will bring it
    back), or why there must be none.

    Pods outside the namespace or selector are ignored entirely: they neither count as
    healthy nor block a kill. A Terminating pod blocks: while one is being replaced, the
    Ready count is about to drop, and stacking kills is how a demo becomes an outage."""
    ours = [p for p in pods if p.namespace == namespace and matches(p, labels)]
    if any(p.deleting for p in ours):
        return Refusal("pod_terminating")
    serving = [p for p in ours if p.serving]
    if len(serving) - 1 < min_ready:
        return Refusal("not_enough_healthy")
    eligible = [p for p in serving if p.replicaset_uid is not None]
    if not eligible:
        return Refusal("no_eligible_pod")
    # Sorted so that the choice depends on the random draw only, not on list order.
    eligible.sort(key=lambda p: (p.name, p.uid))
    return rng.choice(eligible)
