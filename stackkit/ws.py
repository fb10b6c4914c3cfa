"""Websocket clients on raw sockets, all speaking through wsproto (a sans-IO websocket
library): viewers for storms of thousands from one process, and hostile clients that
send frames no polite library would.

A full asyncio websocket library (a task, a queue and keepalive timers per connection)
costs so much Python per viewer that in a storm of thousands the client, not the
server, becomes the bottleneck. A viewer here is a socket and a wsproto connection:
wsproto writes the handshake, checks the server's answer and parses every frame, and
the viewer reads only when asked. A Hostile client builds its frames with the same
library and writes them as fast as the socket takes them, as many times as it likes.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

# How a viewer's close codes say that the server dropped the socket without a close frame.
GONE = -1


def handshake(port: int, origin: str | None = None) -> Request:
    """The page's websocket request to a server on loopback `port`, from its own origin
    unless told otherwise."""
    origin = origin or f"http://127.0.0.1:{port}"
    return Request(
        host=f"127.0.0.1:{port}", target="/ws/infra/", extra_headers=[(b"origin", origin.encode())]
    )


@dataclass
class Viewer:
    """One viewer: a non-blocking socket and its wsproto connection. What the server
    sent waits in the kernel until a read is asked for; then `messages` holds the text
    messages not yet taken and `closed` the close codes received."""

    sock: socket.socket
    ws: WSConnection = field(default_factory=lambda: WSConnection(ConnectionType.CLIENT))
    accepted: bool = False
    messages: deque[str] = field(default_factory=deque)
    closed: list[int] = field(default_factory=list)
    # Pongs owed to the server's keepalive pings, sent on the next await that writes.
    pongs: bytearray = field(default_factory=bytearray)
    _parts: list[str] = field(default_factory=list)

    def receive(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    self.messages.append("".join(self._parts))
                    self._parts.clear()
            elif isinstance(event, CloseConnection):
                self.closed.append(event.code)
            elif isinstance(event, Ping):
                self.pongs += self.ws.send(event.response())
            elif isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                raise ConnectionError(f"handshake refused: {event.status_code}")

    def drain(self) -> bool:
        """Takes in what the kernel holds for this socket, without waiting; False if the
        server has gone (the socket is at its end)."""
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            self.receive(chunk)


def source_address(block: int, i: int) -> str:
    """Loopback address number i of a block: 127.<block>.0.1, 127.<block>.0.2, … Linux
    routes all of 127.0.0.0/8 to the loopback interface, so a client can bind any of
    them and be a visitor of its own to the app's per-address caps."""
    return f"127.{block}.{i // 250}.{i % 250 + 1}"


def raise_fd_limit(needed: int) -> None:
    """Clients and a server this process starts (which inherits the limit) each need a
    descriptor per viewer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(f"{needed} file descriptors needed, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def open_websocket(
    port: int, source: str | None = None, *, origin: str | None = None
) -> Viewer:
    """A viewer from loopback address `source` (any, if None) whose handshake the server
    accepted; ConnectionError if it refused or closed."""
    loop = asyncio.get_running_loop()
    viewer = Viewer(socket.socket())
    try:
        viewer.sock.setblocking(False)
        if source is not None:
            viewer.sock.bind((source, 0))
        await loop.sock_connect(viewer.sock, ("127.0.0.1", port))
        await loop.sock_sendall(viewer.sock, viewer.ws.send(handshake(port, origin)))
        while not viewer.accepted:
            chunk = await loop.sock_recv(viewer.sock, 65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            viewer.receive(chunk)
        return viewer
    except BaseException:
        viewer.sock.close()
        raise


def retransmissions(viewer: Viewer) -> int:
    """Segments the client had to send again (Linux TCP_INFO's tcpi_total_retrans, at byte
    100): on loopback, a SYN or request is lost only when the server's listen queue is
    full, and then comes again 1 s later. Zero means no part of the handshake was dropped.
    """
    info = viewer.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 100)[0])


def close_codes(viewer: Viewer) -> list[int]:
    """Close codes the server has sent on this socket so far; [GONE] if it is gone."""
    if not viewer.drain():
        return [GONE]
    return list(viewer.closed)


def texts(viewer: Viewer) -> list[str]:
    """Every text message the server has sent so far, once it is in the kernel's buffer;
    closes the socket."""
    viewer.drain()
    viewer.sock.close()
    taken = list(viewer.messages)
    viewer.messages.clear()
    return taken


async def next_frame(viewer: Viewer) -> dict[str, Any]:
    """The next JSON text frame from the server; ConnectionError if it closes."""
    loop = asyncio.get_running_loop()
    while not viewer.messages:
        if viewer.closed:
            raise ConnectionError(f"closed {viewer.closed[0]}")
        if viewer.pongs:
            await loop.sock_sendall(viewer.sock, bytes(viewer.pongs))
            viewer.pongs.clear()
        chunk = await loop.sock_recv(viewer.sock, 1 << 16)
        if not chunk:
            raise ConnectionError("connection lost")
        viewer.receive(chunk)
    frame: dict[str, Any] = json.loads(viewer.messages.popleft())
    return frame


class Hostile:
    """One websocket client on a blocking socket from `source`: `frame(event)` gives the
    bytes of a wsproto event (a Ping, a Pong, a TextMessage that is not finished...), and
    `flood` writes such bytes until the server lets go."""

    def __init__(
        self,
        port: int,
        source: str = "127.0.0.1",
        timeout: float = 10,
        receive_buffer: int | None = None,
    ) -> None:
        self.sock = socket.socket()
        self.sock.settimeout(timeout)
        if receive_buffer is not None:  # before connecting, so the window is small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.close_code: int | None = None
        self.sent = 0
        try:
            self.sock.bind((source, 0))
            self.sock.connect(("127.0.0.1", port))
            self.ws = WSConnection(ConnectionType.CLIENT)
            self.sock.sendall(self.ws.send(handshake(port)))
            while True:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the handshake")
                self.ws.receive_data(data)
                events = list(self.ws.events())
                if any(isinstance(e, RejectConnection) for e in events):
                    raise ConnectionError("handshake refused")
                if any(isinstance(e, AcceptConnection) for e in events):
                    break
        except BaseException:
            self.sock.close()
            raise

    def frame(self, event: Event) -> bytes:
        return self.ws.send(event)

    def _read(self, data: bytes) -> None:
        if self.close_code is not None:
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, CloseConnection):
                self.close_code = event.code
                return

    def flood(self, frames: bytes, seconds: float, *, read: bool = True) -> float | None:
        """Writes `frames` over and over for up to `seconds`, reading what the server
        sends unless `read` is False; returns when the server closed or reset the
        connection (seconds from the start), or None if it never did."""
        self.sock.setblocking(False)
        batch = memoryview(frames * max(1, 65536 // len(frames)))
        at = 0  # a send may stop inside a frame: the next one goes on from there
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            try:
                sent = self.sock.send(batch[at:])
                self.sent += sent
                at = (at + sent) % len(batch)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                return time.monotonic() - start
            if read and not self._receive():
                return time.monotonic() - start
        return None

    def wait_closed(self, seconds: float) -> float | None:
        """Reads until the server closes the connection: seconds waited, or None."""
        self.sock.setblocking(True)
        start = time.monotonic()
        while (left := seconds - (time.monotonic() - start)) > 0:
            self.sock.settimeout(left)
            if not self._receive():
                return time.monotonic() - start
        return None

    def _receive(self) -> bool:
        """Reads what the server has sent; False once it closed or reset the connection.
        Nothing to read yet (a non-blocking socket, or a timeout) is not a close."""
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, TimeoutError):
            return True
        except OSError:
            return False
        if not data:
            return False
        self._read(data)
        return True

    def close(self) -> None:
        self.sock.close()


def continuation_flood(hostile: Hostile) -> bytes:
    """Starts a text message that never ends (sent at once) and returns an empty
    continuation frame, for `Hostile.flood` to write over and over."""
    hostile.sock.sendall(hostile.frame(TextMessage(data="a", message_finished=False)))
    return hostile.frame(TextMessage(data="", message_finished=False))
