"""Kubernetes' own guard, on the real apiserver and controller-manager: a kill is an
eviction, and the PodDisruptionBudget decides how many demo pods may be down, whoever asks.

- Simultaneous evictions at every demo pod, with the app's own credentials (the test
  namespace's chaos ServiceAccount) and no app in between: the apiserver accepts at most
  one, and says why it refused the others.
- Two copies of the app, each with a Redis of its own (so their kill locks cannot see each
  other), pressed at once: still at most one pod down, the losing press recorded as the
  budget's refusal, not as a kill.
- The chaos account may read pods and events and evict, and nothing else.

Other suites may press in the test namespace on a shared stack: what must never happen is
asserted every time; what needs a quiet cluster (exactly one accepted, a budget refusal
seen) is tried a few times.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client
from kubernetes import config as kube_config

from chaos import kube
from chaos.pods import Pod
from stackkit.podwatch import PodWatch
from stackkit.servers import RedisServer
from stackkit.stack import ROOT, SELECTOR, Devstack, chaos_session, events
from tests.chaos.stack import NAMESPACE, REPLICAS, budget, press, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("healthy_cluster")]

WebServer = Callable[..., str]
ATTEMPTS = 4
# Budgets far above what these presses spend: the budget under test is Kubernetes'.
LOOSE = {
    "TRUSTED_PROXY_COUNT": "1",
    "CHAOS_RATE_PER_IP": "1000/m",
    "CHAOS_BURST_PER_IP": "1000/10s",
    "CHAOS_RATE_GLOBAL": "100000/m",
}


def chaos_api(devstack: Devstack) -> client.CoreV1Api:
    """A client with the app's own credentials: the chaos ServiceAccount's kubeconfig."""
    return client.CoreV1Api(
        kube_config.new_client_from_config(config_file=devstack.chaos_kubeconfig)
    )


def evict(api: client.CoreV1Api, pod: Pod) -> None:
    """The app's own eviction call, for exactly the pod as listed."""
    kube.evict_pod(
        api,
        namespace=NAMESPACE,
        name=pod.name,
        uid=pod.uid,
        resource_version=pod.resource_version,
    )


def evict_all_at_once(api: client.CoreV1Api) -> dict[str, str]:
    """Every demo pod evicted in the same instant, each with its own preconditions;
    returns pod name -> "accepted" or the KubeError reason."""
    listed = kube.list_pods(api, namespace=NAMESPACE, selector=SELECTOR).pods
    start = threading.Barrier(len(listed))

    def one(pod: Pod) -> tuple[str, str]:
        start.wait()
        try:
            evict(api, pod)
        except kube.KubeError as exc:
            return pod.name, exc.reason
        return pod.name, "accepted"

    with ThreadPoolExecutor(len(listed)) as pool:
        return dict(pool.map(one, listed))


def press_together(
    urls: list[str], sessions: list[requests.Session], *, first_address: int
) -> list[tuple[int, dict[str, Any]]]:
    """One press on each app, released in the same instant, each from its own address."""
    start = threading.Barrier(len(urls))

    def one(i: int) -> tuple[int, dict[str, Any]]:
        start.wait()
        address = f"198.18.9.{first_address + i}"
        answer = press(sessions[i], urls[i], **{"X-Forwarded-For": address})
        return answer.status_code, answer.json()

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(one, range(len(urls))))


def disruption_target(devstack: Devstack, name: str) -> dict[str, Any] | None:
    out = devstack.kubectl("-n", NAMESPACE, "get", "pod", name, "-o", "json", check=False)
    if out.returncode:
        return None  # already gone
    conditions = json.loads(out.stdout)["status"].get("conditions") or []
    return next((c for c in conditions if c["type"] == "DisruptionTarget"), None)


Rule = tuple[str, str, str]  # (apiGroup, resource, verb)


def rules(kubectl: Callable[..., Any], namespace: str, path: Path) -> set[Rule]:
    """What the caller may do in `namespace`, as the apiserver tells it (a
    SelfSubjectRulesReview), one (apiGroup, resource, verb) each."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    path.write_text(json.dumps(review))
    # --validate=false: validation would list CRDs, which these accounts may not.
    created = kubectl("create", "--validate=false", "-f", str(path), "-o", "json")
    status = json.loads(created.stdout)["status"]
    return {
        (group, resource, verb)
        for rule in status["resourceRules"]
        for group in rule.get("apiGroups") or [""]
        for resource in rule.get("resources") or []
        for verb in rule["verbs"]
    }


def test_the_chaos_account_may_read_pods_and_events_and_evict_and_nothing_else(
    devstack: Devstack, tmp_path: Path
) -> None:
    # What every authenticated account may do (ask who it is, ask what it may do) comes
    # from the cluster's defaults: an account with no binding shows it.
    token = devstack.kubectl("-n", NAMESPACE, "create", "token", "default", "--duration=10m")
    admin = json.loads(devstack.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = dict(admin["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:
        ca = Path(devstack.admin_kubeconfig).parent / cluster["certificate-authority"]
        cluster["certificate-authority"] = str(ca.resolve())
    unbound = tmp_path / "unbound-kubeconfig"
    unbound.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": token.stdout.strip()}}],
                "contexts": [{"name": "u", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "u",
            }
        )
    )

    def as_unbound(*args: str) -> subprocess.CompletedProcess[str]:
        command = [devstack.env["DEVSTACK_KUBECTL"], "--kubeconfig", str(unbound), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30)

    def as_chaos(*args: str) -> subprocess.CompletedProcess[str]:
        return devstack.kubectl(*args, admin=False)

    everyone = rules(as_unbound, NAMESPACE, tmp_path / "everyone.json")
    granted = rules(as_chaos, NAMESPACE, tmp_path / "granted.json") - everyone
    assert granted == {
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/eviction", "create"),
        ("", "events", "list"),
        ("", "events", "watch"),
    }
    assert rules(as_chaos, "default", tmp_path / "elsewhere.json") - everyone == set()


def test_the_test_namespace_has_its_own_budget_from_the_same_manifest(devstack: Devstack) -> None:
    pdb = budget(devstack)
    manifest = yaml.safe_load((ROOT / "k8s/chaos-demo/pdb.yaml").read_text())
    assert pdb["spec"]["maxUnavailable"] == manifest["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == manifest["spec"]["selector"]
    wait_healthy(devstack)
    status = budget(devstack)["status"]
    # It covers exactly the demo pods: the three the Deployment runs.
    assert (status["expectedPods"], status["currentHealthy"]) == (REPLICAS, REPLICAS)
    assert status["disruptionsAllowed"] == 1


def test_simultaneous_evictions_with_the_apps_credentials_accept_at_most_one(
    devstack: Devstack,
) -> None:
    api = chaos_api(devstack)
    for attempt in range(1, ATTEMPTS + 1):
        wait_healthy(devstack)
        watch = PodWatch(devstack)
        try:
            answers = evict_all_at_once(api)
            wait_healthy(devstack)
        finally:
            seen = watch.close()
        accepted = [name for name, answer in answers.items() if answer == "accepted"]
        refused = [name for name, answer in answers.items() if answer == "disruption_budget"]
        print(
            f"attempt {attempt}: {len(answers)} evictions at once, {len(accepted)} accepted, "
            f"{len(refused)} refused by the budget ({answers}); most terminating at once "
            f"{seen.most}"
        )
        # What must never happen, whoever else is pressing.
        assert len(answers) == REPLICAS
        assert len(accepted) <= 1, answers
        assert set(answers.values()) <= {"accepted", "disruption_budget", "conflict"}, answers
        assert seen.most <= 1, seen.most_names
        if len(accepted) == 1 and len(refused) == REPLICAS - 1:
            (victim,) = accepted
            uid = next(u for u, n in seen.names.items() if n == victim)
            assert uid in seen.evicted, "the victim did not carry DisruptionTarget"
            return
    pytest.fail(f"no quiet moment in {NAMESPACE} during {ATTEMPTS} attempts")


def test_the_victim_says_it_was_evicted(devstack: Devstack) -> None:
    # Read from the pod itself, while it shuts down (its grace period is 3 s).
    wait_healthy(devstack)
    api = chaos_api(devstack)
    pod = kube.list_pods(api, namespace=NAMESPACE, selector=SELECTOR).pods[0]
    evict(api, pod)
    condition = disruption_target(devstack, pod.name)
    assert condition is not None, "gone before it could be read, or never marked"
    assert (condition["status"], condition["reason"]) == ("True", "EvictionByEvictionAPI")
    wait_healthy(devstack)


def test_two_copies_of_the_app_with_their_own_redis_take_down_one_pod_at_most(
    devstack: Devstack, web_server: WebServer, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    redises = [RedisServer(tmp_path / name) for name in ("a", "b")]
    try:
        urls = [web_server(REDIS_URL=server.url, **LOOSE) for server in redises]
        sessions = [chaos_session(url) for url in urls]
        tally: dict[str, int] = {}
        for attempt in range(1, ATTEMPTS * 2 + 1):
            wait_healthy(devstack)
            last_id = max((row["id"] for row in events(devstack)), default=0)
            watch = PodWatch(devstack)
            try:
                answers = press_together(urls, sessions, first_address=attempt * 2)
                wait_healthy(devstack)
            finally:
                seen = watch.close()
            rows = [row for row in events(devstack) if row["id"] > last_id]
            outcomes = sorted(row["outcome"] for row in rows)
            for outcome in outcomes:
                tally[outcome] = tally.get(outcome, 0) + 1
            print(f"attempt {attempt}: {answers}, rows {outcomes}, most down {seen.most}")

            # Never two down, never a 200 that was not a real eviction.
            assert seen.most <= 1, seen.most_names
            assert sum(status == 200 for status, _ in answers) <= 1, answers
            assert all(status in {200, 409} for status, _ in answers), answers
            kills = [row for row in rows if row["outcome"] == "deleted"]
            assert {row["pod_uid"] for row in kills} <= seen.evicted
            assert len(kills) == sum(status == 200 for status, _ in answers)
            for status, body in answers:
                if status == 409 and body["error"] == "disruption_budget":
                    (refused,) = [row for row in rows if row["outcome"] == "budget_refused"]
                    # The budget's refusal, not a kill: the loser's pod was left alone,
                    # unless both apps had drawn the same pod and it is the winner's.
                    assert refused["deleted_at"] is None
                    winners = {row["pod_uid"] for row in kills}
                    assert refused["pod_uid"] not in seen.since or refused["pod_uid"] in winners
            if outcomes == ["budget_refused", "deleted"]:
                print(f"rows over all attempts: {tally}")
                return
        pytest.fail(f"the two presses never raced to the apiserver in {ATTEMPTS * 2} attempts")
    finally:
        for server in redises:
            server.stop()
