"""The door's hooks into daphne, autobahn and Twisted are where it expects them.

door/daphne_hooks.py replaces names inside daphne and overrides methods of daphne's,
autobahn's and Twisted's classes. An upgrade of any of them may rename, move or stop
calling one of those, and the door would then be skipped without an error: large bodies,
floods and slow clients would pass again. These tests fail on such an upgrade, first on
the version itself, then on each name, signature and call the door relies on; the
behaviour is proven on a real daphne in tests/integration/test_door.py.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from autobahn.websocket import protocol as autobahn_protocol
from daphne import http_protocol
from daphne import server as daphne_server
from django.conf import settings
from twisted.internet import abstract
from twisted.protocols import policies
from twisted.web import http

from door import daphne_hooks
from stackkit.stack import ROOT


@pytest.mark.parametrize("distribution", sorted(daphne_hooks.WRITTEN_FOR))
def test_the_installed_version_is_the_one_the_door_was_written_for(distribution: str) -> None:
    installed = importlib.metadata.version(distribution)
    assert installed == daphne_hooks.WRITTEN_FOR[distribution], (
        f"{distribution} {installed} is installed; door/daphne_hooks.py was written against "
        f"{daphne_hooks.WRITTEN_FOR[distribution]}. Check every hook it names against the new "
        "version, then update WRITTEN_FOR and requirements.txt."
    )


def daphne_request() -> type:
    """daphne's own request class, whether or not install() has replaced the module's
    name for it (any test that imports the ASGI application installs the door)."""
    return next(
        cls for cls in http_protocol.WebRequest.__mro__ if cls.__module__ == http_protocol.__name__
    )


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


# Each method the door overrides or calls: the parameters it expects.
SIGNATURES: list[tuple[Callable[..., Any], list[str]]] = [
    (http.Request.__init__, ["self", "channel", "queued", "parsePOSTFormSubmission"]),
    (http.Request.gotLength, ["self", "length"]),
    (http.Request.handleContentChunk, ["self", "data"]),
    (http.Request.requestReceived, ["self", "command", "path", "version"]),
    (http.Request.write, ["self", "data"]),
    (daphne_request().process, ["self"]),
    (daphne_request().handle_reply, ["self", "message"]),
    (daphne_request().finish, ["self"]),
    (http_protocol.HTTPFactory.__init__, ["self", "server"]),
    (policies.ProtocolWrapper.__init__, ["self", "factory", "wrappedProtocol"]),
    (policies.ProtocolWrapper.makeConnection, ["self", "transport"]),
    (policies.ProtocolWrapper.dataReceived, ["self", "data"]),
    (policies.ProtocolWrapper.connectionLost, ["self", "reason"]),
    (policies.WrappingFactory.buildProtocol, ["self", "addr"]),
    (policies.WrappingFactory.registerProtocol, ["self", "p"]),
    (policies.WrappingFactory.unregisterProtocol, ["self", "p"]),
    (abstract.FileDescriptor.registerProducer, ["self", "producer", "streaming"]),
    (abstract.FileDescriptor.unregisterProducer, ["self"]),
    (autobahn_protocol.WebSocketProtocol.onFrameBegin, ["self"]),
    (autobahn_protocol.WebSocketProtocol.processData, ["self"]),
    (
        autobahn_protocol.WebSocketProtocol._max_message_size_exceeded,
        ["self", "msg_size", "max_msg_size", "reason"],
    ),
    (autobahn_protocol.FrameHeader.__init__, ["self", "opcode", "fin", "rsv", "length", "mask"]),
]


@pytest.mark.parametrize(
    ("function", "expected"), SIGNATURES, ids=[f.__qualname__ for f, _ in SIGNATURES]
)
def test_each_hooked_method_has_the_expected_signature(
    function: Callable[..., Any], expected: list[str]
) -> None:
    assert parameters(function) == expected


def source(function: Callable[..., Any]) -> str:
    return inspect.getsource(function)


def test_daphne_builds_its_factories_from_the_names_the_door_replaces() -> None:
    run = source(daphne_server.Server.run)
    assert "HTTPFactory(self)" in run
    assert "WebSocketFactory(self" in run
    assert "self.ws_factory.setProtocolOptions(" in run
    assert "ep.listen(self.http_factory)" in run
    assert "protocol.requestFactory = WebRequest" in source(http_protocol.HTTPFactory.buildProtocol)
    assert "self.protocol" in source(policies.WrappingFactory.buildProtocol)


def test_daphne_upgrades_a_wrapped_connection_in_place() -> None:
    # The counts and the deadline of a connection follow it into the websocket only if
    # daphne hands the wrapper the new protocol instead of replacing the wrapper.
    process = source(daphne_request().process)
    assert "isinstance(transport, ProtocolWrapper)" in process
    assert "transport.wrappedProtocol = protocol" in process
    assert "self.server.ws_factory.buildProtocol(" in process


def test_daphne_writes_body_chunks_past_twisteds_head_check() -> None:
    # What DoorRequest.handle_reply compensates for; if daphne stops doing this, the
    # override is harmless but should be removed.
    assert "http.Request.write(self," in source(daphne_request().handle_reply)


def test_autobahn_calls_the_frame_hooks_the_door_overrides() -> None:
    parse = source(autobahn_protocol.WebSocketProtocol.processData)
    assert "self.onFrameBegin()" in parse
    assert "self.current_frame = FrameHeader(" in parse
    consume = source(autobahn_protocol.WebSocketProtocol.consumeData)
    assert "self.processData()" in consume
    assert "maxFramePayloadSize" in autobahn_protocol.WebSocketServerProtocol.CONFIG_ATTRS
    assert "maxMessagePayloadSize" in autobahn_protocol.WebSocketServerProtocol.CONFIG_ATTRS
    # Why the door leaves maxMessagePayloadSize alone: autobahn checks the messages it
    # sends against it too, and the server's frames are larger than a viewer's.
    assert "maxMessagePayloadSize < payload_len" in source(
        autobahn_protocol.WebSocketProtocol.sendMessage
    )


def test_install_points_daphne_at_the_door() -> None:
    daphne_hooks.install()
    assert daphne_server.HTTPFactory == daphne_hooks.DoorFactory.for_server
    assert daphne_server.WebSocketFactory is daphne_hooks.DoorWebSocketFactory
    assert http_protocol.WebRequest is daphne_hooks.DoorRequest
    assert daphne_hooks.DoorWebSocketFactory.protocol is daphne_hooks.DoorWebSocketProtocol
    # The methods the door's classes override still exist in their parents.
    overridden = {
        daphne_hooks.DoorRequest: [
            "gotLength",
            "handleContentChunk",
            "requestReceived",
            "process",
            "handle_reply",
            "finish",
        ],
        daphne_hooks.DoorWebSocketProtocol: [
            "connectionMade",
            "onFrameBegin",
            "processData",
            "_max_message_size_exceeded",
            "sendClose",
            "dropConnection",
        ],
        daphne_hooks.DoorWebSocketFactory: ["setProtocolOptions"],
    }
    for cls, names in overridden.items():
        for name in names:
            assert callable(getattr(cls.__mro__[1], name, None)), f"{cls.__name__}.{name}"


@pytest.mark.parametrize(
    ("content_type", "refused"),
    [
        (b"application/x-www-form-urlencoded; charset=utf-16", True),
        (b"application/x-www-form-urlencoded; charset=latin-1", True),
        (b"application/x-www-form-urlencoded; charset=UTF8", True),  # as Django: not "utf-8"
        (b"application/x-www-form-urlencoded; charset=UTF-8", False),
        (b"application/x-www-form-urlencoded", False),
        (b"application/x-www-form-urlencoded; charset=no-such-codec", False),  # ignored
        (b"multipart/form-data; charset=utf-16; boundary=x", False),
        (b"application/json; charset=utf-16", False),
    ],
)
def test_undecodable_form_is_what_django_refuses(content_type: bytes, refused: bool) -> None:
    assert daphne_hooks.undecodable_form([content_type]) is refused


def test_no_content_type_is_not_a_form() -> None:
    assert daphne_hooks.undecodable_form(None) is False


def test_the_ingress_counts_what_a_pod_behind_it_cannot() -> None:
    # Behind the ingress a pod sees only the ingress's connections: per-visitor
    # connection and request limits, and body buffering, must be set there.
    ingress = yaml.safe_load((ROOT / "k8s" / "app" / "ingress.yaml").read_text())
    annotations = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert int(annotations[prefix + "limit-connections"]) > settings.WS_MAX_PER_IP
    assert int(annotations[prefix + "limit-rps"]) > 0
    assert annotations[prefix + "proxy-request-buffering"] == "on"
