"""The websocket a viewer holds: what it receives, and what it survives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.core.cache import cache

from dashboard import fanout
from dashboard.consumers import CLOSE_BINARY, CLOSE_TOO_BIG, CLOSE_TOO_SLOW, MAX_CLIENT_TEXT
from dashboard.publish import GROUP, publish
from dashboard.routing import websocket_urlpatterns
from infra_site.metrics import OPEN_WEBSOCKETS

app = URLRouter(websocket_urlpatterns)


@pytest.fixture(autouse=True)
async def _clean_state() -> AsyncIterator[None]:
    await sync_to_async(cache.clear)()
    layer = get_channel_layer()
    await layer.flush()
    yield
    await layer.flush()


@pytest.fixture
async def viewers() -> AsyncIterator[list[WebsocketCommunicator]]:
    opened: list[WebsocketCommunicator] = []
    yield opened
    for communicator in opened:
        await communicator.disconnect()


async def connect(opened: list[WebsocketCommunicator]) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(app, "/ws/infra/")
    opened.append(communicator)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive(communicator: WebsocketCommunicator) -> dict[str, Any]:
    frame = json.loads(await communicator.receive_from(timeout=2))
    assert isinstance(frame, dict)
    return frame


async def nothing_more(communicator: WebsocketCommunicator) -> bool:
    await asyncio.sleep(0.1)
    return communicator.output_queue.empty()


async def close_code(communicator: WebsocketCommunicator) -> int | None:
    await asyncio.sleep(0.1)
    while not communicator.output_queue.empty():
        message = communicator.output_queue.get_nowait()
        if message["type"] == "websocket.close":
            return int(message.get("code", 1000))
    return None


apublish = sync_to_async(publish)


async def test_a_new_viewer_gets_the_latest_metrics_and_pods_at_once(
    viewers: list[WebsocketCommunicator],
) -> None:
    await apublish("metrics", {"ts": 1, "stale": False})
    await apublish("metrics", {"ts": 2, "stale": False})
    await apublish("pods", {"namespace": "chaos-demo", "pods": []})
    await apublish("chaos", {"id": 1})  # an event is news, not state: not replayed
    viewer = await connect(viewers)
    assert await receive(viewer) == {"type": "metrics", "data": {"ts": 2, "stale": False}}
    assert await receive(viewer) == {
        "type": "pods",
        "data": {"namespace": "chaos-demo", "pods": []},
    }
    assert await nothing_more(viewer)


async def test_a_viewer_with_nothing_published_yet_gets_nothing_until_the_first_frame(
    viewers: list[WebsocketCommunicator],
) -> None:
    viewer = await connect(viewers)
    assert await nothing_more(viewer)
    await apublish("metrics", {"ts": 3})
    assert await receive(viewer) == {"type": "metrics", "data": {"ts": 3}}


async def test_updates_reach_every_viewer_through_one_group_member(
    viewers: list[WebsocketCommunicator],
) -> None:
    first, second, third = [await connect(viewers) for _ in range(3)]
    # The group's only member is this process's channel, whatever the number of viewers.
    layer = get_channel_layer()
    assert len(layer.groups[GROUP]) == 1
    await apublish("chaos", {"id": 7, "pod": "chaos-demo-abc"})
    await apublish("metrics", {"ts": 4})
    for viewer in (first, second, third):
        assert await receive(viewer) == {
            "type": "chaos",
            "data": {"id": 7, "pod": "chaos-demo-abc"},
        }
        assert await receive(viewer) == {"type": "metrics", "data": {"ts": 4}}


async def test_the_process_leaves_the_group_with_its_last_viewer(
    viewers: list[WebsocketCommunicator],
) -> None:
    open_before = OPEN_WEBSOCKETS._value.get()
    first, second = await connect(viewers), await connect(viewers)
    assert OPEN_WEBSOCKETS._value.get() == open_before + 2
    await first.disconnect()
    viewers.remove(first)
    await apublish("metrics", {"ts": 5})
    assert await receive(second) == {"type": "metrics", "data": {"ts": 5}}
    await second.disconnect()
    viewers.remove(second)
    await asyncio.sleep(0.05)  # the reader's cleanup runs after its cancellation
    assert not get_channel_layer().groups.get(GROUP)
    assert OPEN_WEBSOCKETS._value.get() == open_before
    # A new viewer after that starts from the cache, not from a frame the idle process
    # might have missed.
    await apublish("metrics", {"ts": 6})
    again = await connect(viewers)
    assert await receive(again) == {"type": "metrics", "data": {"ts": 6}}


@pytest.mark.parametrize("text", ["hello", "{not json", json.dumps({"type": "metrics"}), " "])
async def test_client_text_is_ignored(viewers: list[WebsocketCommunicator], text: str) -> None:
    viewer = await connect(viewers)
    await viewer.send_to(text_data=text)
    assert await close_code(viewer) is None
    await apublish("metrics", {"ts": 8})
    assert await receive(viewer) == {"type": "metrics", "data": {"ts": 8}}


async def test_a_binary_frame_closes_with_unsupported_data(
    viewers: list[WebsocketCommunicator],
) -> None:
    viewer = await connect(viewers)
    other = await connect(viewers)
    await viewer.send_to(bytes_data=b"\x00\x01")
    assert await close_code(viewer) == CLOSE_BINARY
    await apublish("metrics", {"ts": 9})
    assert await receive(other) == {"type": "metrics", "data": {"ts": 9}}


async def test_an_oversized_frame_closes_with_message_too_big(
    viewers: list[WebsocketCommunicator],
) -> None:
    viewer = await connect(viewers)
    await viewer.send_to(text_data="x" * MAX_CLIENT_TEXT)
    assert await close_code(viewer) is None
    await viewer.send_to(text_data="x" * (MAX_CLIENT_TEXT + 1))
    assert await close_code(viewer) == CLOSE_TOO_BIG


async def test_a_viewer_that_stops_reading_is_dropped_and_delays_no_one(
    viewers: list[WebsocketCommunicator], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboard.consumers import InfraConsumer

    stuck = asyncio.Event()
    real_send = InfraConsumer.send

    async def send(self: InfraConsumer, text_data: str | None = None, **kw: Any) -> None:
        # A socket whose writes never complete (a server with backpressure, a dead peer).
        if self.scope["query_string"] == b"stuck" and text_data is not None:
            await stuck.wait()
        await real_send(self, text_data=text_data, **kw)

    monkeypatch.setattr(InfraConsumer, "send", send)
    fanout.hub().queue_limit = 5

    healthy = await connect(viewers)
    slow = WebsocketCommunicator(app, "/ws/infra/?stuck")
    viewers.append(slow)
    assert (await slow.connect())[0]
    for n in range(10):
        await apublish("metrics", {"ts": n})
        assert await receive(healthy) == {"type": "metrics", "data": {"ts": n}}
    stuck.set()
    messages = []
    await asyncio.sleep(0.1)
    while not slow.output_queue.empty():
        messages.append(slow.output_queue.get_nowait())
    closes = [m for m in messages if m["type"] == "websocket.close"]
    assert closes
    assert closes[0]["code"] == CLOSE_TOO_SLOW
