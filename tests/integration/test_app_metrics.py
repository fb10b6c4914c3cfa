"""The app's own metrics reach Prometheus: the devstack scrapes a real web process and a
real worker, and PromQL answers with what they did."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from door.wscap import CLOSE_TOO_MANY_FROM_CLIENT, CLOSE_TRY_AGAIN_LATER
from stackkit.stack import Devstack, free_port, manage, wait_http
from tests.conftest import StartProcess
from tests.integration.scrape import prometheus_target, wait_promql_value

pytestmark = pytest.mark.integration


def test_prometheus_scrapes_the_web_process_and_sees_its_viewers(
    devstack: Devstack, web_server: Callable[..., str]
) -> None:
    url = web_server(WS_MAX_PER_IP="3")
    port = int(url.rsplit(":", 1)[1])
    ws_url = f"ws://127.0.0.1:{port}/ws/infra/"
    with prometheus_target(port) as run:
        selector = f'job="app-tests", run="{run}"'
        wait_promql_value(devstack, f"up{{{selector}}}", 1)
        viewers = [connect(ws_url, origin=url, open_timeout=10) for _ in range(3)]
        try:
            # One too many from this address: daphne delivers the cap's close code.
            extra = connect(ws_url, origin=url, open_timeout=10)
            with pytest.raises(ConnectionClosed) as closed:
                extra.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == CLOSE_TOO_MANY_FROM_CLIENT
            # The consumer's gauge and the cap's counter, as Prometheus stored them.
            wait_promql_value(devstack, f"infra_open_websockets{{{selector}}}", 3)
            wait_promql_value(
                devstack, f'infra_websockets_refused_total{{reason="per_ip", {selector}}}', 1
            )
        finally:
            for viewer in viewers:
                viewer.close()
        wait_promql_value(devstack, f"infra_open_websockets{{{selector}}}", 0)


def test_a_full_web_process_closes_new_viewers_with_try_again_later(
    web_server: Callable[..., str],
) -> None:
    url = web_server(WS_MAX_PER_PROCESS="1")
    ws_url = url.replace("http://", "ws://") + "/ws/infra/"
    with connect(ws_url, origin=url, open_timeout=10) as first:
        extra = connect(ws_url, origin=url, open_timeout=10)
        with pytest.raises(ConnectionClosed) as closed:
            extra.recv(timeout=10)
        # The code the cap chose, not the 1011 daphne sends for a code it refuses.
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_TRY_AGAIN_LATER
        first.ping().wait(timeout=5)


def test_prometheus_scrapes_a_worker_on_its_metrics_port(
    devstack: Devstack, start_process: StartProcess
) -> None:
    port = free_port()
    start_process(
        manage("poll_metrics"),
        devstack.app_env(METRICS_PORT=str(port), POLL_INTERVAL="1"),
        name="poller",
    )
    wait_http(f"http://127.0.0.1:{port}/metrics")
    with prometheus_target(port) as run:
        selector = f'{{job="app-tests", run="{run}"}}'
        # The only poller on the test Redis leads, and Prometheus sees its rounds.
        wait_promql_value(devstack, f'infra_worker_leading{{worker="poller", run="{run}"}}', 1)
        wait_promql_value(devstack, f"clamp_max(infra_poll_duration_seconds_count{selector}, 1)", 1)
