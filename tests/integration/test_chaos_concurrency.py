"""A crowd presses at once, across two web processes: still one kill at a time.

Real daphne processes sharing the real Redis (the kill lock) and the real apiserver with
RBAC and the demo's disruption budget; visitors come from many addresses through
X-Forwarded-For (one trusted proxy), each pressing once, so the kill lock and not the
visitors' budgets is what is tested. Everyone's budget of kills is smaller than the crowd:
only presses that won the lock may spend it, so the crowd's "busy" answers must leave it
whole. A watch of our own, as the cluster admin, sees every deletionTimestamp and every
eviction's DisruptionTarget condition.

Other suites may press in the test namespace on a shared stack. Their deletions cannot be told
from a phantom of ours, so a run that saw a deletion not matched by one of our 200s is
tried again; the assertions themselves are never loosened.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import requests

from chaos.services import KILL_LOCK_KEY
from stackkit.podwatch import PodWatch, Terminations
from stackkit.servers import RedisServer
from stackkit.stack import Devstack, chaos_session, events
from tests.chaos.stack import NAMESPACE, flush_test_redis, pods, press, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("healthy_cluster")]

WebServer = Callable[..., str]
VISITORS = 24
WAVES = 6
ATTEMPTS = 3
# Fewer kills for everyone than half the presses of one run (WAVES * VISITORS): spent by
# every press, busy or not, it would be gone within the run, whichever way the hour's
# window edge falls, and presses would get 429.
GLOBAL_KILLS = 60
CROWD_SETTINGS = {
    "TRUSTED_PROXY_COUNT": "1",
    "CHAOS_RATE_PER_IP": "1000/m",
    "CHAOS_BURST_PER_IP": "1000/10s",
    "CHAOS_RATE_GLOBAL": f"{GLOBAL_KILLS}/h",
}
# django-ratelimit's counters, under the cache's key prefix and version.
BUDGET_KEYS = "infra:1:rl:*"


def crowd(urls: list[str], first_address: int) -> list[requests.Response]:
    """VISITORS presses released together, alternating between the web processes, each
    from its own address."""
    start = threading.Barrier(VISITORS)
    sessions = {url: chaos_session(url) for url in urls}

    def one(i: int) -> requests.Response:
        url = urls[i % len(urls)]
        address = f"198.18.{(first_address + i) // 250}.{(first_address + i) % 250 + 1}"
        start.wait()
        return press(sessions[url], url, **{"X-Forwarded-For": address})

    with ThreadPoolExecutor(VISITORS) as pool:
        return list(pool.map(one, range(VISITORS)))


@dataclass
class Run:
    answers: list[list[tuple[int, dict[str, Any]]]]
    seen: Terminations
    rows: list[dict[str, Any]]

    @property
    def kills(self) -> list[dict[str, Any]]:
        return [body for wave in self.answers for status, body in wave if status == 200]

    @property
    def our_uids(self) -> set[str]:
        by_id = {row["id"]: row for row in self.rows}
        return {by_id[body["event_id"]]["pod_uid"] for body in self.kills}

    @property
    def foreign(self) -> set[str]:
        """Pods that got a deletionTimestamp during the run without a 200 of ours."""
        return set(self.seen.since) - self.our_uids


def one_run(devstack: Devstack, urls: list[str], addresses: Iterator[int]) -> Run:
    # Everyone's budget of kills whole at the start of each run.
    flush_test_redis(devstack)
    wait_healthy(devstack)
    last_id = max((row["id"] for row in events(devstack)), default=0)
    watch = PodWatch(devstack)
    answers = []
    try:
        for _ in range(WAVES):
            wait_healthy(devstack)
            responses = crowd(urls, next(addresses))
            answers.append([(r.status_code, r.json()) for r in responses])
        # Until our last victim is gone and replaced, so the watch sees it all.
        wait_healthy(devstack)
    finally:
        seen = watch.close()
    rows = [row for row in events(devstack) if row["id"] > last_id]
    return Run(answers=answers, seen=seen, rows=rows)


def test_a_crowd_on_two_web_processes_kills_one_pod_at_a_time(
    devstack: Devstack, web_server: WebServer
) -> None:
    urls = [web_server(**CROWD_SETTINGS), web_server(**CROWD_SETTINGS)]
    addresses = itertools.count(0, VISITORS)
    for attempt in range(1, ATTEMPTS + 1):
        run = one_run(devstack, urls, addresses)
        statuses = sorted(status for wave in run.answers for status, _ in wave)
        errors = sorted({str(body.get("error")) for wave in run.answers for _, body in wave})
        print(
            f"attempt {attempt}: {len(statuses)} presses, {len(run.kills)} kills "
            f"(evictions accepted), "
            f"statuses {dict((s, statuses.count(s)) for s in set(statuses))}, "
            f"errors {errors}, most terminating at once {run.seen.most} "
            f"{run.seen.most_names}, foreign deletions {len(run.foreign)}"
        )

        # What must never happen, whoever else is pressing.
        assert all(status in {200, 409, 503} for status in statuses), statuses
        for wave in run.answers:
            assert sum(status == 200 for status, _ in wave) <= 1, wave
            for status, body in wave:
                if status == 409:
                    assert body["error"] in {"busy", "not_enough_healthy", "disruption_budget"}
        # The busy answers spent nothing of everyone's budget: only the presses that won
        # the lock did, and they are far fewer than the budget, the crowd far more.
        answers = [body for wave in run.answers for _, body in wave]
        busy = sum(1 for body in answers if body.get("error") == "busy")
        assert len(answers) - busy < GLOBAL_KILLS < len(answers) // 2
        assert 429 not in statuses, "busy presses spent everyone's budget of kills"
        # Every 200 is a real eviction: Kubernetes marked the victim DisruptionTarget.
        assert run.our_uids <= run.seen.evicted, "a 200 whose pod was not evicted"
        deleted = [row for row in run.rows if row["outcome"] == "deleted"]
        assert len(deleted) == len(run.kills), "one deleted event per 200, and no more"
        assert len({row["pod_name"] for row in deleted}) == len(deleted), "a pod killed twice"
        assert len({row["pod_uid"] for row in deleted}) == len(deleted)
        our = run.our_uids
        assert len(our) == len(run.kills)
        assert our <= set(run.seen.since), "a 200 for a pod that never got a deletion"
        # Our own victims never overlap: each was gone before the next was deleted.
        spans = sorted((run.seen.since[uid], run.seen.gone.get(uid, float("inf"))) for uid in our)
        for (_, gone), (next_since, _) in itertools.pairwise(spans):
            assert gone <= next_since, "two of our kills terminating at the same time"

        if run.foreign:
            names = sorted(run.seen.names[uid] for uid in run.foreign)
            print(f"attempt {attempt}: someone else deleted {names} meanwhile; again")
            continue
        # A quiet cluster: every deletion it saw was one of our 200s, never two at once.
        assert run.seen.most <= 1, run.seen.most_names
        assert set(run.seen.since) == our
        assert len(run.kills) >= 1, "the crowd never killed anything: nothing was tested"
        return
    pytest.fail(f"others deleted pods in {NAMESPACE} during all {ATTEMPTS} attempts")


# --- the kill lock's store down --------------------------------------------------------


def assert_untouched(devstack: Devstack, before: set[str], last_id: int) -> None:
    after = pods(devstack)
    assert {p["metadata"]["uid"] for p in after} == before
    assert not any(p["metadata"].get("deletionTimestamp") for p in after)
    assert not [row for row in events(devstack) if row["id"] > last_id]


def test_with_redis_gone_a_press_is_refused_and_nothing_dies(
    devstack: Devstack, web_server: WebServer, private_redis: RedisServer
) -> None:
    # Stopped under a running web process that had reached it: the kill lock (and every
    # budget) is unreachable.
    url = web_server(REDIS_URL=private_redis.url, **CROWD_SETTINGS)
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    private_redis.stop()
    before = {p["metadata"]["uid"] for p in pods(devstack)}
    last_id = max((row["id"] for row in events(devstack)), default=0)
    session = chaos_session(url)
    answers = [press(session, url, **{"X-Forwarded-For": f"198.18.200.{i}"}) for i in range(5)]
    assert [a.status_code for a in answers] == [503] * 5
    assert all(a.json() == {"ok": False, "error": "cluster_unavailable"} for a in answers)
    assert_untouched(devstack, before, last_id)


def test_when_only_the_kill_lock_fails_a_press_is_refused_and_nothing_dies(
    devstack: Devstack, web_server: WebServer, private_redis: RedisServer
) -> None:
    # The budgets answer but the lock's SET NX is refused (an ACL allows the rate-limit
    # keys only): the press got past the rate limit and must still not kill unguarded.
    admin = redis.Redis(port=private_redis.port, socket_timeout=3)
    url = web_server(REDIS_URL=private_redis.url, **CROWD_SETTINGS)
    session = chaos_session(url)
    admin.execute_command("ACL", "SETUSER", "default", "resetkeys", f"~{BUDGET_KEYS}")
    before = {p["metadata"]["uid"] for p in pods(devstack)}
    last_id = max((row["id"] for row in events(devstack)), default=0)
    answers = [press(session, url, **{"X-Forwarded-For": f"198.18.201.{i}"}) for i in range(3)]
    assert [a.status_code for a in answers] == [503] * 3, [a.text for a in answers]
    assert admin.keys(BUDGET_KEYS), "the presses were counted: budgets answered"
    assert not admin.keys(KILL_LOCK_KEY)
    assert_untouched(devstack, before, last_id)

    # The same process and visitor, once the lock's key is allowed again: a real kill.
    # So the 503s above were the lock's doing, and nothing else's.
    admin.execute_command("ACL", "SETUSER", "default", "allkeys")
    wait_healthy(devstack)
    answer = press(session, url, **{"X-Forwarded-For": "198.18.201.200"})
    assert answer.status_code == 200, answer.text
