"""The server-rendered recovery timelines and 24 h chart: what a viewer sees before any
script runs (static/infra.js then keeps them live, drawing them the same way)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from chaos import timeline
from chaos.models import ChaosEvent
from chaos.timeline import MISSED, PENDING
from tests.dashboard.test_page import get_page

pytestmark = pytest.mark.django_db

# A kill healed in 2.5 s whose scheduler and kubelet phases were not seen, on a 5 s scale,
# as the server draws it; tests/e2e/test_dashboard_frames.py holds the script to the same.
PARTIAL_DRAWN = [
    ("created", "done", 0.0, 10.0),
    ("scheduled", "unknown", 10.0, 0.0),
    ("started", "unknown", 10.0, 30.0),
    ("ready", "done", 40.0, 10.0),
]
PARTIAL_WORDS = [
    "controller 0.50 s: the ReplicaSet controller created a replacement",
    "scheduler: not seen",
    "kubelet: not seen",
    "probe 0.50 s: the readiness probe passed",
    "victim still shutting down",
]


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def kill(pod: str, recovery_s: float | None, **marks: float | None) -> ChaosEvent:
    killed = timezone.now() - timedelta(minutes=5)
    seen = {
        name: MISSED if s is None else timeline.seen(killed + timedelta(seconds=s))
        for name, s in marks.items()
    }
    phases = timeline.build(killed=killed, marks=seen, terminated=PENDING)
    return ChaosEvent.objects.create(
        outcome="deleted", pod_name=pod, client_hash="h", recovery_s=recovery_s, phases=phases
    )


def test_each_kill_has_its_bar_and_words_on_one_scale(client: Client) -> None:
    kill("web-a", 2.5, created=0.5, scheduled=None, started=2.0, ready=2.5)
    kill("web-b", None, created=0.4)
    ChaosEvent.objects.create(outcome="deleted", pod_name="web-old", client_hash="h")
    dom = get_page(client)
    history = dom.by_id("chaos-history")
    assert history.attrs["data-scale"] == "5.0"
    rows = {li.select_one("code").text: li for li in history.select("li.event")}

    def segs(pod: str) -> list[tuple[str, str, str, str]]:
        return [
            (r["data-phase"], r["data-state"], r["x"], r["width"])
            for r in rows[pod].select(".tl-seg")
        ]

    # Measured phases, and the unseen stretch drawn once, up to the next moment known.
    assert [(p, s, float(x), float(w)) for p, s, x, w in segs("web-a")] == PARTIAL_DRAWN
    assert [w.text for w in rows["web-a"].select(".tl-word")] == PARTIAL_WORDS
    assert rows["web-a"].attrs["data-complete"] == "false"
    # Still healing: the phase under way pulses where the bar will grow.
    assert segs("web-b")[1] == ("scheduled", "pending", "8.0", "2.0")
    # Focusable, labelled; without phases (an old kill) there is no bar at all.
    assert rows["web-a"].select_one(".tl").attrs["tabindex"] == "0"
    assert "hidden" in rows["web-old"].select_one(".tl").attrs


def test_the_chart_stacks_each_healed_kill_and_draws_the_running_median(client: Client) -> None:
    kill("web-a", 2.5, created=0.5, scheduled=None, started=2.0, ready=2.5)
    kill("web-b", 3.5, created=0.5, scheduled=0.5, started=3.5, ready=3.5)
    kill("web-c", None, created=0.4)  # not healed: not on the chart
    dom = get_page(client)
    chart = dom.by_id("recovery-chart")
    phases = [r["data-phase"] for r in chart.select(".rchart-bars rect")]
    # a: created, ready, and the unseen 1.5 s in grey; b: created and kubelet (the
    # scheduler's 0 s and the probe's 0 s draw nothing).
    assert phases == ["created", "ready", "unknown", "created", "started"]
    heights = [float(r["height"]) for r in chart.select(".rchart-bars rect")]
    # A 5 s scale on a 60-unit-high chart: 12 units a second.
    assert heights == pytest.approx([6.0, 6.0, 18.0, 6.0, 36.0])
    points = chart.select_one(".rchart-p50")["points"].split()
    assert [float(p.split(",")[1]) for p in points] == pytest.approx([60 - 30.0, 60 - 36.0])
    assert chart["aria-label"] == (
        "2 recoveries in the last 24 hours, from 2.5 to 3.5 seconds, median 3.0 seconds"
    )
    assert "hidden" in dom.select_one(".rchart-empty").attrs


def test_an_empty_day_says_where_kills_will_land(client: Client) -> None:
    dom = get_page(client)
    assert "hidden" not in dom.select_one(".rchart-empty").attrs
    assert dom.by_id("recovery-chart")["aria-label"] == "No recoveries in the last 24 hours yet"
