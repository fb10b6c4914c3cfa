"""The per-socket frame budget, kept where frames arrive: in daphne's websocket protocol.

The consumer (dashboard/consumers.py) spends the same budget and closes a chatty viewer
with 4400, but that is too late for a client that floods and ignores the close. Every
frame is parsed on the reactor thread and queued for the application before the consumer
sees it: tens of thousands a second keep the reactor busy for everyone in the process,
and the close frame and autobahn's close timeout wait behind the flood. Here, the first
frame over the budget stops reading from that socket (nothing more of it is parsed), sends
the close and drops the connection if the client has not gone within LINGER_S.

Installed the way infra_site/bodylimit.py is: daphne's factory builds every websocket
connection from the protocol class it names; daphne is pinned in requirements.txt.
"""

from __future__ import annotations

import time
from typing import Any

from daphne import ws_protocol
from django.conf import settings

from infra_site.metrics import WEBSOCKETS_CLOSED
from infra_site.wscap import CLOSE_TOO_CHATTY, FrameBudget

# Long enough for a well-behaved client to read the close frame and answer it.
LINGER_S = 0.5


class BudgetedWebSocketProtocol(ws_protocol.WebSocketProtocol):  # type: ignore[misc]
    """daphne's websocket protocol, which stops a socket that outspends its frame budget."""

    budget: FrameBudget | None = None
    flooded = False

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.flooded:
            return  # already read before reading stopped: dropped unparsed for the app
        now = time.monotonic()
        if self.budget is None:
            self.budget = FrameBudget(
                rate=float(settings.WS_CLIENT_FRAME_RATE),
                burst=int(settings.WS_CLIENT_FRAME_BURST),
                now=now,
            )
        if self.budget.take(now):
            super().onMessage(payload, isBinary)
            return
        self.flooded = True
        WEBSOCKETS_CLOSED.labels(reason="flood").inc()
        self.transport.pauseProducing()
        self.sendClose(code=CLOSE_TOO_CHATTY, reason="too many frames")
        self._reactor().callLater(LINGER_S, self._drop)

    def _drop(self) -> None:
        if self.transport is not None and self.transport.connected:
            self.dropConnection(abort=True)

    @staticmethod
    def _reactor() -> Any:
        # Imported when first needed: daphne chooses and installs the reactor at start,
        # and importing it earlier would install Twisted's default one instead.
        from twisted.internet import reactor

        return reactor


def install() -> None:
    """Make daphne build every websocket connection as a BudgetedWebSocketProtocol."""
    ws_protocol.WebSocketFactory.protocol = BudgetedWebSocketProtocol
