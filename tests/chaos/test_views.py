"""POST /api/infra/chaos against a stubbed Kubernetes client (docs/contract.md's HTTP contract)."""

from __future__ import annotations

import json
from typing import Any

import django_ratelimit.core
import fakeredis
import pytest
import redis
import urllib3
from django.test import Client, override_settings
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from chaos import services
from chaos.models import ChaosEvent
from chaos.services import KILL_LOCK_KEY, client_hash
from stackkit.stack import free_port
from tests.chaos.fakes import FakeApi, pod_dict, three_healthy

URL = "/api/infra/chaos"
pytestmark = pytest.mark.django_db


class Clock:
    """The budgets' clock, frozen, so a test's presses land at the times it says."""

    def __init__(self) -> None:
        self.now = 1_000_000.25

    def time(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    # django-ratelimit's windows follow its clock; the counters live in the LocMem cache
    # here (the real Redis one: tests/integration).
    frozen = Clock()
    monkeypatch.setattr(django_ratelimit.core, "time", frozen)
    return frozen


# The look always refuses (no pod matches), so budgets are spent and no pod dies.
NOTHING_TO_KILL = {"CHAOS_SELECTOR": "app=nothing-here"}
# Bursts allowed, so a test of the long window is not cut short by the short one.
NO_BURST_LIMIT = {"CHAOS_BURST_PER_IP": "1000/10s"}


def post(client: Client | None = None, **extra: Any) -> Any:
    return (client or Client()).post(URL, REMOTE_ADDR=extra.pop("ip", "203.0.113.7"), **extra)


def attempts(outcome: str) -> float:
    return REGISTRY.get_sample_value("infra_chaos_attempts_total", {"outcome": outcome}) or 0.0


def test_a_press_deletes_exactly_one_pod_and_records_it(cluster: FakeApi) -> None:
    before = attempts("deleted")
    response = post()
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert len(cluster.deleted) == 1
    namespace, name, uid = cluster.deleted[0]
    assert (namespace, body["pod"]) == ("chaos-demo", name)
    event = ChaosEvent.objects.get(pk=body["event_id"])
    assert (event.outcome, event.pod_name, event.pod_uid) == ("deleted", name, uid)
    assert event.replicaset_uid == "rs-1"
    assert event.deleted_at is not None
    assert event.recovery_s is None
    assert attempts("deleted") == before + 1


def test_the_raw_ip_is_never_stored(cluster: FakeApi) -> None:
    post(ip="203.0.113.7")
    event = ChaosEvent.objects.get()
    assert event.client_hash == client_hash("203.0.113.7")
    assert len(event.client_hash) == 64
    stored = json.dumps(list(ChaosEvent.objects.values()), default=str)
    assert "203.0.113.7" not in stored


def test_the_disruption_budget_refusing_is_its_own_answer(cluster: FakeApi) -> None:
    # One pod not Ready: the app's look passes, the apiserver's budget says no.
    cluster.pods[0] = pod_dict("chaos-demo-0", ready=False)
    before = attempts("budget_refused")
    response = post()
    assert response.status_code == 409
    assert response.json() == {"ok": False, "error": "disruption_budget"}
    assert cluster.deleted == []
    event = ChaosEvent.objects.get()
    assert (event.outcome, event.reason) == ("budget_refused", "disruption_budget")
    assert event.pod_name in {"chaos-demo-1", "chaos-demo-2"}
    assert event.deleted_at is None
    assert attempts("budget_refused") == before + 1


def test_a_429_that_is_not_the_budget_is_a_503(cluster: FakeApi) -> None:
    # The apiserver's own flow control also answers 429, naming no budget.
    cluster.delete_error = ApiException(status=429, reason="Too Many Requests", body="{}")
    response = post()
    assert response.status_code == 503
    assert (ChaosEvent.objects.get().outcome, ChaosEvent.objects.get().reason) == (
        "failed",
        "throttled",
    )


def test_refuses_while_a_pod_is_terminating(cluster: FakeApi) -> None:
    cluster.pods.append(pod_dict("chaos-demo-old", deleting=True))
    response = post()
    assert (response.status_code, response.json()["error"]) == (409, "not_enough_healthy")
    assert ChaosEvent.objects.get().outcome == "refused"


@pytest.mark.parametrize("status", [404, 409])
def test_a_victim_replaced_under_us_is_a_refusal(cluster: FakeApi, status: int) -> None:
    cluster.delete_error = ApiException(status=status)
    response = post()
    assert response.status_code == 409
    event = ChaosEvent.objects.get()
    assert (event.outcome, event.reason) == ("refused", "victim_changed")
    assert event.pod_name  # staff can see which pod it was about


@pytest.mark.parametrize(
    ("where", "error", "reason"),
    [
        ("list", ApiException(status=403, reason="Forbidden"), "forbidden"),
        ("delete", ApiException(status=403, reason="Forbidden"), "forbidden"),
        ("delete", ApiException(status=400, reason="Bad Request"), "api_error"),
        ("list", ApiException(status=404), "not_found"),
        ("list", ApiException(status=500), "server_error"),
        ("delete", ApiException(status=503), "server_error"),
        ("list", urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"), "timeout"),
        ("delete", urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"), "timeout"),
        (
            "list",
            urllib3.exceptions.MaxRetryError(
                None, "/", urllib3.exceptions.NewConnectionError(None, "refused")
            ),
            "unreachable",
        ),
    ],
)
def test_kubernetes_failures_answer_503_and_record_a_failed_event(
    cluster: FakeApi, where: str, error: BaseException, reason: str
) -> None:
    setattr(cluster, f"{where}_error", error)
    before = attempts("failed")
    response = post()
    assert response.status_code == 503
    assert response.json() == {"ok": False, "error": "cluster_unavailable"}
    event = ChaosEvent.objects.get()
    assert (event.outcome, event.reason) == ("failed", reason)
    assert attempts("failed") == before + 1


def test_no_kubernetes_configuration_is_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    from chaos import kube

    def broken() -> Any:
        raise kube.KubeError("bad_config")

    monkeypatch.setattr(kube, "core_api", broken)
    response = post()
    assert response.status_code == 503
    assert ChaosEvent.objects.get().reason == "bad_config"


@override_settings(CHAOS_ENABLED=False)
def test_the_switch_turns_the_button_off(cluster: FakeApi) -> None:
    response = post()
    assert response.status_code == 403
    assert response.json() == {"ok": False, "error": "chaos_disabled"}
    assert cluster.deleted == []
    assert not ChaosEvent.objects.exists()


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_are_not_allowed(cluster: FakeApi, method: str) -> None:
    assert getattr(Client(), method)(URL).status_code == 405
    assert cluster.deleted == []


def test_csrf_is_required(cluster: FakeApi) -> None:
    client = Client(enforce_csrf_checks=True)
    response = post(client)
    assert response.status_code == 403
    assert response.json() == {"ok": False, "error": "csrf_failed"}
    assert cluster.deleted == []
    # With the cookie and the matching header the same client gets through.
    token = "a" * 32
    client.cookies["csrftoken"] = token
    assert post(client, HTTP_X_CSRFTOKEN=token).status_code == 200


def test_csrf_failures_outside_the_api_keep_djangos_page() -> None:
    response = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "x"})
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")


# --- rate limits -----------------------------------------------------------------------


@override_settings(**NOTHING_TO_KILL, **NO_BURST_LIMIT)
def test_the_fourth_press_in_a_window_is_rate_limited(cluster: FakeApi) -> None:
    codes = [post().status_code for _ in range(4)]
    assert codes == [409, 409, 409, 429]
    response = post()
    body = response.json()
    assert body["ok"] is False
    assert body["error"] == "rate_limited"
    assert body["scope"] == "visitor"
    assert 1 <= body["retry_after"] <= 60
    assert response["Retry-After"] == str(body["retry_after"])
    # Rate-limited presses do not reach the cluster or the history.
    assert ChaosEvent.objects.count() == 3
    assert post(ip="198.51.100.1").status_code == 409  # another visitor is unaffected


@override_settings(**NOTHING_TO_KILL, CHAOS_RATE_PER_IP="3/m", CHAOS_BURST_PER_IP="2/10s")
@pytest.mark.parametrize("start", [1_000_000.0, 1_000_000.25, 1_000_000.999, 1_000_041.5])
def test_retry_after_is_when_the_window_ends(cluster: FakeApi, clock: Clock, start: float) -> None:
    clock.now = start
    codes = []
    while len(codes) < 3:
        response = post()
        codes.append(response.status_code)
        if response.status_code == 429:
            # The short window: wait it out as told, then go on.
            codes.pop()
            clock.now += int(response["Retry-After"])
    first_refusal = post()
    assert first_refusal.status_code == 429
    retry_after = int(first_refusal["Retry-After"])
    clock.now += retry_after - 1
    assert post().status_code == 429, "still inside the window one second early"
    clock.now += 1
    assert post().status_code == 409, "a fresh window after Retry-After seconds"


@override_settings(**NOTHING_TO_KILL, CHAOS_RATE_PER_IP="3/m", CHAOS_BURST_PER_IP="1/10s")
def test_no_burst_across_a_window_edge_passes_what_the_windows_promise(
    cluster: FakeApi, clock: Clock
) -> None:
    # A visitor presses every half second for ten minutes. The promise (contract.md): at
    # most 3 in each of the visitor's minute windows and 1 in each 10 s one, so never
    # more than 2 in any 10 s and never more than 6 in any 60 s, however the edges fall.
    passed = []
    start = clock.now
    while clock.now < start + 600:
        if post().status_code != 429:
            passed.append(clock.now)
        clock.now += 0.5
    for i, at in enumerate(passed):
        assert sum(1 for t in passed[i:] if t < at + 10) <= 2, passed
        assert sum(1 for t in passed[i:] if t < at + 60) <= 6, passed
    # And the budget is really given: 3 a minute, give or take an edge.
    assert 27 <= len(passed) <= 33, len(passed)


# X-Forwarded-For without a trusted proxy: tests/integration/test_chaos_api.py, through
# daphne, which hands the view the socket address.


@override_settings(**NOTHING_TO_KILL, **NO_BURST_LIMIT, TRUSTED_PROXY_COUNT=1)
def test_a_spoofed_leftmost_forwarded_entry_gives_no_fresh_budget(cluster: FakeApi) -> None:
    # The proxy (socket 10.0.0.1) appended the real client 203.0.113.7; the visitor
    # prepended a different fake address each time.
    codes = [
        post(ip="10.0.0.1", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, 203.0.113.7").status_code
        for i in range(4)
    ]
    assert codes == [409, 409, 409, 429]
    # Different real clients behind the same proxy have their own budgets.
    assert post(ip="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 409


@override_settings(**NOTHING_TO_KILL, **NO_BURST_LIMIT)
def test_ipv6_visitors_are_limited_per_56(cluster: FakeApi) -> None:
    codes = [post(ip=f"2001:db8:1:{i:x}::1").status_code for i in range(1, 5)]
    assert codes == [409, 409, 409, 429]
    assert post(ip="2001:db8:1:100::1").status_code == 409


@override_settings(
    **NOTHING_TO_KILL, CHAOS_RATE_PER_IP="100/m", CHAOS_RATE_GLOBAL="5/m", TRUSTED_PROXY_COUNT=1
)
def test_the_global_budget_holds_across_visitors(cluster: FakeApi) -> None:
    answers = [post(ip="10.0.0.1", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}") for i in range(8)]
    assert [a.status_code for a in answers] == [409] * 5 + [429] * 3
    assert {a.json()["scope"] for a in answers[5:]} == {"global"}


@override_settings(**NOTHING_TO_KILL, CHAOS_RATE_PER_IP="2/m", CHAOS_RATE_GLOBAL="3/m")
def test_one_visitor_over_their_limit_does_not_spend_the_global_budget(cluster: FakeApi) -> None:
    assert [post(ip="203.0.113.7").status_code for _ in range(6)] == [409] + [429] * 5
    assert post(ip="198.51.100.1").status_code == 409
    assert post(ip="198.51.100.2").status_code == 409
    assert post(ip="198.51.100.3").json()["scope"] == "global"


@override_settings(CHAOS_RATE_GLOBAL="2/m", TRUSTED_PROXY_COUNT=1)
def test_busy_presses_do_not_spend_the_global_budget(
    cluster: FakeApi, lock_redis: fakeredis.FakeRedis
) -> None:
    # Another press holds the kill lock: a crowd of twenty is answered "busy", and the
    # budget of two kills is still whole for the next presses.
    lock_redis.set(KILL_LOCK_KEY, "another press", ex=30)
    answers = [post(ip="10.0.0.1", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}") for i in range(20)]
    assert {(a.status_code, a.json()["error"]) for a in answers} == {(409, "busy")}
    lock_redis.delete(KILL_LOCK_KEY)
    assert post(ip="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.1").status_code == 200
    cluster.pods[:] = three_healthy()  # healed
    assert post(ip="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.2").status_code == 200
    cluster.pods[:] = three_healthy()
    third = post(ip="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.3")
    assert (third.status_code, third.json()["scope"]) == (429, "global")


def test_a_rate_limit_store_outage_is_a_503_not_an_open_door(
    cluster: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Down:
        def add(self, *args: Any, **kwargs: Any) -> bool:
            raise redis.ConnectionError("Connection refused")

        def get(self, *args: Any, **kwargs: Any) -> Any:
            raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(django_ratelimit.core, "caches", {"default": Down()})
    response = post()
    assert response.status_code == 503
    assert response.json()["error"] == "cluster_unavailable"
    assert cluster.deleted == []
    assert cluster.calls == []


def test_a_database_outage_is_a_503(cluster: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import OperationalError

    def down(**kwargs: Any) -> Any:
        raise OperationalError("database is locked")

    monkeypatch.setattr(ChaosEvent.objects, "create", down)
    assert post().status_code == 503


# --- one kill at a time, and only real kills --------------------------------------------


def test_a_second_press_finds_the_victim_terminating(cluster: FakeApi) -> None:
    first = post(ip="203.0.113.7")
    assert first.status_code == 200
    second = post(ip="198.51.100.1")
    assert (second.status_code, second.json()["reason"]) == (409, "pod_terminating")
    assert len(cluster.deleted) == 1
    assert cluster.terminating() == [first.json()["pod"]]


def test_a_victim_deleted_by_someone_else_after_our_list_is_not_our_kill(
    cluster: FakeApi,
) -> None:
    # Between our list and our delete another client deletes the same pod: it is
    # Terminating with a new resourceVersion, and the apiserver refuses our precondition.
    cluster.before_delete = lambda api: api.mark_deleting(api.calls[-1]["name"])
    response = post()
    assert response.status_code == 409
    assert response.json()["reason"] == "victim_changed"
    assert cluster.deleted == []
    assert not ChaosEvent.objects.filter(outcome="deleted").exists()
    assert ChaosEvent.objects.get().reason == "victim_changed"


def test_a_replacement_under_the_victims_name_is_not_deleted(cluster: FakeApi) -> None:
    def replace(api: FakeApi) -> None:
        raw = api.find(api.calls[-1]["name"])
        assert raw is not None
        raw["metadata"]["uid"] = "uid-replacement"

    cluster.before_delete = replace
    response = post()
    assert (response.status_code, response.json()["reason"]) == (409, "victim_changed")
    assert cluster.deleted == []


def test_a_press_while_another_holds_the_kill_lock_is_busy(
    cluster: FakeApi, lock_redis: fakeredis.FakeRedis
) -> None:
    lock_redis.set(KILL_LOCK_KEY, "another press", ex=30)
    before = attempts("busy")
    response = post()
    assert response.status_code == 409
    assert response.json() == {"ok": False, "error": "busy", "retry_after": 1}
    assert cluster.calls == [], "a busy press never reaches the cluster"
    assert not ChaosEvent.objects.exists()
    assert attempts("busy") == before + 1
    assert lock_redis.get(KILL_LOCK_KEY) == b"another press", "the holder's lock is left alone"


@pytest.mark.parametrize("where", ["list", "delete"])
def test_the_kill_lock_is_released_after_every_press(
    cluster: FakeApi, lock_redis: fakeredis.FakeRedis, where: str
) -> None:
    assert post(ip="203.0.113.1").status_code == 200
    assert lock_redis.get(KILL_LOCK_KEY) is None
    cluster.pods[:] = three_healthy()  # healed
    setattr(cluster, f"{where}_error", ApiException(status=500))
    assert post(ip="203.0.113.2").status_code == 503
    assert lock_redis.get(KILL_LOCK_KEY) is None


def test_a_kill_lock_store_outage_is_a_503_and_no_kill(
    cluster: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rate-limit counters answer; only the lock's store is gone, as when Redis goes
    # away between the two.
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    monkeypatch.setattr(services, "lock_store", lambda: dead)
    response = post()
    assert response.status_code == 503
    assert response.json() == {"ok": False, "error": "cluster_unavailable"}
    assert cluster.calls == []
    assert cluster.deleted == []
