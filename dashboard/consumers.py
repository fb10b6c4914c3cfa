"""The websocket viewers connect to. Server -> client only (docs/contract.md, "Websocket").

Frames reach a viewer through this process's fan-out hub (dashboard/fanout.py), not
through a channel of the viewer's own: Channels would otherwise make every viewer a
member of the group, which is what stops scaling at a few thousand viewers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from dashboard.fanout import Hub, Subscription, hub
from door.wscap import CLOSE_TOO_CHATTY, FrameBudget
from runtime.gctuning import closed_sockets
from runtime.metrics import OPEN_WEBSOCKETS, WEBSOCKETS_CLOSED

log = logging.getLogger(__name__)

# Application close codes (4000-4999) mirroring HTTP statuses. Not RFC 6455's 1003/1009:
# daphne's websocket library (autobahn) lets a server close only with 1000 or 3000-4999,
# and raises on anything else, which the client would see as 1011 "internal error".
CLOSE_BINARY = 4415  # unsupported media type: this protocol is text frames only
CLOSE_TOO_BIG = 4413  # payload too large
CLOSE_TOO_SLOW = 4408  # timeout: this viewer fell too far behind
# Viewers have nothing to say, so any frame is tolerated only while it is small.
MAX_CLIENT_TEXT = 4096


class InfraConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels ships no types
    # An alias that names no channel layer: Channels then gives this consumer no channel
    # of its own (channels.layers.get_channel_layer returns None for it).
    channel_layer_alias = "infra.no-channel-per-viewer"

    hub: Hub | None = None
    subscription: Subscription | None = None
    forwarder: asyncio.Task[None] | None = None
    counted = False
    budget: FrameBudget | None = None
    # Set once this consumer has decided to close: frames still arriving until the close
    # handshake ends are dropped without a look.
    closing = False

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch closes stale DB connections in a thread before each message.
        # This consumer touches no database, and a thread hop per client frame would let
        # one chatty client tie up the shared thread every sync view needs.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.budget = FrameBudget(
            rate=float(settings.WS_CLIENT_FRAME_RATE),
            burst=int(settings.WS_CLIENT_FRAME_BURST),
            now=time.monotonic(),
        )
        await self.accept()
        OPEN_WEBSOCKETS.inc()
        self.counted = True
        self.hub = hub()
        self.subscription, first = await self.hub.subscribe()
        for text in first:
            await self.send(text_data=text)
        self.forwarder = asyncio.create_task(self._forward(self.subscription))

    async def disconnect(self, code: int) -> None:
        if self.forwarder is not None and self.forwarder is not asyncio.current_task():
            self.forwarder.cancel()
        if self.hub is not None and self.subscription is not None:
            self.hub.unsubscribe(self.subscription)
            self.subscription = None
        if self.counted:
            OPEN_WEBSOCKETS.dec()
            self.counted = False
            closed_sockets.note_closed()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        if self.budget is not None and not self.budget.take(time.monotonic()):
            await self._close_for("flood", CLOSE_TOO_CHATTY, "too many frames")
        elif bytes_data is not None:
            await self._close_for("binary", CLOSE_BINARY, "binary frames are not accepted")
        elif text_data is not None and len(text_data) > MAX_CLIENT_TEXT:
            await self._close_for("too_big", CLOSE_TOO_BIG, "frame too large")
        # Any other text is ignored: the protocol has no client messages.

    async def _close_for(self, reason: str, code: int, text: str) -> None:
        self.closing = True
        WEBSOCKETS_CLOSED.labels(reason=reason).inc()
        await self.close(code=code, reason=text)

    async def _forward(self, subscription: Subscription) -> None:
        try:
            while (text := await subscription.next()) is not None:
                await self.send(text_data=text)
            log.info("websocket: a viewer fell too far behind; closing it")
            await self._close_for("too_slow", CLOSE_TOO_SLOW, "too far behind")
        except asyncio.CancelledError:
            raise
        except Exception:
            # The connection is gone or broken; its disconnect cleans up. Nothing to
            # propagate: an exception here would only end this task, noisily.
            log.debug("websocket: sending failed", exc_info=True)
