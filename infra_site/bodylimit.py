"""Request bodies over REQUEST_BODY_MAX_BYTES are refused by the HTTP layer, unread.

Beneath daphne, twisted.web's Request collects the whole body and, for
multipart/form-data, parses it into memory before Django is called, on any URL and before
CSRF; Django's DATA_UPLOAD_MAX_MEMORY_SIZE comes too late. One 40 MB upload grew a web
process by about 360 MB. The app needs a few KB (the chaos POST, the admin's forms), so:

- a declared Content-Length over the limit is answered 413 as soon as the headers are in;
- a chunked body is counted as it arrives and answered 413 once it passes the limit;
- either way the rest of the body is read and dropped (never stored) for up to
  LINGER_SECONDS, so a client still sending gets to read the answer, then the connection
  closes;
- bodies under the limit are never parsed as forms here (daphne never reads
  `request.args`; only Django parses forms).

How it is installed, and why this way: daphne builds each HTTP request from the class its
`http_protocol` module calls `WebRequest`; `install()` points that name at the subclass
below. A custom daphne Server or command-line class would do the same with more code and
a different web command in the Procfile, the Dockerfile and the manifests; this keeps
`daphne infra_site.asgi:application` as it is. daphne and Twisted are pinned in
requirements.txt, and tests/integration/test_hardening_http.py proves the hook on a real
daphne process, so an upgrade that moves it fails a test instead of silently letting
large bodies through.
"""

from __future__ import annotations

from typing import Any

from daphne import http_protocol
from django.conf import settings

# How long a refused request's remaining body is read and dropped before closing.
LINGER_SECONDS = 10.0


def _answer_413(limit: int) -> bytes:
    body = f"Request body too large: this site accepts at most {limit} bytes.\n".encode()
    head = (
        "HTTP/1.1 413 Content Too Large\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedWebRequest(http_protocol.WebRequest):  # type: ignore[misc]
    """daphne's request, refusing bodies over REQUEST_BODY_MAX_BYTES before buffering them."""

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

    # Called once the whole body is in: a refused request is done, never handed to Django.
    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            self.channel.loseConnection()
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._refused = True
        # A client that asked "Expect: 100-continue" has not sent the body: it gets the
        # 413 instead of the invitation Twisted would send after this.
        self.requestHeaders.removeHeader(b"Expect")
        channel = self.channel
        channel.transport.write(_answer_413(settings.REQUEST_BODY_MAX_BYTES))
        # A client that keeps sending is closed after a while; closing at once, with its
        # data unread, would reset the connection before it could read the 413.
        channel.callLater(LINGER_SECONDS, channel.transport.loseConnection)


def install() -> None:
    """Make daphne build every HTTP request as a BoundedWebRequest (see the docstring)."""
    http_protocol.WebRequest = BoundedWebRequest
