"""Websocket clients on raw sockets: viewers for storms of thousands from one test
process, and hostile clients that send frames no polite library would.

A websocket library spends a few milliseconds of Python per handshake; in a storm of
thousands that makes the client, not the server, the bottleneck. Here a viewer's
handshake is one prepared request and a read, and server frames (never masked) are
parsed by hand. A Hostile client builds its frames with wsproto (a sans-IO websocket
library) and writes them as fast as the socket takes them, as many times as it likes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, RejectConnection, Request


@dataclass
class Viewer:
    sock: socket.socket
    rest: bytes  # what arrived after the handshake's response head
    buffer: bytearray = field(default_factory=bytearray)


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


async def open_websocket(port: int, source: str) -> Viewer:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    try:
        sock.setblocking(False)
        sock.bind((source, 0))
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws/infra/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://127.0.0.1:{port}\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        status, _, rest = head.partition(b"\r\n\r\n")
        first_line = status.split(b"\r\n", 1)[0].decode()
        if " 101 " not in first_line:
            raise ConnectionError(first_line)
        return Viewer(sock, rest, bytearray(rest))
    except BaseException:
        sock.close()
        raise


def retransmissions(viewer: Viewer) -> int:
    """Segments the client had to send again (Linux TCP_INFO's tcpi_total_retrans, at byte
    100): on loopback, a SYN or request is lost only when the server's listen queue is
    full, and then comes again 1 s later. Zero means no part of the handshake was dropped.
    """
    info = viewer.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 100)[0])


def parse_frames(data: bytearray) -> list[tuple[int, bytes]]:
    """Complete frames at the head of `data`, removed from it: (opcode, payload)."""
    frames, i = [], 0
    while i + 2 <= len(data):
        opcode, length, j = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if length == 126:
            if j + 2 > len(data):
                break
            length, j = int.from_bytes(data[j : j + 2], "big"), j + 2
        elif length == 127:
            if j + 8 > len(data):
                break
            length, j = int.from_bytes(data[j : j + 8], "big"), j + 8
        if j + length > len(data):
            break
        frames.append((opcode, bytes(data[j : j + length])))
        i = j + length
    del data[:i]
    return frames


def close_codes(viewer: Viewer) -> list[int]:
    """Close frames the server has sent on this socket so far; [-1] if it is gone."""
    while True:
        try:
            chunk = viewer.sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            return [-1]
        viewer.buffer += chunk
    return [
        int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        for opcode, payload in parse_frames(viewer.buffer)
        if opcode == 8
    ]


async def next_frame(viewer: Viewer) -> dict[str, Any]:
    """The next JSON text frame from the server; ConnectionError if it closes."""
    loop = asyncio.get_running_loop()
    while True:
        for opcode, payload in parse_frames(viewer.buffer):
            if opcode == 8:
                raise ConnectionError(f"closed {int.from_bytes(payload[:2], 'big')}")
            if opcode == 1:
                frame: dict[str, Any] = json.loads(payload)
                return frame
        chunk = await loop.sock_recv(viewer.sock, 1 << 16)
        if not chunk:
            raise ConnectionError("connection lost")
        viewer.buffer += chunk


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
            origin = (b"origin", f"http://127.0.0.1:{port}".encode())
            self.sock.sendall(
                self.ws.send(
                    Request(host=f"127.0.0.1:{port}", target="/ws/infra/", extra_headers=[origin])
                )
            )
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
