"""The server-rendered /infra page and the snapshot API, through Django's test client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast
from unittest import mock

import pytest
from bs4 import BeautifulSoup, Tag
from django.core.cache import cache
from django.db import DatabaseError
from django.test import Client
from redis import RedisError

from chaos.models import ChaosEvent
from live.publish import publish

GIB = 1024**3
pytestmark = pytest.mark.django_db


# ---- the page's DOM, parsed by BeautifulSoup, queried by id, class and attribute --------


class Node(Tag):
    """BeautifulSoup's Tag, plus the lookups these tests read the page with."""

    @property
    def tag(self) -> str:
        return self.name

    def by_id(self, element_id: str) -> Node:
        found = self.select(f"#{element_id}")
        assert len(found) == 1, f"expected one #{element_id}, found {len(found)}"
        return cast(Node, found[0])

    def by_class(self, name: str) -> list[Node]:
        return [cast(Node, n) for n in self.select(f".{name}")]


def parse(html: str) -> Node:
    soup = BeautifulSoup(html, "html.parser", element_classes={Tag: Node})
    root = soup.find("html")
    assert isinstance(root, Node), "no <html> element"
    return root


# ---- data ------------------------------------------------------------------------------


def snapshot(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "ts": 1_790_000_000.0,
        "stale": False,
        "stale_since": None,
        "pods": {"running": 14, "total": 15},
        "cpu": {"used_percent": 18.66},
        "memory": {"used_percent": 72.5, "used_bytes": 5.5 * GIB, "total_bytes": 7.6 * GIB},
        "nodes": [
            {
                "name": "Node 1",
                "ready": True,
                "memory_used_bytes": 2 * GIB,
                "memory_total_bytes": 8 * GIB,
            },
            {
                "name": "Node 2",
                "ready": False,
                "memory_used_bytes": None,
                "memory_total_bytes": None,
            },
        ],
        "history": {
            "cpu": [[1_789_998_200, 12.0], [1_789_999_000, 30.0], [1_790_000_000, 18.0]],
            "memory": [[1_789_998_200, 70.0], [1_790_000_000, 72.5]],
        },
    }
    data.update(overrides)
    return data


def pod_list(*pods: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "namespace": "chaos-demo",
        "desired": 3,
        "ready": sum(1 for p in pods if p["ready"]),
        "pods": list(pods),
        "events": [{"at": "2026-11-26T08:00:01+00:00", "reason": "Killing", "text": "Stopping"}],
    }
    data.update(overrides)
    return data


def pod(name: str, status: str = "Running", *, ready: bool = True) -> dict[str, Any]:
    return {"name": name, "status": status, "ready": ready, "node": "Node 1", "age_s": 60}


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def get_page(client: Client) -> Node:
    response = client.get("/infra")
    assert response.status_code == 200
    return parse(response.content.decode())


# ---- tests -----------------------------------------------------------------------------


def test_page_without_any_data_says_it_is_waiting(client: Client) -> None:
    dom = get_page(client)

    assert "hidden" not in dom.by_id("waiting").attrs
    assert "Waiting for the first data" in dom.by_id("waiting").text
    assert dom.by_id("metric-cpu").by_class("value")[0].text == "—"
    assert dom.by_id("metric-cpu").attrs["data-level"] == "unknown"
    assert dom.by_id("connection").attrs["data-state"] == "reconnecting"
    assert dom.by_id("pods").find_all(lambda n: "data-pod" in n.attrs) == []
    assert dom.by_id("chaos-history").find_all(lambda n: n.tag == "li") == []
    state = json.loads(dom.by_id("initial-state").text)
    assert state["metrics"] is None
    assert state["pods"] is None
    assert state["chaos"]["recent"] == []


def test_page_renders_the_latest_snapshot_before_any_script_runs(client: Client) -> None:
    publish("metrics", snapshot())
    publish(
        "pods",
        pod_list(pod("chaos-demo-1-aaaaa"), pod("chaos-demo-1-bbbbb", "Pending", ready=False)),
    )
    dom = get_page(client)

    assert "hidden" in dom.by_id("waiting").attrs
    assert dom.by_id("metric-pods").by_class("value")[0].text == "14"
    assert dom.by_id("metric-pods").by_class("total")[0].text == "15"
    assert dom.by_id("metric-cpu").by_class("value")[0].text == "18.7"
    assert dom.by_id("metric-memory").by_class("value")[0].text == "72.5"
    assert dom.by_id("memory-used").text == "5.5"
    pods = {
        n.attrs["data-pod"]: n.attrs["data-status"]
        for n in dom.by_id("pods").find_all(lambda n: "data-pod" in n.attrs)
    }
    assert pods == {"chaos-demo-1-aaaaa": "Running", "chaos-demo-1-bbbbb": "Pending"}
    assert dom.by_id("pods-ready").text == "1"
    assert dom.by_id("pods-desired").text == "3"
    nodes = dom.by_id("nodes").find_all(lambda n: n.tag == "li")
    assert [n.attrs["data-ready"] for n in nodes] == ["true", "false"]
    assert "2.0 / 8.0 GiB" in nodes[0].text
    assert "no data" in nodes[1].text
    assert (
        nodes[0]
        .find_all(lambda n: n.tag == "rect" and "bar-fill" in n.attrs["class"])[0]
        .attrs["width"]
        == "25.0"
    )
    assert "Stopping" in dom.by_id("k8s-events").text


def test_kubernetes_events_render_newest_first(client: Client) -> None:
    events = [
        {"at": "2026-11-26T08:00:01+00:00", "reason": "Killing", "text": "old"},
        {"at": "2026-11-26T08:00:02+00:00", "reason": "SuccessfulCreate", "text": "new"},
    ]
    publish("pods", pod_list(pod("chaos-demo-1-aaaaa"), events=events))
    dom = get_page(client)

    rows = dom.by_id("k8s-events").find_all(lambda n: n.tag == "li")
    assert [row.text.split()[-1] for row in rows] == ["new", "old"]
    assert (
        "hidden" not in dom.find_all(lambda n: "k8s-panel" in (n.attrs.get("class") or ""))[0].attrs
    )


def test_sparklines_are_drawn_server_side(client: Client) -> None:
    publish("metrics", snapshot())
    dom = get_page(client)

    line = dom.by_id("spark-cpu").by_class("spark-line")[0].attrs["points"] or ""
    points = [tuple(float(v) for v in p.split(",")) for p in line.split()]
    assert [x for x, _ in points] == [0.0, 44.44, 100.0]
    # The highest value is drawn highest (smallest y), the lowest lowest.
    assert min(points, key=lambda p: p[1]) == points[1]
    assert max(points, key=lambda p: p[1]) == points[0]


@pytest.mark.parametrize(
    ("cpu", "level"),
    [(69.9, "ok"), (70.0, "warning"), (89.99, "warning"), (90.0, "critical"), (None, "unknown")],
)
def test_metric_cards_are_coloured_by_threshold(
    client: Client, cpu: float | None, level: str
) -> None:
    publish("metrics", snapshot(cpu={"used_percent": cpu}))
    assert get_page(client).by_id("metric-cpu").attrs["data-level"] == level


def test_stale_metrics_render_a_stale_badge(client: Client) -> None:
    # 2026-11-26 08:00:00 UTC
    publish("metrics", snapshot(stale=True, stale_since=1_795_680_000.0))
    badge = get_page(client).by_id("connection")

    assert badge.attrs["data-state"] == "stale"
    assert badge.text.strip() == "stale since 08:00:00"


def test_chaos_summary_is_rendered(client: Client) -> None:
    for name, recovery in [("chaos-demo-1-old", 2.0), ("chaos-demo-1-new", None)]:
        ChaosEvent.objects.create(
            outcome=ChaosEvent.Outcome.DELETED, pod_name=name, client_hash="h", recovery_s=recovery
        )
    ChaosEvent.objects.create(
        outcome=ChaosEvent.Outcome.REFUSED, reason="not_enough_healthy", client_hash="h"
    )
    dom = get_page(client)

    history = dom.by_id("chaos-history").find_all(lambda n: n.tag == "li")
    assert [li.attrs["data-healed"] for li in history] == ["false", "true"]
    assert "chaos-demo-1-new" in history[0].text
    assert "healing" in history[0].text
    assert "healed in 2.0 s" in history[1].text
    assert dom.by_id("recovery-p50").text == "2.0"
    assert dom.by_id("recovery-count").text == "1"
    assert "disabled" not in dom.by_id("chaos-button").attrs
    assert dom.by_id("chaos-button").tag == "button"


def test_chaos_switched_off_disables_the_button_and_says_so(client: Client, settings: Any) -> None:
    settings.CHAOS_ENABLED = False
    dom = get_page(client)

    assert "disabled" in dom.by_id("chaos-button").attrs
    assert "switched off" in dom.by_id("chaos-message").text


def test_page_sets_the_csrf_cookie_the_button_needs(client: Client) -> None:
    response = client.get("/infra")

    assert "csrftoken" in response.cookies
    form = parse(response.content.decode()).by_id("chaos-form")
    assert form.find_all(lambda n: n.attrs.get("name") == "csrfmiddlewaretoken")


def test_page_works_under_a_strict_content_security_policy(client: Client) -> None:
    """No inline executable script, no inline style, no event-handler attributes: the page
    must run under `default-src 'self'` without 'unsafe-inline'."""
    publish("metrics", snapshot())
    publish("pods", pod_list(pod("chaos-demo-1-aaaaa")))
    dom = get_page(client)

    scripts = dom.find_all(lambda n: n.tag == "script")
    assert {s.attrs.get("type") for s in scripts} == {"module", "application/json"}
    for script in scripts:
        if script.attrs.get("type") == "module":
            assert (script.attrs.get("src") or "").endswith("infra.js")
            assert script.text.strip() == ""
    offenders = dom.find_all(
        lambda n: "style" in n.attrs or any(a.startswith("on") for a in n.attrs)
    )
    assert offenders == []
    assert dom.find_all(lambda n: n.tag == "style") == []


def test_pod_names_and_events_are_escaped(client: Client) -> None:
    evil = '<script>alert("x")</script>'
    publish("pods", pod_list(pod(evil), events=[{"at": 0, "reason": evil, "text": evil}]))
    ChaosEvent.objects.create(outcome=ChaosEvent.Outcome.DELETED, pod_name=evil, client_hash="h")
    response = client.get("/infra")
    html = response.content.decode()

    assert "<script>alert" not in html
    dom = parse(html)
    assert dom.by_id("pods").find_all(lambda n: n.attrs.get("data-pod") == evil)
    assert evil in dom.by_id("chaos-history").text
    # The JSON block is escaped for HTML too, and still decodes to the original name.
    assert json.loads(dom.by_id("initial-state").text)["pods"]["pods"][0]["name"] == evil


def test_page_renders_when_the_cache_is_down(client: Client) -> None:
    with mock.patch("dashboard.views.latest", side_effect=RedisError("down")):
        dom = get_page(client)

    assert "hidden" not in dom.by_id("waiting").attrs


def test_page_renders_when_the_database_is_down(client: Client, settings: Any) -> None:
    publish("metrics", snapshot())
    settings.CHAOS_ENABLED = True
    with mock.patch("dashboard.views.chaos_summary", side_effect=DatabaseError("down")):
        dom = get_page(client)

    # The numbers still show; the button follows the setting, not the missing history.
    assert dom.by_id("metric-cpu").by_class("value")[0].text == "18.7"
    assert "disabled" not in dom.by_id("chaos-button").attrs
    assert dom.by_id("chaos-history").find_all(lambda n: n.tag == "li") == []


def test_page_only_answers_get(client: Client) -> None:
    assert client.post("/infra").status_code == 405


def test_snapshot_api_shape(client: Client) -> None:
    metrics = snapshot()
    pods = pod_list(pod("chaos-demo-1-aaaaa"))
    publish("metrics", metrics)
    publish("pods", pods)
    ChaosEvent.objects.create(
        outcome=ChaosEvent.Outcome.DELETED,
        pod_name="chaos-demo-1-zzzzz",
        client_hash="h",
        recovery_s=3.25,
    )

    response = client.get("/api/infra/snapshot")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"metrics", "pods", "chaos"}
    assert body["metrics"] == metrics
    assert body["pods"] == pods
    assert set(body["chaos"]) >= {"enabled", "rate_per_ip", "recovery", "recent"}
    assert body["chaos"]["recovery"] == {"p50_s": 3.25, "p95_s": 3.25, "count": 1}
    assert body["chaos"]["recent"][0]["pod"] == "chaos-demo-1-zzzzz"


def test_snapshot_api_without_data_has_nulls(client: Client) -> None:
    body = client.get("/api/infra/snapshot").json()

    assert body["metrics"] is None
    assert body["pods"] is None
    assert body["chaos"]["recent"] == []


def test_snapshot_api_answers_503_when_the_cache_is_down(client: Client) -> None:
    with mock.patch("dashboard.views.latest", side_effect=RedisError("down")):
        response = client.get("/api/infra/snapshot")

    assert response.status_code == 503
    assert response.json() == {"error": "store_unavailable"}


def test_page_and_api_are_never_served_from_a_stale_cache(client: Client) -> None:
    assert "no-cache" in client.get("/infra")["Cache-Control"]
    assert "no-store" in client.get("/api/infra/snapshot")["Cache-Control"]
    assert client.head("/infra").status_code == 200
