"""Recovery timelines on the real stack: presses through the real POST, the real watcher
process, the kwok cluster's controller-manager, scheduler and staged kubelet.

For each kill the stored phases add up to its recovery_s, and each moment the timeline
claims lies inside the second the apiserver stamped for the same change. A watcher that
restarts in the middle of a recovery leaves a timeline that says which phases it missed,
and whatever it does report is still right.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from chaos.timeline import phases_text
from stackkit.stack import Devstack, chaos_session, manage
from tests.chaos.stack import event, flush_test_redis, pods, press, wait_healthy
from tests.conftest import StartProcess

pytestmark = pytest.mark.integration

KILLS = 3
# A moment the watcher saw is at most this much after the change (watch delivery), and the
# apiserver's stamp of it is truncated to the second.
DELIVERY_S = 0.5


@pytest.fixture
def env(devstack: Devstack) -> Iterator[dict[str, str]]:
    # The integration database, emptied first: these watchers must lead at once, not stand
    # by behind one that an earlier test left there.
    flush_test_redis(devstack)
    wait_healthy(devstack)
    yield devstack.app_env(CHAOS_RATE_PER_IP="60/m", CHAOS_BURST_PER_IP="60/10s")
    wait_healthy(devstack)


def stamp(value: str | None) -> float | None:
    """Epoch seconds of an API stamp or a database column (naive there, in UTC)."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def api_moments(devstack: Devstack, name: str) -> dict[str, float | None]:
    """The apiserver's (second-truncated) stamps of the replacement's moments."""
    out = devstack.kubectl("-n", devstack.namespace, "get", "pod", name, "-o", "json").stdout
    pod = json.loads(out)
    conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
    started = [
        c["state"]["running"]["startedAt"]
        for c in pod["status"].get("containerStatuses", [])
        if "running" in c.get("state", {})
    ]
    return {
        "created": stamp(pod["metadata"]["creationTimestamp"]),
        "scheduled": stamp(conditions.get("PodScheduled", {}).get("lastTransitionTime")),
        "started": stamp(max(started)) if started else None,
        "ready": stamp(conditions.get("Ready", {}).get("lastTransitionTime")),
    }


def wait_for(what: str, ready: Callable[[], Any], timeout: float = 40) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := ready()):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.2)
    return value


def settled(devstack: Devstack, event_id: int) -> dict[str, Any] | None:
    """The event once healed and its timeline final (the victim's termination in)."""
    row = event(devstack, event_id)
    if row["recovery_s"] is None or not row["phases"]:
        return None
    phases = json.loads(row["phases"])
    return row if phases["terminated"]["state"] != "pending" else None


def check_against_the_apiserver(devstack: Devstack, row: dict[str, Any]) -> dict[str, Any]:
    phases: dict[str, Any] = json.loads(row["phases"])
    killed = stamp(str(row["deleted_at"]))
    assert killed is not None
    truth = api_moments(devstack, row["replacement_name"])
    previous = 0.0
    for step in phases["steps"]:
        if step["end_s"] is not None:
            moment = killed + step["end_s"]
            server = truth[step["name"]]
            assert server is not None, step
            # Inside the stamped second, allowing the watch's delivery and the rounding.
            assert server - 0.02 <= moment < server + 1 + DELIVERY_S, (step, server - killed)
        if step["state"] == "done":
            assert step["s"] >= 0
            assert step["s"] == pytest.approx(step["end_s"] - previous, abs=0.011)
        previous = step["end_s"] if step["end_s"] is not None else previous
    if phases["complete"]:
        total = sum(step["s"] for step in phases["steps"])
        assert total == pytest.approx(row["recovery_s"], abs=0.02)
        assert phases["terminated"]["s"] > 0
    return phases


def test_phases_add_up_to_the_recovery_for_several_kills_and_a_watcher_restart(
    devstack: Devstack, web_server: Callable[..., str], start_process: StartProcess, env: Any
) -> None:
    url = web_server(CHAOS_RATE_PER_IP="60/m", CHAOS_BURST_PER_IP="60/10s")
    watcher = start_process(manage("watch_pods"), env, name="watcher")
    session = chaos_session(url)
    # The watcher leads and has listed before the first press.
    wait_for("a pods frame", lambda: requests_pods(url))

    complete = 0
    for _ in range(KILLS):
        wait_healthy(devstack)
        response = press(session, url)
        assert response.status_code == 200, response.text
        event_id = response.json()["event_id"]
        row = wait_for("a settled event", lambda: settled(devstack, event_id))  # noqa: B023
        phases = check_against_the_apiserver(devstack, row)
        print(f"\nkill {event_id}, healed in {row['recovery_s']:.2f} s: {phases_text(phases)}")
        complete += phases["complete"]
    # Nothing disturbed these: each was seen whole.
    assert complete == KILLS

    # Mid-recovery, the watcher goes and a new one starts: it meets the replacement in its
    # first list, so the moments before that are unknown, never guessed.
    wait_healthy(devstack)
    response = press(session, url)
    assert response.status_code == 200, response.text
    victim = response.json()["pod"]
    wait_for(
        "the victim terminating",
        lambda: any(
            p["metadata"]["name"] == victim and p["metadata"].get("deletionTimestamp")
            for p in pods(devstack)
        ),
    )
    watcher.terminate()
    watcher.wait(timeout=15)
    start_process(manage("watch_pods"), env, name="watcher-2")
    event_id = response.json()["event_id"]
    row = wait_for("the new watcher's record", lambda: settled(devstack, event_id))
    phases = check_against_the_apiserver(devstack, row)
    print(f"\nafter a restart, healed in {row['recovery_s']:.2f} s: {phases_text(phases)}")
    assert phases["complete"] is False, phases
    assert "created" in phases["unknown"]
    assert phases["steps"][0]["state"] == "unknown"
    # The recovery itself was still measured: its end is the moment the new watcher saw.
    assert row["recovery_s"] is not None
    ready = phases["steps"][-1]
    if ready["end_s"] is not None:
        assert ready["end_s"] == pytest.approx(row["recovery_s"], abs=0.011)


def requests_pods(url: str) -> bool:
    shown = requests.get(f"{url}/api/infra/snapshot", timeout=5).json().get("pods") or {}
    return bool(shown.get("pods"))
