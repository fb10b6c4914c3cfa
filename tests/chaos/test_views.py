"""POST /api/infra/chaos against a stubbed Kubernetes client (docs/contract.md's HTTP contract)."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest
import redis
import urllib3
from django.core.cache import cache
from django.test import Client, override_settings
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from chaos import ratelimit
from chaos.models import ChaosEvent
from chaos.services import client_hash
from tests.chaos.fakes import FakeApi, pod_dict, three_healthy
from tests.conftest import free_port

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
    frozen = Clock()
    monkeypatch.setattr(ratelimit, "time", frozen)
    # The budgets' Lua script, run by fakeredis (on the real Redis: tests/integration).
    server = fakeredis.FakeServer()
    monkeypatch.setattr(ratelimit, "store", lambda: fakeredis.FakeRedis(server=server))
    return frozen


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


def test_refuses_when_too_few_are_healthy(cluster: FakeApi) -> None:
    cluster.pods[0] = pod_dict("chaos-demo-0", ready=False)
    response = post()
    assert response.status_code == 409
    assert response.json()["error"] == "not_enough_healthy"
    assert cluster.deleted == []
    assert ChaosEvent.objects.get().reason == "not_enough_healthy"


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


@override_settings(CHAOS_MIN_READY=3)  # the guard refuses: budgets are spent, no pod dies
def test_the_fourth_press_in_a_minute_is_rate_limited(cluster: FakeApi) -> None:
    codes = [post().status_code for _ in range(4)]
    assert codes == [409, 409, 409, 429]
    response = post()
    body = response.json()
    assert body["ok"] is False
    assert body["error"] == "rate_limited"
    assert 1 <= body["retry_after"] <= 61
    assert response["Retry-After"] == str(body["retry_after"])
    # Rate-limited presses do not reach the cluster or the history.
    assert ChaosEvent.objects.count() == 3
    assert post(ip="198.51.100.1").status_code == 409  # another visitor is unaffected


@override_settings(CHAOS_MIN_READY=3, CHAOS_RATE_PER_IP="3/m")
@pytest.mark.parametrize("start", [1_000_000.0, 1_000_000.25, 1_000_000.999, 1_000_041.5])
def test_retry_after_is_when_the_window_resets(
    cluster: FakeApi, clock: Clock, start: float
) -> None:
    clock.now = start
    for _ in range(3):
        post()
    retry_after = int(post()["Retry-After"])
    clock.now += retry_after - 1
    assert post().status_code == 429, "still inside the window one second early"
    clock.now += 1
    assert post().status_code == 409, "a fresh window after Retry-After seconds"


# X-Forwarded-For without a trusted proxy: tests/integration/test_chaos_api.py, through
# daphne, which hands the view the socket address.


@override_settings(CHAOS_MIN_READY=3, TRUSTED_PROXY_COUNT=1)
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


@override_settings(CHAOS_MIN_READY=3)
def test_ipv6_visitors_are_limited_per_56(cluster: FakeApi) -> None:
    codes = [post(ip=f"2001:db8:1:{i:x}::1").status_code for i in range(1, 5)]
    assert codes == [409, 409, 409, 429]
    assert post(ip="2001:db8:1:100::1").status_code == 409


@override_settings(
    CHAOS_MIN_READY=3, CHAOS_RATE_PER_IP="100/m", CHAOS_RATE_GLOBAL="5/m", TRUSTED_PROXY_COUNT=1
)
def test_the_global_budget_holds_across_visitors(cluster: FakeApi) -> None:
    codes = [
        post(ip="10.0.0.1", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(8)
    ]
    assert codes == [409] * 5 + [429] * 3


@override_settings(CHAOS_MIN_READY=3, CHAOS_RATE_PER_IP="2/m", CHAOS_RATE_GLOBAL="3/m")
def test_one_visitor_over_their_limit_does_not_spend_the_global_budget(cluster: FakeApi) -> None:
    assert [post(ip="203.0.113.7").status_code for _ in range(6)] == [409, 409] + [429] * 4
    assert post(ip="198.51.100.1").status_code == 409


def test_a_rate_limit_store_outage_is_a_503_not_an_open_door(
    cluster: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=1)
    monkeypatch.setattr(ratelimit, "store", lambda: dead)
    response = post()
    assert response.status_code == 503
    assert response.json()["error"] == "cluster_unavailable"
    assert cluster.deleted == []


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


def test_a_press_while_another_holds_the_kill_lock_is_busy(cluster: FakeApi) -> None:
    from chaos.services import KILL_LOCK_KEY

    cache.set(KILL_LOCK_KEY, "another press", 30)
    before = attempts("busy")
    response = post()
    assert response.status_code == 409
    assert response.json() == {"ok": False, "error": "busy", "retry_after": 1}
    assert cluster.calls == [], "a busy press never reaches the cluster"
    assert not ChaosEvent.objects.exists()
    assert attempts("busy") == before + 1
    assert cache.get(KILL_LOCK_KEY) == "another press", "the holder's lock is left alone"


@pytest.mark.parametrize("where", ["list", "delete"])
def test_the_kill_lock_is_released_after_every_press(cluster: FakeApi, where: str) -> None:
    from chaos.services import KILL_LOCK_KEY

    assert post(ip="203.0.113.1").status_code == 200
    assert cache.get(KILL_LOCK_KEY) is None
    cluster.pods[:] = three_healthy()  # healed
    setattr(cluster, f"{where}_error", ApiException(status=500))
    assert post(ip="203.0.113.2").status_code == 503
    assert cache.get(KILL_LOCK_KEY) is None


def test_a_kill_lock_store_outage_is_a_503_and_no_kill(
    cluster: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rate-limit counters answer; only the lock's SET NX fails, as when Redis goes
    # away between the two.
    from chaos import services

    class LockStoreDown:
        def add(self, *args: Any, **kwargs: Any) -> bool:
            raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(services, "cache", LockStoreDown())
    response = post()
    assert response.status_code == 503
    assert response.json() == {"ok": False, "error": "cluster_unavailable"}
    assert cluster.calls == []
    assert cluster.deleted == []
