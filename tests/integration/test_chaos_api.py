"""POST /api/infra/chaos on the real stack: daphne, Redis, and the apiserver with real RBAC.

The app runs as the test namespace's chaos ServiceAccount. The rate limits' scenarios are
proven where they are decided: tests/chaos/test_views.py (the view, django-ratelimit on
the LocMem cache) and tests/integration/test_chaos_budgets.py (on the real Redis). Here
what needs daphne and the apiserver in front: the socket address is the visitor whatever
X-Forwarded-For says, a kill is an eviction the disruption budget may refuse. Every test
leaves the namespace at 3/3 Ready.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stackkit.stack import Devstack, chaos_session, events, free_port
from tests.chaos.stack import (
    GUARD_ALWAYS_REFUSES,
    budget,
    delete_rolebinding,
    event,
    pods,
    press,
    restore_budget,
    restore_rbac,
    set_max_unavailable,
    wait_budget,
    wait_healthy,
)
from tests.integration.scrape import sample_sum

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("healthy_cluster")]

WebServer = Callable[..., str]
ATTEMPTS = "infra_chaos_attempts_total"


def test_a_press_evicts_exactly_one_pod(devstack: Devstack, web_server: WebServer) -> None:
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
    # An eviction, as anyone can read on the pod: Kubernetes' own record of how it died.
    (victim,) = [p for p in after if p["metadata"]["name"] == body["pod"]]
    conditions = {c["type"]: c for c in victim["status"].get("conditions") or []}
    assert conditions["DisruptionTarget"]["status"] == "True"
    assert conditions["DisruptionTarget"]["reason"] == "EvictionByEvictionAPI"
    # And the budget counted it: no other pod may go until the replacement is Ready.
    assert budget(devstack)["status"]["disruptionsAllowed"] == 0


def test_forwarded_for_is_ignored_without_a_trusted_proxy(
    devstack: Devstack, web_server: WebServer
) -> None:
    url = web_server(TRUSTED_PROXY_COUNT="0", CHAOS_BURST_PER_IP="3/10s", **GUARD_ALWAYS_REFUSES)
    session = chaos_session(url)
    codes = [
        press(session, url, **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(4)
    ]
    assert codes == [409, 409, 409, 429]


def test_the_disruption_budget_refusing_is_answered_and_recorded_as_such(
    devstack: Devstack, web_server: WebServer
) -> None:
    # A budget that allows no pod down: the app's own look passes (3/3 Ready, none
    # terminating), the apiserver refuses the eviction with 429, and nothing dies.
    url = web_server()
    before = {p["metadata"]["uid"] for p in pods(devstack)}
    try:
        set_max_unavailable(devstack, 0)
        wait_budget(devstack, healthy=3, allowed=0)
        counted = sample_sum(f"{url}/metrics", ATTEMPTS, outcome="budget_refused")
        response = press(chaos_session(url), url)
        assert response.status_code == 409, response.text
        assert response.json() == {"ok": False, "error": "disruption_budget"}
        # Counted in /metrics under its own outcome.
        assert sample_sum(f"{url}/metrics", ATTEMPTS, outcome="budget_refused") == counted + 1
        latest = events(devstack)[0]
        assert (latest["outcome"], latest["reason"]) == ("budget_refused", "disruption_budget")
        assert latest["pod_uid"] in before
        assert latest["deleted_at"] is None
        after = pods(devstack)
        assert {p["metadata"]["uid"] for p in after} == before
        assert not any(p["metadata"].get("deletionTimestamp") for p in after)
    finally:
        restore_budget(devstack)
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
