"""Node anonymisation: real node names never leave the server.

Nodes are shown as "Node 1".."Node N", numbered in the order of their sorted real names,
so the same cluster always gets the same numbering and a viewer cannot learn a name.
The poller computes the mapping every round from the nodes Kubernetes reports and stores
it in the shared cache; the pod watcher (another process) reads it to label pods.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.cache import cache

CACHE_KEY = "nodes:labels"
# Long enough to outlive a poller restart; the poller rewrites it every round anyway.
CACHE_TTL_S = 24 * 3600


def anonymise(real_names: Iterable[str]) -> dict[str, str]:
    """Maps each distinct real name to "Node i", i counting from 1 in sorted order."""
    return {name: f"Node {i}" for i, name in enumerate(sorted(set(real_names)), start=1)}


def remember(mapping: dict[str, str]) -> None:
    """Stores the current real-name -> label mapping for the other processes."""
    cache.set(CACHE_KEY, dict(mapping), CACHE_TTL_S)


def node_label(real_name: str | None) -> str | None:
    """The public label of a node, or None when the node is unknown (or not given).

    None rather than a made-up label: a pod on a node the poller has not seen yet must
    not show a name that later turns out to mean another node.
    """
    if not real_name:
        return None
    mapping = cache.get(CACHE_KEY)
    if not isinstance(mapping, dict):
        return None
    label = mapping.get(real_name)
    return label if isinstance(label, str) else None
