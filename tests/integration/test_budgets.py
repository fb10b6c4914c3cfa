"""Budgets on a real daphne and the real Redis: a socket's frame budget and clients
behind a too-short forwarding chain (the chaos button's budgets:
tests/integration/test_chaos_budgets.py).

Chaos presses run with GUARD_ALWAYS_REFUSES: no pod matches, so the look refuses every
one (409) after the budgets counted it, and no pod dies.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from wsproto.events import TextMessage

from door.wscap import CLOSE_TOO_CHATTY, CLOSE_TOO_MANY_FROM_CLIENT
from live.publish import publish
from stackkit.stack import Devstack, chaos_session
from stackkit.ws import Hostile
from tests.chaos.stack import GUARD_ALWAYS_REFUSES, flush_test_redis, press
from tests.integration.scrape import sample_sum

pytestmark = pytest.mark.integration

WebServer = Callable[..., str]


@pytest.fixture(autouse=True)
def fresh_budgets(devstack: Devstack) -> None:
    flush_test_redis(devstack)


# --- a frame budget per socket ----------------------------------------------------------


def open_viewer(base_url: str) -> ClientConnection:
    return connect(
        base_url.replace("http://", "ws://") + "/ws/infra/", origin=base_url, open_timeout=10
    )


@pytest.mark.usefixtures("layer_settings")
def test_a_flooding_socket_is_closed_while_another_viewer_keeps_up(
    web_server: WebServer,
) -> None:
    url = web_server()
    calm = open_viewer(url)
    publish("metrics", {"ts": -1})
    while json.loads(calm.recv(timeout=10))["data"].get("ts") != -1:
        pass
    flooder = Hostile(int(url.rsplit(":", 1)[1]))
    hi = flooder.frame(TextMessage(data="hi"))
    try:
        result: dict[str, float | None] = {}
        thread = threading.Thread(target=lambda: result.update(dropped=flooder.flood(hi, 10)))
        thread.start()
        delays: list[float] = []
        # Frames every 50 ms while the flood runs, and a little after. (The calm viewer's
        # first frame came before the flood, so no delay counted is the first delivery's.)
        for n in range(40):
            sent = time.time()
            publish("metrics", {"ts": n, "sent": sent})
            while True:
                frame = json.loads(calm.recv(timeout=5))
                if frame["type"] == "metrics" and frame["data"].get("ts") == n:
                    delays.append(time.time() - frame["data"]["sent"])
                    break
            time.sleep(0.05)
        thread.join(timeout=15)
    finally:
        flooder.close()
        calm.close()
    dropped = result.get("dropped")
    print(
        f"\nflood: {flooder.sent} bytes sent; close code {flooder.close_code}; connection "
        f"dropped after {dropped} s; calm viewer's delay max {max(delays) * 1000:.1f} ms, "
        f"median {sorted(delays)[len(delays) // 2] * 1000:.1f} ms"
    )
    assert flooder.close_code == CLOSE_TOO_CHATTY
    assert dropped is not None, "the server never dropped a client that ignored its close"
    assert dropped < 2.0
    assert max(delays) < 0.100
    assert sample_sum(f"{url}/metrics", "infra_websockets_closed_total", reason="flood") == 1


def test_a_polite_flood_gets_the_close_code(web_server: WebServer) -> None:
    url = web_server(WS_CLIENT_FRAME_BURST="5")
    viewer = open_viewer(url)
    start = time.monotonic()

    def chatter() -> None:
        for _ in range(100_000):
            viewer.send("hello")
        viewer.recv(timeout=5)

    with pytest.raises(ConnectionClosed) as closed:
        chatter()
    assert time.monotonic() - start < 2.0
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CLOSE_TOO_CHATTY


# --- no trusted fallback ----------------------------------------------------------------


def web_logs(tmp_path: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in tmp_path.glob("web-*.log"))


def test_a_short_forwarding_chain_is_an_unknown_client(
    web_server: WebServer, tmp_path: Path
) -> None:
    # Two proxies are declared, but only one entry arrives: the outer one did not append.
    url = web_server(TRUSTED_PROXY_COUNT="2", WS_MAX_PER_IP="2", **GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    short = {"X-Forwarded-For": "203.0.113.7"}
    refused = press(session, url, **short)
    assert refused.status_code == 400
    assert refused.json() == {"ok": False, "error": "client_unknown"}
    # /metrics: 404 as for any outsider, though the socket peer is loopback.
    assert session.get(f"{url}/metrics", headers=short, timeout=5).status_code == 404
    # No header at all did not come through the proxies (they always add one): a scraper
    # on the pod network, checked by its own address (loopback here).
    assert session.get(f"{url}/metrics", timeout=5).status_code == 200
    # A full chain from an allowed network is served (the rule is about the chain).
    full = {"X-Forwarded-For": "10.1.2.3, 10.0.0.9"}
    assert session.get(f"{url}/metrics", headers=full, timeout=5).status_code == 200
    assert press(session, url, **{"X-Forwarded-For": "198.51.100.1, 10.0.0.9"}).status_code == 409
    # Websockets of unknown clients share one cap, whatever their single entry says.
    ws_url = url.replace("http://", "ws://") + "/ws/infra/"
    sockets = [
        connect(
            ws_url,
            origin=url,
            additional_headers={"X-Forwarded-For": f"203.0.113.{n}"},
            open_timeout=10,
        )
        for n in range(3)
    ]
    try:
        with pytest.raises(ConnectionClosed) as closed:
            sockets[2].recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_TOO_MANY_FROM_CLIENT
    finally:
        for ws in sockets:
            ws.close()
    # Said once in the log, however many unknown clients came.
    warnings = web_logs(tmp_path).count("TRUSTED_PROXY_COUNT is 2")
    assert warnings == 1
