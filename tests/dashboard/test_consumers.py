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
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from dashboard import fanout
from dashboard.consumers import (
    CLOSE_BINARY,
    CLOSE_TOO_BIG,
    CLOSE_TOO_SLOW,
    MAX_CLIENT_TEXT,
)
from dashboard.routing import websocket_urlpatterns
from door.wscap import CLOSE_TOO_CHATTY, FrameBudget
from live.publish import GROUP, publish
from tests.conftest import auntil, close_code

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
    open_before = open_websockets()
    first, second = await connect(viewers), await connect(viewers)
    assert open_websockets() == open_before + 2
    await first.disconnect()
    viewers.remove(first)
    await apublish("metrics", {"ts": 5})
    assert await receive(second) == {"type": "metrics", "data": {"ts": 5}}
    await second.disconnect()
    viewers.remove(second)
    # The reader's cleanup runs after its cancellation.
    await auntil(lambda: not get_channel_layer().groups.get(GROUP), what="the group left")
    assert open_websockets() == open_before
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
    messages: list[dict[str, Any]] = []

    def closed() -> bool:
        while not slow.output_queue.empty():
            messages.append(slow.output_queue.get_nowait())
        return any(m["type"] == "websocket.close" for m in messages)

    await auntil(closed, what="the slow viewer closed")
    closes = [m for m in messages if m["type"] == "websocket.close"]
    assert closes[0]["code"] == CLOSE_TOO_SLOW


def open_websockets() -> float:
    return REGISTRY.get_sample_value("infra_open_websockets") or 0.0


def closed_for(reason: str) -> float:
    value = REGISTRY.get_sample_value("infra_websockets_closed_total", {"reason": reason})
    return value or 0.0


@override_settings(WS_CLIENT_FRAME_RATE=2.0, WS_CLIENT_FRAME_BURST=5)
async def test_a_flooding_viewer_is_closed_and_counted(
    viewers: list[WebsocketCommunicator],
) -> None:
    before = closed_for("flood")
    flooder = await connect(viewers)
    calm = await connect(viewers)
    for _ in range(5):  # the burst allowance: tolerated
        await flooder.send_to(text_data="hi")
    assert await close_code(flooder) is None
    for _ in range(20):
        await flooder.send_to(text_data="hi")
    assert await close_code(flooder) == CLOSE_TOO_CHATTY
    assert closed_for("flood") == before + 1, "counted once, however many frames followed"
    await apublish("metrics", {"ts": 10})
    assert await receive(calm) == {"type": "metrics", "data": {"ts": 10}}


@override_settings(WS_CLIENT_FRAME_RATE=1000.0, WS_CLIENT_FRAME_BURST=1)
async def test_binary_and_oversized_closes_are_counted_by_reason(
    viewers: list[WebsocketCommunicator],
) -> None:
    binary_before, big_before = closed_for("binary"), closed_for("too_big")
    binary, big = await connect(viewers), await connect(viewers)
    await binary.send_to(bytes_data=b"\x00")
    await big.send_to(text_data="x" * (MAX_CLIENT_TEXT + 1))
    assert await close_code(binary) == CLOSE_BINARY
    assert await close_code(big) == CLOSE_TOO_BIG
    assert (closed_for("binary"), closed_for("too_big")) == (binary_before + 1, big_before + 1)


def test_frame_budget_allows_the_burst_then_the_rate() -> None:
    budget = FrameBudget(rate=2.0, burst=3, now=100.0)
    assert [budget.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not budget.take(100.4)  # 0.8 of a token
    assert budget.take(100.5)  # one token after half a second at 2/s
    assert not budget.take(100.5)
    assert [budget.take(200.0) for _ in range(4)] == [True, True, True, False], "refills to burst"


@given(
    rate=st.floats(min_value=0.1, max_value=50),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_frame_budget_never_lets_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    budget = FrameBudget(rate=rate, burst=burst, now=0.0)
    now, taken = 0.0, 0
    for gap in gaps:
        now += gap
        taken += budget.take(now)
        assert taken <= burst + rate * now + 1e-9
    # And a client that keeps (just) under the rate is never refused.
    steady = FrameBudget(rate=rate, burst=burst, now=0.0)
    assert all(steady.take(n / (rate * 0.999)) for n in range(1, 50))
