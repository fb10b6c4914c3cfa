"""Caps on websocket connections, per client and per process, as ASGI middleware; and the
frame budget each connection gets (FrameBudget, used by dashboard/consumers.py).

A public page can be opened by one script thousands of times; each viewer costs a file
descriptor and memory for as long as it stays. Connections beyond the caps are accepted
and closed at once with a code that says why, because a plain refusal of the handshake
reaches the browser as an anonymous 403 (daphne) or a network error, and a client that
cannot tell "too many from you" from "server down" retries the wrong way.

Counting is per process and in memory: a connection lives in exactly one daphne process,
which always knows its own count, and nothing can leak when a process dies.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from django.conf import settings

from door.clientip import rate_key, scope_client_ip
from runtime.metrics import WEBSOCKETS_REFUSED

log = logging.getLogger(__name__)

# Application-defined (4000-4999), mirroring HTTP 429: this client has too many open.
CLOSE_TOO_MANY_FROM_CLIENT = 4429
# This server is full; another replica may not be. Mirrors HTTP 503. (RFC 6455's own
# 1013 "Try Again Later" would fit, but daphne's websocket library only lets an
# application send 1000 or 3000-4999, and answers anything else with 1011.)
CLOSE_TRY_AGAIN_LATER = 4503
# Bad request: more frames than WS_CLIENT_FRAME_RATE/_BURST allow (FrameBudget below),
# enforced by the consumer and, under daphne, where frames arrive (door/daphne_hooks.py).
# Not 4429, which says "too many connections from your address".
CLOSE_TOO_CHATTY = 4400

ASGIApp = Any  # channels' and Django's ASGI callables have no shared static type


class WebsocketCaps:
    """Wraps the websocket application; other connection types pass straight through.

    One instance per process (infra_site/asgi.py), so its counts are the process's.
    """

    def __init__(
        self, app: ASGIApp, *, max_per_ip: int | None = None, max_per_process: int | None = None
    ) -> None:
        self.app = app
        self._max_per_ip = max_per_ip
        self._max_per_process = max_per_process
        self.open_by_client: Counter[str] = Counter()
        self.open_total = 0

    @property
    def max_per_ip(self) -> int:
        # Read per connection, not at import, so settings overrides in tests apply.
        return int(settings.WS_MAX_PER_IP) if self._max_per_ip is None else self._max_per_ip

    @property
    def max_per_process(self) -> int:
        if self._max_per_process is None:
            return int(settings.WS_MAX_PER_PROCESS)
        return self._max_per_process

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        client = rate_key(scope_client_ip(scope))
        # Check and count with no await in between: the event loop runs one connection's
        # code at a time, so two handshakes cannot both take the last free place.
        if self.open_total >= self.max_per_process:
            await self._refuse(receive, send, "per_process", CLOSE_TRY_AGAIN_LATER, "server full")
            return
        if self.open_by_client[client] >= self.max_per_ip:
            await self._refuse(
                receive, send, "per_ip", CLOSE_TOO_MANY_FROM_CLIENT, "too many connections"
            )
            return
        self.open_total += 1
        self.open_by_client[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open_total -= 1
            self.open_by_client[client] -= 1
            if self.open_by_client[client] <= 0:
                del self.open_by_client[client]

    @staticmethod
    async def _refuse(receive: Any, send: Any, reason: str, code: int, text: str) -> None:
        WEBSOCKETS_REFUSED.labels(reason=reason).inc()
        # The address is deliberately not logged (privacy); the counter says how often.
        log.warning("websocket refused: %s (close code %d)", reason, code)
        message = await receive()
        if message.get("type") != "websocket.connect":
            return  # the client went away during the handshake
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": code, "reason": text})


class FrameBudget:
    """A token bucket for the frames one client sends: up to `burst` at once, then `rate`
    a second. Viewers have nothing to say (the protocol is server -> client), so anything
    beyond a few frames a second is a script, and each frame costs the event loop that
    every other viewer of the process shares. Per connection and in memory: two floats.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spends `cost` tokens (one frame, or a frame's bytes) at monotonic time `now`;
        False, spending nothing, when fewer are left."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True
