"""The one place that talks to the Channels group `infra`.

Frames are serialised once here, by the publisher, so no web process re-encodes the same
snapshot for each of its viewers. The latest `metrics` and `pods` frames are also kept in
the cache: a new viewer gets them at once and the page renders them server-side.

The members of the group are web *processes*, not viewers (dashboard/fanout.py): a frame
costs the channel layer one message per web process, however many people watch.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache

from runtime.metrics import BROADCASTS

GROUP = "infra"
# The channel-layer message type; each web process's hub (dashboard/fanout.py) reads it.
MESSAGE_TYPE = "infra.frame"
Kind = Literal["metrics", "pods", "chaos"]
# Frames a new viewer needs before the next update arrives.
REMEMBERED: tuple[Kind, ...] = ("metrics", "pods")
LATEST_TTL_S = 24 * 3600


def encode(kind: Kind, data: Any) -> str:
    # allow_nan=False: a NaN that slipped through is a bug to see here, not in a browser.
    return json.dumps({"type": kind, "data": data}, allow_nan=False, separators=(",", ":"))


def _latest_key(kind: Kind) -> str:
    return f"latest:{kind}"


def publish(kind: Kind, data: Any) -> str:
    """Sends one frame to every viewer; returns the encoded frame."""
    text = encode(kind, data)
    if kind in REMEMBERED:
        cache.set(_latest_key(kind), text, LATEST_TTL_S)
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    # `kind` spares every receiving process a parse of `text` to learn what it carries.
    async_to_sync(layer.group_send)(GROUP, {"type": MESSAGE_TYPE, "kind": kind, "text": text})
    BROADCASTS.labels(kind=kind).inc()
    return text


def latest(kind: Kind) -> Any | None:
    """The last published data of a remembered kind, decoded, or None."""
    text = cache.get(_latest_key(kind))
    return json.loads(text)["data"] if text else None


async def alatest_by_kind() -> dict[Kind, str]:
    """The remembered frames, encoded, by kind (only the kinds the cache has)."""
    found = await cache.aget_many([_latest_key(k) for k in REMEMBERED])
    return {k: found[_latest_key(k)] for k in REMEMBERED if _latest_key(k) in found}
