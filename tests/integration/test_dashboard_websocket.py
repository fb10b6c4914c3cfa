"""Websockets on real daphne processes and the real Redis channel layer: every viewer of
every web process gets each frame, while the group holds one member per process."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from dashboard.consumers import CLOSE_BINARY, CLOSE_TOO_BIG, MAX_CLIENT_TEXT
from live.publish import GROUP, publish
from stackkit.stack import Devstack, RedisDb
from tests.conftest import until

pytestmark = pytest.mark.integration

# A database of its own: the group's membership is counted exactly, which web processes
# of other suites running at the same time would disturb.
CHANNEL_PREFIX = "infra:ch"  # infra_site.settings.CHANNEL_LAYERS


def redis_url(devstack: Devstack) -> str:
    return devstack.redis_db(RedisDb.DASHBOARD_WEBSOCKET)


@pytest.fixture
def layer_redis_url(devstack: Devstack) -> str:
    """This module's web processes use a database of their own, emptied first."""
    url = redis_url(devstack)
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def viewers() -> Iterator[list[ClientConnection]]:
    opened: list[ClientConnection] = []
    yield opened
    for viewer in opened:
        viewer.close()


def open_viewer(base_url: str, opened: list[ClientConnection]) -> ClientConnection:
    viewer = connect(
        base_url.replace("http://", "ws://") + "/ws/infra/", origin=base_url, open_timeout=10
    )
    opened.append(viewer)
    return viewer


def receive(viewer: ClientConnection) -> dict[str, Any]:
    frame = json.loads(viewer.recv(timeout=5))
    assert isinstance(frame, dict)
    return frame


def group_members(devstack: Devstack) -> int:
    return int(redis.Redis.from_url(redis_url(devstack)).zcard(f"{CHANNEL_PREFIX}:group:{GROUP}"))


@pytest.mark.usefixtures("layer_settings")
def test_every_viewer_of_every_process_gets_each_frame(
    devstack: Devstack, web_server: Callable[..., str], viewers: list[ClientConnection]
) -> None:
    publish("metrics", {"ts": 1, "stale": False})
    publish("pods", {"namespace": "chaos-demo", "pods": []})
    processes = [web_server(REDIS_URL=redis_url(devstack)) for _ in range(2)]
    group = [[open_viewer(url, viewers) for _ in range(3)] for url in processes]
    for viewer in (v for process in group for v in process):
        assert receive(viewer) == {"type": "metrics", "data": {"ts": 1, "stale": False}}
        assert receive(viewer)["type"] == "pods"
    # Six viewers, two web processes: two members.
    assert group_members(devstack) == 2

    publish("metrics", {"ts": 2, "stale": False})
    publish("chaos", {"id": 1, "pod": "chaos-demo-x"})
    for viewer in (v for process in group for v in process):
        assert receive(viewer) == {"type": "metrics", "data": {"ts": 2, "stale": False}}
        assert receive(viewer) == {"type": "chaos", "data": {"id": 1, "pod": "chaos-demo-x"}}

    # A process whose last viewer left leaves the group.
    for viewer in group[0]:
        viewer.close()
    until(lambda: group_members(devstack) == 1, timeout=5, what="one process left in the group")


@pytest.mark.usefixtures("layer_settings")
def test_bad_client_frames_close_only_that_viewer(
    devstack: Devstack, web_server: Callable[..., str], viewers: list[ClientConnection]
) -> None:
    url = web_server(REDIS_URL=redis_url(devstack))
    chatty, binary, huge, calm = (open_viewer(url, viewers) for _ in range(4))
    chatty.send("{not json")
    chatty.send(json.dumps({"type": "metrics", "data": None}))
    binary.send(b"\x00\xff")
    huge.send("x" * (MAX_CLIENT_TEXT + 1))
    for viewer, code in ((binary, CLOSE_BINARY), (huge, CLOSE_TOO_BIG)):
        with pytest.raises(ConnectionClosed) as closed:
            viewer.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == code
    publish("metrics", {"ts": 3})
    assert receive(chatty) == {"type": "metrics", "data": {"ts": 3}}
    assert receive(calm) == {"type": "metrics", "data": {"ts": 3}}
