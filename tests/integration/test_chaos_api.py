"""POST /api/infra/chaos on the real stack: daphne, Redis, and the apiserver with real RBAC.

The app runs as the chaos ServiceAccount. Rate-limit tests set CHAOS_MIN_READY=3 so the
guard refuses every press: budgets get spent and checked without killing pods, and the
cluster is left as it was. Every test leaves chaos-demo at 3/3 Ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.chaos.stack import (
    chaos_session,
    event,
    events,
    flush_test_redis,
    pods,
    press,
    restore_rbac,
    scale,
    wait_for_room_in_windows,
    wait_healthy,
    wait_rbac,
)
from tests.conftest import Devstack

pytestmark = pytest.mark.integration

WebServer = Callable[..., str]
GUARD_ALWAYS_REFUSES = {"CHAOS_MIN_READY": "3"}


@pytest.fixture(autouse=True)
def healthy_cluster(devstack: Devstack) -> Iterator[None]:
    flush_test_redis(devstack)
    wait_healthy(devstack)
    yield
    wait_healthy(devstack)


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


def test_the_fourth_press_in_a_minute_is_rate_limited(
    devstack: Devstack, web_server: WebServer
) -> None:
    url = web_server(**GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    wait_for_room_in_windows(("127.0.0.1", 60), ("cluster", 60))
    codes = [press(session, url).status_code for _ in range(3)]
    assert codes == [409, 409, 409]
    limited = press(session, url)
    assert limited.status_code == 429
    body = limited.json()
    assert body == {"ok": False, "error": "rate_limited", "retry_after": body["retry_after"]}
    assert 1 <= body["retry_after"] <= 61
    assert limited.headers["Retry-After"] == str(body["retry_after"])


def test_retry_after_is_honest(devstack: Devstack, web_server: WebServer) -> None:
    # A short window so the test can wait it out. Its edges are jittered per visitor, so
    # press until limited rather than assuming all presses land in one window.
    url = web_server(CHAOS_RATE_PER_IP="2/10s", **GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    for _ in range(5):
        sent = time.monotonic()
        limited = press(session, url)
        if limited.status_code == 429:
            break
        assert limited.status_code == 409
    assert limited.status_code == 429
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 11
    if retry_after >= 3:
        time.sleep(max(0.0, sent + retry_after - 2 - time.monotonic()))
        assert press(session, url).status_code == 429, "limited until Retry-After"
    time.sleep(max(0.0, sent + retry_after + 0.2 - time.monotonic()))
    assert press(session, url).status_code == 409, "free again after Retry-After"


def test_forwarded_for_is_ignored_without_a_trusted_proxy(
    devstack: Devstack, web_server: WebServer
) -> None:
    url = web_server(TRUSTED_PROXY_COUNT="0", **GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    wait_for_room_in_windows(("127.0.0.1", 60), ("cluster", 60))
    codes = [
        press(session, url, **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(4)
    ]
    assert codes == [409, 409, 409, 429]


def test_a_spoofed_forwarded_for_gives_no_fresh_budget_behind_one_proxy(
    devstack: Devstack, web_server: WebServer
) -> None:
    url = web_server(TRUSTED_PROXY_COUNT="1", **GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    wait_for_room_in_windows(("203.0.113.7", 60), ("203.0.113.8", 60), ("cluster", 60))
    # Our proxy appends the address it saw (203.0.113.7); the visitor varies what they
    # put in front of it.
    codes = [
        press(session, url, **{"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.7"}).status_code
        for i in range(4)
    ]
    assert codes == [409, 409, 409, 429]
    assert press(session, url, **{"X-Forwarded-For": "203.0.113.8"}).status_code == 409


def test_the_global_budget_holds_across_many_visitors(
    devstack: Devstack, web_server: WebServer
) -> None:
    url = web_server(
        TRUSTED_PROXY_COUNT="1",
        CHAOS_RATE_PER_IP="100/m",
        CHAOS_RATE_GLOBAL="5/m",
        **GUARD_ALWAYS_REFUSES,
    )
    session = chaos_session(url)
    wait_for_room_in_windows(("cluster", 60))
    codes = [
        press(session, url, **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(9)
    ]
    assert codes == [409] * 5 + [429] * 4


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
        devstack.kubectl("-n", "chaos-demo", "delete", "rolebinding", "chaos-monkey")
        wait_rbac(devstack, allowed=False)
        response = press(chaos_session(url), url)
        assert response.status_code == 503, response.text
        assert response.json() == {"ok": False, "error": "cluster_unavailable"}
        latest = events(devstack)[0]
        assert (latest["outcome"], latest["reason"]) == ("failed", "forbidden")
    finally:
        restore_rbac(devstack)
    assert len(pods(devstack)) == 3


def test_csrf_is_required(devstack: Devstack, web_server: WebServer) -> None:
    import requests

    url = web_server()
    before = len(events(devstack))
    response = requests.post(f"{url}/api/infra/chaos", timeout=10)
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
    assert len(events(devstack)) == before


def test_the_switch_turns_the_button_off(devstack: Devstack, web_server: WebServer) -> None:
    url = web_server(CHAOS_ENABLED="false")
    response = press(chaos_session(url), url)
    assert (response.status_code, response.json()["error"]) == (403, "chaos_disabled")


def test_a_redis_outage_is_a_503(devstack: Devstack, web_server: WebServer) -> None:
    # Not stopping the shared Redis: the web process is pointed at a port nothing serves.
    from tests.conftest import free_port

    url = web_server(REDIS_URL=f"redis://127.0.0.1:{free_port()}/15")
    response = press(chaos_session(url), url)
    assert response.status_code == 503
    assert response.json()["error"] == "cluster_unavailable"
