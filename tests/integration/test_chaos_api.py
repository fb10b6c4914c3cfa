"""POST /api/infra/chaos on the real stack: daphne, Redis, and the apiserver with real RBAC.

The app runs as the test namespace's chaos ServiceAccount. The budgets' scenarios are
proven once each, where they are decided: tests/chaos/test_views.py (the view, with the
budgets' Lua script in fakeredis) and tests/integration/test_budgets.py (that script on the
real Redis). Here only what needs daphne in front: the socket address it passes is the
visitor, whatever X-Forwarded-For says. Every test leaves the namespace at 3/3 Ready.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chaos.stack import (
    chaos_session,
    delete_rolebinding,
    event,
    events,
    pods,
    press,
    restore_rbac,
    scale,
    wait_healthy,
)
from tests.conftest import Devstack, free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("healthy_cluster")]

WebServer = Callable[..., str]
GUARD_ALWAYS_REFUSES = {"CHAOS_MIN_READY": "3"}


def test_a_press_deletes_exactly_one_pod(devstack: Devstack, web_server: WebServer) -> None:
    url = web_server()
    before = {p["metadata"]["uid"]: p["metadata"]["name"] for p in pods(devstack)}
    response = press(chaos_session(url), url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["pod"] in before.values()
    after = pods(devstack)
    terminating = [p["metadata"]["name"] for p in after if p["metadata"].get("deletionTimestamp")]
    assert terminating == [body["pod"]]
    row = event(devstack, body["event_id"])
    assert (row["outcome"], row["pod_name"]) == ("deleted", body["pod"])
    assert row["pod_uid"] in before
    assert row["deleted_at"]
    assert "127.0.0.1" not in str(row)


def test_forwarded_for_is_ignored_without_a_trusted_proxy(
    devstack: Devstack, web_server: WebServer
) -> None:
    url = web_server(TRUSTED_PROXY_COUNT="0", **GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    codes = [
        press(session, url, **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(4)
    ]
    assert codes == [409, 409, 409, 429]


def test_the_guard_refuses_when_too_few_are_ready(
    devstack: Devstack, web_server: WebServer
) -> None:
    url = web_server()
    try:
        scale(devstack, 1)
        wait_healthy(devstack, replicas=1)
        response = press(chaos_session(url), url)
        assert response.status_code == 409
        assert response.json()["error"] == "not_enough_healthy"
        assert len(pods(devstack)) == 1
        assert events(devstack)[0]["outcome"] == "refused"
    finally:
        scale(devstack, 3)
        wait_healthy(devstack)


def test_without_the_rolebinding_the_answer_is_503_and_a_failed_event(
    devstack: Devstack, web_server: WebServer
) -> None:
    url = web_server()
    try:
        delete_rolebinding(devstack)
        response = press(chaos_session(url), url)
        assert response.status_code == 503, response.text
        assert response.json() == {"ok": False, "error": "cluster_unavailable"}
        latest = events(devstack)[0]
        assert (latest["outcome"], latest["reason"]) == ("failed", "forbidden")
    finally:
        restore_rbac(devstack)
    assert len(pods(devstack)) == 3


def test_a_redis_outage_is_a_503(devstack: Devstack, web_server: WebServer) -> None:
    # Not stopping the shared Redis: the web process is pointed at a port nothing serves.
    url = web_server(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = press(chaos_session(url), url)
    assert response.status_code == 503
    assert response.json()["error"] == "cluster_unavailable"
