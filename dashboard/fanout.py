"""Per-process fan-out: the group `infra` has one member per web process, not per viewer.

Channels' usual pattern (every consumer joins the group) makes each published frame cost
one channel-layer message per viewer, and with channels_redis one Redis write and one
receive per viewer: at a few thousand viewers delivery takes seconds. Here each web
process joins the group once, through a channel of its own read by one task, and hands the
already-encoded text to its local sockets. A frame then costs one channel-layer message
per process, and the per-viewer work is a queue append.

Each socket has a bounded queue, drained by its own task, so a viewer whose sends stall
delays nobody else; one that falls `queue_limit` frames behind is dropped, and reconnects
to the latest frames, which are all it needs.

The hub lives as long as the process has viewers: it starts with the first and stops
with the last (a process nobody watches receives nothing).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Iterable
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import BaseChannelLayer, get_channel_layer

from live.publish import GROUP, MESSAGE_TYPE, REMEMBERED, Kind, alatest_by_kind

log = logging.getLogger(__name__)

# Frames a viewer may fall behind before it is dropped. The poller sends one frame per
# POLL_INTERVAL and the watcher a burst per pod change; a healthy viewer holds 0 or 1.
QUEUE_LIMIT = 64
# A viewer's first frames wait at most this long for the process to join the group (the
# channel layer is down otherwise; the frames then come when it is back).
JOIN_WAIT_S = 3.0
# Group memberships expire (channel layers' group_expiry, a day by default) and vanish
# with a flushed or restarted Redis without persistence; a process channel lives as long
# as the process has viewers, so it renews its membership, cheaply (one ZADD), and often
# enough that a lost membership costs seconds of updates, not minutes.
REJOIN_EVERY_S = 30.0
RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0
LAYER_CALL_TIMEOUT_S = 5.0

Frame = tuple[str, str]  # (kind, encoded text); one tuple shared by every queue


class Subscription:
    """One socket's bounded queue of encoded frames.

    Kept small on purpose, since there is one per viewer: a list and a future that exists
    only while the socket waits, rather than a deque and an asyncio.Event (a deque's first
    block alone is over half a kilobyte).
    """

    __slots__ = ("_frames", "_limit", "_waiter", "overflowed")

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self._frames: list[Frame] = []
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False

    def offer(self, frame: Frame) -> None:
        if self.overflowed:
            return
        if len(self._frames) >= self._limit:
            self.overflowed = True
            self._frames.clear()
        else:
            self._frames.append(frame)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def discard(self, kinds: Iterable[str]) -> None:
        """Drops queued frames of these kinds (superseded by the frames sent on connect)."""
        if self._frames:
            drop = set(kinds)
            self._frames = [frame for frame in self._frames if frame[0] not in drop]

    async def next(self) -> str | None:
        """The next frame's text; None once the viewer fell too far behind."""
        while not self._frames:
            if self.overflowed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        # pop(0) is O(len), and len is a handful at most (QUEUE_LIMIT bounds it).
        return self._frames.pop(0)[1]


def _kind_of(text: str) -> str:
    # Only for a message from a publisher that did not say its kind.
    try:
        kind = json.loads(text).get("type")
    except (ValueError, AttributeError):
        return ""
    return kind if isinstance(kind, str) else ""


class Hub:
    """This process's one member of the group, and its registry of local viewers."""

    def __init__(
        self, *, layer_alias: str = DEFAULT_CHANNEL_LAYER, queue_limit: int = QUEUE_LIMIT
    ) -> None:
        self.layer_alias = layer_alias
        self.queue_limit = queue_limit
        # The last frame of each remembered kind this process received: a new viewer's
        # first frames, without a cache read per connection.
        self.latest: dict[str, str] = {}
        self.channel_name: str | None = None
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._joined = asyncio.Event()
        # The cache is read once per start of the hub, not per viewer: a kind it lacks
        # (no watcher running, say) arrives through the group or not at all, and a cache
        # read from each viewer's task would open a Redis connection pool per viewer
        # (Django's cache handler keeps one per async context).
        self._seeding: asyncio.Task[None] | None = None

    async def subscribe(self) -> tuple[Subscription, list[str]]:
        """Registers a viewer; returns its queue and the frames to send it first."""
        subscription = Subscription(self.queue_limit)
        # Registered before the first await, so the hub cannot stop under a viewer that
        # is still connecting, and no frame published meanwhile is missed.
        self._subscriptions.add(subscription)
        self._start()
        joined = self._joined
        if not joined.is_set():
            try:
                await asyncio.wait_for(joined.wait(), JOIN_WAIT_S)
            except TimeoutError:
                log.warning("fan-out: not in group %r yet; the viewer waits for frames", GROUP)
        if self._seeding is None:
            self._seeding = asyncio.create_task(self._seed_from_cache())
        await asyncio.shield(self._seeding)
        # What arrived while we waited is in `latest` too; sending it twice would make
        # numbers jump back and forth.
        subscription.discard(REMEMBERED)
        return subscription, [self.latest[kind] for kind in REMEMBERED if kind in self.latest]

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        if not self._subscriptions:
            self._stop()

    def deliver(self, message: dict[str, Any]) -> None:
        """Hands one channel-layer message to every local viewer."""
        text = message.get("text")
        if message.get("type") != MESSAGE_TYPE or not isinstance(text, str):
            log.warning("fan-out: ignoring a message of type %r", message.get("type"))
            return
        kind = message.get("kind")
        if not isinstance(kind, str):
            kind = _kind_of(text)
        if kind in REMEMBERED:
            self.latest[kind] = text
        frame = (kind, text)
        for subscription in self._subscriptions:
            subscription.offer(frame)

    def _start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._joined = asyncio.Event()
        # A hub that was stopped missed frames meanwhile: start from the cache again.
        self.latest.clear()
        self._seeding = None
        self._task = asyncio.create_task(self._run(self._joined), name="infra-fanout")

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._seeding = None
        self.latest.clear()
        self.channel_name = None

    async def _cached_frames(self) -> dict[Kind, str]:
        """The latest remembered frames in the cache; none when the cache is unreachable
        (viewers then wait for the next publish)."""
        try:
            return await alatest_by_kind()
        except Exception:
            log.warning("fan-out: cannot read the latest frames from the cache", exc_info=True)
            return {}

    async def _seed_from_cache(self) -> None:
        """Fills in remembered kinds this process has not received from the group."""
        for kind, text in (await self._cached_frames()).items():
            # A frame received from the group meanwhile is at least as new as the cache.
            self.latest.setdefault(kind, text)

    async def _run(self, joined: asyncio.Event) -> None:
        layer = get_channel_layer(self.layer_alias)
        if layer is None:
            log.error("fan-out: channel layer %r is not configured", self.layer_alias)
            joined.set()
            return
        retry_s = RETRY_MIN_S
        rejoining = False
        while True:
            channel: str | None = None
            renewer: asyncio.Task[None] | None = None
            try:
                channel = await layer.new_channel()
                await asyncio.wait_for(layer.group_add(GROUP, channel), LAYER_CALL_TIMEOUT_S)
                self.channel_name = channel
                if rejoining:
                    await self._catch_up()
                joined.set()
                retry_s = RETRY_MIN_S
                renewer = asyncio.create_task(self._renew(layer, channel))
                while True:
                    self.deliver(await layer.receive(channel))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "fan-out: channel layer failed; rejoining in %.1f s", retry_s, exc_info=True
                )
            finally:
                if renewer is not None:
                    renewer.cancel()
                if channel is not None:
                    await self._leave(layer, channel)
            rejoining = True
            await asyncio.sleep(retry_s)
            retry_s = min(retry_s * 2, RETRY_MAX_S)

    async def _catch_up(self) -> None:
        # Frames published while the layer was unreachable are lost; the cache has the
        # latest of each remembered kind, so viewers are current again at once. (No frame
        # can arrive meanwhile: the receive loop has not resumed yet.)
        for kind, text in (await self._cached_frames()).items():
            if self.latest.get(kind) != text:
                self.latest[kind] = text
                frame = (kind, text)
                for subscription in self._subscriptions:
                    subscription.offer(frame)

    async def _renew(self, layer: BaseChannelLayer, channel: str) -> None:
        while True:
            await asyncio.sleep(REJOIN_EVERY_S)
            try:
                await asyncio.wait_for(layer.group_add(GROUP, channel), LAYER_CALL_TIMEOUT_S)
            except Exception:
                log.warning("fan-out: could not renew the group membership", exc_info=True)

    @staticmethod
    async def _leave(layer: BaseChannelLayer, channel: str) -> None:
        try:
            await asyncio.wait_for(layer.group_discard(GROUP, channel), LAYER_CALL_TIMEOUT_S)
        except Exception:
            # The membership expires by itself; a message sent to it meanwhile is dropped
            # when the channel's capacity or TTL is reached.
            log.debug("fan-out: could not leave the group", exc_info=True)


# One hub per event loop: a web process has one loop; tests start a loop per test.
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """This process's (this event loop's) hub."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
    return found
