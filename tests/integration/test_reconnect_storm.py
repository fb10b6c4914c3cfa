"""A reconnect storm on a real daphne, started exactly as the Procfile starts it.

When a web process restarts, every page it served reconnects within a second or two (the
page's first retry is spread over 2.5 s) to the processes still up. A listen backlog
too short for that (Twisted's default, 50, which daphne's -b/-p use) makes the kernel
drop and reset handshakes by the hundred. Here thousands of viewers, each from an
address of its own in 127.0.0.0/8 as real visitors are (so the per-address cap stays at
its default), all open their websocket at the same instant, and every one must get in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from stackkit.stack import Devstack
from stackkit.ws import (
    Viewer,
    close_codes,
    open_websocket,
    raise_fd_limit,
    retransmissions,
    source_address,
)
from tests.integration.scrape import sample_sum

pytestmark = pytest.mark.integration

VIEWERS = 3000
# Generous: under a working backlog the whole storm takes a second or two; a handshake
# whose SYN the kernel dropped comes back only after 1, 3, 7 … s of retransmission.
HANDSHAKE_TIMEOUT_S = 30.0


async def storm(port: int, n: int) -> tuple[list[Viewer], list[str], float]:
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            asyncio.wait_for(open_websocket(port, source_address(77, i)), HANDSHAKE_TIMEOUT_S)
            for i in range(n)
        ),
        return_exceptions=True,
    )
    elapsed = time.monotonic() - started
    viewers = [r for r in results if isinstance(r, Viewer)]
    failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return viewers, failures, elapsed


def test_thousands_of_viewers_reconnecting_at_once_all_get_in(
    devstack: Devstack, web_server: Callable[..., str]
) -> None:
    raise_fd_limit(2 * VIEWERS + 1024)
    url = web_server()  # the Procfile's daphne command, default caps
    port = int(url.rsplit(":", 1)[1])

    viewers, failures, elapsed = asyncio.run(storm(port, VIEWERS))
    try:
        print(f"{len(viewers)}/{VIEWERS} handshakes in {elapsed:.2f} s")
        assert failures == [], f"{len(failures)} of {VIEWERS} failed, e.g. {failures[:3]}"
        # With Twisted's default backlog of 50, hundreds of handshakes lose their SYN or
        # request and wait a second for the retransmission (and some are reset).
        retried = [n for viewer in viewers if (n := retransmissions(viewer))]
        assert retried == [], f"{len(retried)} handshakes had segments dropped and sent again"
        # Each one is a viewer the app took in and keeps, not one it let in and closed.
        deadline = time.monotonic() + 30
        while (open_now := sample_sum(f"{url}/metrics", "infra_open_websockets")) < VIEWERS:
            assert time.monotonic() < deadline, f"{open_now:.0f} of {VIEWERS} viewers counted"
            time.sleep(0.2)
        closed = [codes for viewer in viewers if (codes := close_codes(viewer))]
        assert closed == [], f"{len(closed)} viewers were closed, e.g. {closed[:3]}"
    finally:
        for viewer in viewers:
            viewer.sock.close()
