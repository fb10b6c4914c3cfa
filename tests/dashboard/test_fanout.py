"""The per-process hub: one group member per process, bounded queues, a reader that lasts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer
from django.core.cache import cache

from dashboard import fanout
from dashboard.fanout import Hub, Subscription
from live.publish import GROUP, MESSAGE_TYPE, encode, publish
from tests.conftest import auntil


@pytest.fixture(autouse=True)
async def _clean_state() -> AsyncIterator[None]:
    await sync_to_async(cache.clear)()
    await get_channel_layer().flush()
    yield
    await get_channel_layer().flush()


def frame(kind: str, ts: int) -> dict[str, Any]:
    return {"type": MESSAGE_TYPE, "kind": kind, "text": encode(kind, {"ts": ts})}  # type: ignore[arg-type]


async def drain(subscription: Subscription) -> list[str]:
    texts = []
    while True:
        try:
            text = await asyncio.wait_for(subscription.next(), 0.05)
        except TimeoutError:
            return texts
        if text is None:
            return [*texts, "<overflow>"]
        texts.append(text)


async def test_a_subscription_holds_frames_in_order_up_to_its_limit() -> None:
    subscription = Subscription(limit=3)
    for n in range(3):
        subscription.offer(("metrics", str(n)))
    assert await drain(subscription) == ["0", "1", "2"]
    for n in range(4):
        subscription.offer(("metrics", str(n)))
    # Past the limit the backlog is worthless: the viewer is told to reconnect instead.
    assert await drain(subscription) == ["<overflow>"]
    subscription.offer(("metrics", "late"))
    assert await subscription.next() is None


async def test_discard_drops_only_the_given_kinds() -> None:
    subscription = Subscription()
    subscription.offer(("metrics", "m"))
    subscription.offer(("chaos", "c"))
    subscription.offer(("pods", "p"))
    subscription.discard(("metrics", "pods"))
    assert await drain(subscription) == ["c"]


async def test_a_frame_that_arrives_while_a_viewer_connects_is_sent_once_and_newest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = Hub()
    newer = frame("metrics", 2)

    async def cache_read_during_which_a_frame_arrives() -> dict[str, str]:
        hub.deliver(newer)
        return {"metrics": encode("metrics", {"ts": 1}), "pods": encode("pods", {"ts": 1})}

    monkeypatch.setattr(fanout, "alatest_by_kind", cache_read_during_which_a_frame_arrives)
    subscription, first = await hub.subscribe()
    assert first == [newer["text"], encode("pods", {"ts": 1})]
    assert await drain(subscription) == []
    hub.unsubscribe(subscription)


async def test_a_publish_from_another_thread_reaches_the_hub() -> None:
    hub = Hub()
    subscription, _ = await hub.subscribe()
    await sync_to_async(publish)("chaos", {"id": 1})
    assert await asyncio.wait_for(subscription.next(), 2) == encode("chaos", {"id": 1})
    assert hub.channel_name in get_channel_layer().groups[GROUP]
    hub.unsubscribe(subscription)


async def test_messages_without_kind_or_of_another_type() -> None:
    hub = Hub()
    subscription = Subscription()
    hub._subscriptions.add(subscription)
    hub.deliver({"type": MESSAGE_TYPE, "text": encode("pods", {"ts": 3})})  # an older publisher
    hub.deliver({"type": "something.else", "text": "x"})
    hub.deliver({"type": MESSAGE_TYPE, "text": None})
    assert hub.latest == {"pods": encode("pods", {"ts": 3})}
    assert await drain(subscription) == [encode("pods", {"ts": 3})]


class FlakyLayer(InMemoryChannelLayer):
    """An in-memory layer whose receive fails once, as Redis does when it restarts."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1
        self.group_adds = 0

    async def group_add(self, group: str, channel: str) -> None:
        self.group_adds += 1
        await super().group_add(group, channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        if self.failures:
            await asyncio.sleep(0.05)
            self.failures -= 1
            raise ConnectionError("connection reset")
        return await super().receive(channel)


async def test_the_reader_rejoins_after_a_layer_failure_and_catches_up_from_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = FlakyLayer()
    monkeypatch.setitem(channel_layers.backends, "flaky", layer)
    monkeypatch.setattr(fanout, "RETRY_MIN_S", 0.01)
    hub = Hub(layer_alias="flaky")
    subscription, _ = await hub.subscribe()
    # Published while the process was out of the group: only the cache has it.
    await sync_to_async(cache.set)("latest:metrics", encode("metrics", {"ts": 5}))
    # The rejoin, and with it the catch-up from the cache.
    await auntil(lambda: layer.group_adds >= 2, what="the reader rejoining the group")
    assert await drain(subscription) == [encode("metrics", {"ts": 5})]
    assert layer.group_adds == 2, "one failure, one rejoin"
    await layer.group_send(GROUP, frame("metrics", 6))
    assert await drain(subscription) == [frame("metrics", 6)["text"]]
    hub.unsubscribe(subscription)
    await auntil(lambda: not layer.groups.get(GROUP), what="the process leaving the group")


async def test_a_viewer_connects_even_when_the_layer_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class DownLayer(InMemoryChannelLayer):
        async def group_add(self, group: str, channel: str) -> None:
            raise ConnectionError("refused")

    monkeypatch.setitem(channel_layers.backends, "down", DownLayer())
    monkeypatch.setattr(fanout, "JOIN_WAIT_S", 0.1)
    await sync_to_async(cache.set)("latest:metrics", encode("metrics", {"ts": 1}))
    hub = Hub(layer_alias="down")
    subscription, first = await asyncio.wait_for(hub.subscribe(), 1)
    assert first == [encode("metrics", {"ts": 1})]
    hub.unsubscribe(subscription)
