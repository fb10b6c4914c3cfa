"""The door: everything this project puts into daphne, autobahn and Twisted, in one place.

daphne is what strangers reach first, and by itself it trusts them: it buffers whole
request bodies, counts no connection, keeps a client that sends one header byte a minute,
parses every websocket frame a client cares to send (pings and continuations included)
and writes replies to a client that never reads them. The app needs little of what the
internet may send (viewers send nothing; the chaos POST and the admin's forms are a few
KB), so here, before Django or Channels see anything:

Connections (DoorFactory, DoorConnection)
  - At most REQUEST_MAX_CONNECTIONS_PER_IP open TCP connections per client address,
    HTTP and websocket alike; more are closed as they are accepted. The address is the
    socket peer's (an IPv6 one counted by its CLIENT_IPV6_PREFIX, as door/clientip.py
    does), so this applies only with TRUSTED_PROXY_COUNT = 0: behind a proxy every peer
    is the proxy, and the proxy caps each visitor (README, k8s/app/ingress.yaml).
  - A request's headers and body must be in within REQUEST_DEADLINE_SECONDS of the
    connection opening (or of its first byte, on a kept-alive connection): one total
    deadline, unlike Twisted's idle timer, which a client restarts with every byte.
  - The process keeps REQUEST_FD_RESERVE descriptors of its RLIMIT_NOFILE for itself
    (Redis, the database, logs, accepting at all). When every other one is held, the
    connection that has waited longest for its request is closed to let the new one in;
    an abuser holding descriptors open cannot lock a normal visitor out.

HTTP requests (DoorRequest)
  - Bodies over REQUEST_BODY_MAX_BYTES are answered 413 as soon as a Content-Length says
    so, or once a chunked body passes it; the rest is read and dropped (never stored) for
    LINGER_SECONDS so a client still sending reads the answer. twisted.web would otherwise
    buffer the body and parse multipart forms into memory before Django is called: one
    40 MB upload grew a web process by about 360 MB. Forms are never parsed here.
  - A HEAD request or a 204/304 answer sends no body, whatever its size: daphne writes
    each body chunk past Twisted's own HEAD check, which only covers the first.
  - A form body in a charset Django refuses (x-www-form-urlencoded is UTF-8 only) is
    answered 400 here: in Django the refusal comes from the CSRF check, and the 400
    handler runs the same check again, which raises again and ends in daphne's 500.

Websockets (DoorWebSocketFactory, DoorWebSocketProtocol)
  - Every frame a client sends (data, continuation, ping, pong, close) spends the socket's
    frame budget (WS_CLIENT_FRAME_RATE / _BURST) and its payload the byte budget
    (WS_CLIENT_BYTE_RATE, burst WS_MAX_MESSAGE_BYTES), counted at the frame's header,
    before its payload is read. A socket over budget is not read any more: it gets the
    close 4400 and is dropped if still there LINGER_S later.
  - A frame over WS_MAX_MESSAGE_BYTES is refused at its header (autobahn's
    maxFramePayloadSize, set on daphne's factory: daphne's --websocket-max-frame-size is
    overridden), and so is the frame that takes a message past it; the connection is
    dropped. (autobahn's maxMessagePayloadSize, daphne's --websocket-max-message-size,
    limits the server's own messages too, so it stays at daphne's 1 MiB.)
  - When more than the transport's buffer (64 KiB) waits to be sent, the socket is not
    read until it drains, and once WS_SEND_BUFFER_MAX_BYTES more would be queued on top
    the connection is dropped: a client that does not read cannot grow the process.

How it is installed: daphne's Server builds its factories from the names its `server`
module imported (HTTPFactory, WebSocketFactory), and each HTTP request from the name
`WebRequest` in its `http_protocol` module; `install()` points those names at the classes
here, before the server starts. A custom Server or command-line class would do the same
with more code and a different web command everywhere. The hooks depend on these exact
versions (WRITTEN_FOR, pinned in requirements.txt); tests/test_door.py fails when an
installed version differs or a hooked name, method or code path has moved.
"""

from __future__ import annotations

import codecs
import resource
import time
from typing import Any

from daphne import http_protocol, ws_protocol
from daphne import server as daphne_server
from django.conf import settings
from django.utils.http import parse_header_parameters
from twisted.internet import interfaces
from twisted.protocols import policies
from twisted.web import http
from zope.interface import implementer

from door.clientip import pick_client_ip, rate_key
from door.wscap import CLOSE_TOO_CHATTY, FrameBudget
from runtime.metrics import CONNECTIONS_CLOSED, WEBSOCKETS_CLOSED

# The versions the hooks below were written against and tested with.
WRITTEN_FOR = {"daphne": "4.2.3", "Twisted": "26.10.0", "autobahn": "26.11.1"}

# How long a refused request's remaining body is read and dropped before closing.
LINGER_SECONDS = 10.0
# Long enough for a well-behaved websocket client to read the close frame and answer it.
LINGER_S = 0.5
# A connection closed at its deadline gets this long to take the 408 before it is cut.
ABORT_AFTER_S = 1.0

FORM = "application/x-www-form-urlencoded"

# Twisted's own annotations for these are partial (transport may be None, methods
# untyped); the classes below use them as daphne's are used, untyped.
_ProtocolWrapper: Any = policies.ProtocolWrapper
_WrappingFactory: Any = policies.WrappingFactory


def _reactor() -> Any:
    # daphne installs its reactor when its server module is imported (above): the one
    # imported here is that one.
    from twisted.internet import reactor

    return reactor


def _plain_answer(status: int, reason: str, text: str) -> bytes:
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def undecodable_form(content_types: list[bytes] | None) -> bool:
    """Whether Django would refuse to decode a body of this Content-Type: a form body
    with a charset that Python knows and that is not UTF-8 (Django's HttpRequest reads
    such a charset, and its form parser accepts x-www-form-urlencoded in UTF-8 only)."""
    if not content_types:
        return False
    main, params = parse_header_parameters(content_types[0].decode("latin-1"))
    charset = params.get("charset")
    if main != FORM or not charset:
        return False
    try:
        codecs.lookup(charset)
    except LookupError:
        return False  # Django ignores a charset it does not know
    return charset.lower() != "utf-8"


# --- connections ------------------------------------------------------------------------


@implementer(interfaces.IPushProducer)
class _SendBufferWatch:
    """The transport's producer once a connection is a websocket: the transport calls
    pauseProducing when more than its bufferSize waits to be sent, resumeProducing once
    that has drained."""

    def __init__(self, connection: DoorConnection) -> None:
        self.connection = connection

    def pauseProducing(self) -> None:
        self.connection.send_blocked()

    def resumeProducing(self) -> None:
        self.connection.send_unblocked()

    def stopProducing(self) -> None:
        return None


class DoorConnection(_ProtocolWrapper):  # type: ignore[misc]
    """One TCP connection, HTTP then perhaps a websocket: it is the transport of the
    protocol it wraps, and daphne's upgrade swaps that protocol in place (it does so for
    any ProtocolWrapper), so the counts and the deadline follow the connection."""

    factory: DoorFactory

    def __init__(self, factory: DoorFactory, wrapped: Any, client: str | None) -> None:
        super().__init__(factory, wrapped)
        self.client = client
        self.opened = time.monotonic()
        self.awaiting = True  # no request is being handled: the next one may come
        self.partial = False  # bytes of a request that is not complete yet
        self.reading_stopped = False
        self.blocked = False
        self.queued_while_blocked = 0
        self.lost = False
        self._deadline: Any = None

    # Deadline: from the connection opening, or from the first byte of the next request
    # on a kept-alive connection, to a complete request. (An idle kept-alive connection
    # is left to Twisted's idle timeout: closing it sooner only races the client's next
    # request. It can still be closed to make room.)

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)
        self._start_deadline()

    def _start_deadline(self) -> None:
        self._cancel_deadline()
        self.factory.waiting[self] = None
        self._deadline = _reactor().callLater(
            float(settings.REQUEST_DEADLINE_SECONDS), self._deadline_passed
        )

    def _cancel_deadline(self) -> None:
        self.factory.waiting.pop(self, None)
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def request_in(self) -> None:
        """A request's headers and body are all in."""
        self.awaiting = False
        self.partial = False
        self._cancel_deadline()

    def answer_sent(self) -> None:
        """The answer is written: the connection waits for the next request, if any."""
        if not self.lost:
            self.awaiting = True
            self.factory.waiting[self] = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        self.factory.waiting.pop(self, None)
        if self.partial:
            CONNECTIONS_CLOSED.labels(reason="deadline").inc()
            self.transport.write(
                _plain_answer(408, "Request Timeout", "The request took too long to arrive.")
            )
        self.close_now()

    def close_now(self) -> None:
        self.transport.loseConnection()
        # A client that does not read could hold the close back behind its data.
        _reactor().callLater(ABORT_AFTER_S, self._abort)

    def _abort(self) -> None:
        if not self.lost:
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.awaiting:
            self.partial = True
            if self._deadline is None:
                self._start_deadline()
        super().dataReceived(data)

    def connectionLost(self, reason: Any) -> None:
        self.lost = True
        self._cancel_deadline()
        super().connectionLost(reason)

    # Reading and sending, for websockets.

    def stop_reading(self) -> None:
        """Reads nothing more from this client, for good."""
        self.reading_stopped = True
        self.transport.pauseProducing()

    def watch_send_buffer(self) -> None:
        # The HTTP channel registered itself as the transport's producer; after the
        # upgrade it no longer hears from this connection, and while it thinks it is
        # handling a request it would not pause reading anyway.
        self.transport.unregisterProducer()
        self.transport.registerProducer(_SendBufferWatch(self), True)

    def send_blocked(self) -> None:
        # Called on every write while the buffer is over: only the first one counts.
        if self.blocked:
            return
        self.blocked = True
        self.queued_while_blocked = 0
        self.transport.pauseProducing()

    def send_unblocked(self) -> None:
        self.blocked = False
        if not self.reading_stopped:
            self.transport.resumeProducing()

    def write(self, data: bytes) -> None:
        if self.blocked and not self._may_queue(len(data)):
            return
        self.transport.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        if self.blocked and not self._may_queue(sum(map(len, data))):
            return
        self.transport.writeSequence(data)

    def _may_queue(self, size: int) -> bool:
        self.queued_while_blocked += size
        if self.queued_while_blocked <= int(settings.WS_SEND_BUFFER_MAX_BYTES):
            return True
        if not self.lost:
            WEBSOCKETS_CLOSED.labels(reason="too_slow").inc()
            self.transport.abortConnection()
        return False


class DoorFactory(_WrappingFactory):  # type: ignore[misc]
    """Wraps daphne's HTTP factory: counts connections per client address and in all,
    and refuses or makes room before building daphne's protocol."""

    protocol = DoorConnection

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self.by_client: dict[str, int] = {}
        # Connections still waiting for a complete request, oldest first (dicts keep
        # insertion order; a restarted deadline moves a connection to the end).
        self.waiting: dict[DoorConnection, None] = {}
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        reserve = int(settings.REQUEST_FD_RESERVE)
        self.capacity = 1 << 30 if soft == resource.RLIM_INFINITY else max(1, soft - reserve)

    @classmethod
    def for_server(cls, server: Any) -> DoorFactory:
        """What daphne's Server.run calls as `HTTPFactory(self)`."""
        return cls(http_protocol.HTTPFactory(server))

    @staticmethod
    def client_of(addr: Any) -> str | None:
        if int(settings.TRUSTED_PROXY_COUNT) > 0:
            return None  # every peer is a proxy: the proxy counts visitors
        return rate_key(pick_client_ip(getattr(addr, "host", None), [], trusted_proxies=0))

    def buildProtocol(self, addr: Any) -> DoorConnection | None:
        if len(self.protocols) >= self.capacity and not self._make_room():
            CONNECTIONS_CLOSED.labels(reason="full").inc()
            return None
        client = self.client_of(addr)
        if (
            client is not None
            and self.by_client.get(client, 0) >= settings.REQUEST_MAX_CONNECTIONS_PER_IP
        ):
            CONNECTIONS_CLOSED.labels(reason="per_ip").inc()
            return None
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return DoorConnection(self, wrapped, client)

    def _make_room(self) -> bool:
        for oldest in self.waiting:
            CONNECTIONS_CLOSED.labels(reason="evicted").inc()
            self.waiting.pop(oldest)
            oldest.transport.abortConnection()
            return True
        return False

    def registerProtocol(self, p: DoorConnection) -> None:
        super().registerProtocol(p)
        if p.client is not None:
            self.by_client[p.client] = self.by_client.get(p.client, 0) + 1

    def unregisterProtocol(self, p: DoorConnection) -> None:
        super().unregisterProtocol(p)
        if p.client is not None:
            left = self.by_client[p.client] - 1
            if left:
                self.by_client[p.client] = left
            else:
                del self.by_client[p.client]


# --- HTTP requests ----------------------------------------------------------------------


def _connection(channel: Any) -> DoorConnection | None:
    transport = getattr(channel, "transport", None)
    return transport if isinstance(transport, DoorConnection) else None


class DoorRequest(http_protocol.WebRequest):  # type: ignore[misc]
    """daphne's request: bounded body, no body for HEAD, 400 for an undecodable form."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._body_bytes = 0
        self._refused = False
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

    # Called by the channel once the headers are in, before any body byte (None: chunked).
    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        if length is not None and length > settings.REQUEST_BODY_MAX_BYTES:
            self._refuse()

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > settings.REQUEST_BODY_MAX_BYTES:
            self._refuse()
            return
        super().handleContentChunk(data)

    # Called once the whole body is in: a refused request is done, never handed on.
    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        connection = _connection(self.channel)
        if connection is not None:
            connection.request_in()
        if self._refused:
            self.channel.loseConnection()
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._refused = True
        # A client that asked "Expect: 100-continue" has not sent the body: it gets the
        # 413 instead of the invitation Twisted would send after this.
        self.requestHeaders.removeHeader(b"Expect")
        limit = settings.REQUEST_BODY_MAX_BYTES
        channel = self.channel
        channel.transport.write(
            _plain_answer(
                413,
                "Content Too Large",
                f"Request body too large: this site accepts at most {limit} bytes.",
            )
        )
        # A client that keeps sending is closed after a while; closing at once, with its
        # data unread, would reset the connection before it could read the 413.
        channel.callLater(LINGER_SECONDS, channel.transport.loseConnection)

    def process(self) -> Any:
        if undecodable_form(self.requestHeaders.getRawHeaders(b"content-type")):
            self.setResponseCode(400)
            body = b"Bad Request: a form body must be encoded in UTF-8.\n"
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.setHeader(b"content-length", str(len(body)).encode())
            self.setHeader(b"x-content-type-options", b"nosniff")
            http.Request.write(self, body)  # type: ignore[no-untyped-call]
            self.finish()
            return None
        return super().process()

    def handle_reply(self, message: dict[str, Any]) -> None:
        # daphne writes body chunks with http.Request.write(self, ...), past the
        # no-body switch Twisted makes on the first write for HEAD and 204/304.
        if (
            message.get("type") == "http.response.body"
            and message.get("body")
            and (self.method == b"HEAD" or self.code in http.NO_BODY_CODES)
        ):
            message = {**message, "body": b""}
        super().handle_reply(message)

    def finish(self) -> None:
        connection = _connection(self.channel)
        super().finish()
        if connection is not None:
            connection.answer_sent()


# --- websockets -------------------------------------------------------------------------


class DoorWebSocketProtocol(ws_protocol.WebSocketProtocol):  # type: ignore[misc]
    """daphne's websocket protocol: every frame and byte budgeted where frames arrive."""

    frames: FrameBudget | None = None
    octets: FrameBudget | None = None
    message_bytes = 0  # of the message being received so far
    flooded = False

    def connectionMade(self) -> None:
        super().connectionMade()
        if isinstance(self.transport, DoorConnection):
            self.transport.watch_send_buffer()

    # Called by autobahn with each frame's header parsed, before its payload is read.
    def onFrameBegin(self) -> None:
        length = int(self.current_frame.length)
        if 0 < self.maxFramePayloadSize < length:
            super().onFrameBegin()  # autobahn refuses it (1009) and drops the connection
            return
        opcode = self.current_frame.opcode
        if opcode < 8:  # a data frame: the first of a message, or a continuation (0)
            self.message_bytes = length + (self.message_bytes if opcode == 0 else 0)
            largest = int(settings.WS_MAX_MESSAGE_BYTES)
            if self.message_bytes > largest:
                self._max_message_size_exceeded(
                    self.message_bytes, largest, "message over WS_MAX_MESSAGE_BYTES"
                )
                return
        now = time.monotonic()
        if self.frames is None or self.octets is None:
            self.frames = FrameBudget(
                rate=float(settings.WS_CLIENT_FRAME_RATE),
                burst=int(settings.WS_CLIENT_FRAME_BURST),
                now=now,
            )
            self.octets = FrameBudget(
                rate=float(settings.WS_CLIENT_BYTE_RATE),
                burst=int(settings.WS_MAX_MESSAGE_BYTES),
                now=now,
            )
        if self.frames.take(now) and self.octets.take(now, cost=length):
            super().onFrameBegin()
            return
        self._flood()

    def processData(self) -> bool:
        if self.flooded:
            self.data = b""  # read before reading stopped: dropped unparsed
            return False
        return bool(super().processData())

    def _max_message_size_exceeded(self, msg_size: int, max_msg_size: int, reason: str) -> None:
        WEBSOCKETS_CLOSED.labels(reason="too_big").inc()
        super()._max_message_size_exceeded(msg_size, max_msg_size, reason)

    def _flood(self) -> None:
        self.flooded = True
        WEBSOCKETS_CLOSED.labels(reason="flood").inc()
        if isinstance(self.transport, DoorConnection):
            self.transport.stop_reading()
        else:
            self.transport.pauseProducing()
        self.sendClose(code=CLOSE_TOO_CHATTY, reason="too many frames")
        _reactor().callLater(LINGER_S, self._drop)

    def _drop(self) -> None:
        if self.transport is not None and self.transport.connected:
            self.dropConnection(abort=True)


class DoorWebSocketFactory(ws_protocol.WebSocketFactory):  # type: ignore[misc]
    """daphne's websocket factory, building DoorWebSocketProtocols with small limits."""

    protocol = DoorWebSocketProtocol

    def setProtocolOptions(self, **options: Any) -> None:
        # Only the frame limit: autobahn applies maxMessagePayloadSize to the messages
        # it sends as well, and the server's frames are larger than a viewer's (so the
        # incoming message total is counted in onFrameBegin instead).
        options.update(maxFramePayloadSize=int(settings.WS_MAX_MESSAGE_BYTES))
        super().setProtocolOptions(**options)


def install() -> None:
    """Point daphne at the classes above (see the docstring). Before the server runs."""
    daphne_server.HTTPFactory = DoorFactory.for_server
    daphne_server.WebSocketFactory = DoorWebSocketFactory
    http_protocol.WebRequest = DoorRequest
