"""k8s/ against a real apiserver: Pod Security "restricted" admits it, and the app's own
ServiceAccount can break chaos-demo and nothing else.

The devstack's kwok cluster runs the pods as fakes, but admission, RBAC and the
controllers that create pods from Deployments are the real Kubernetes code.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

from stackkit.stack import ROOT, Devstack

pytestmark = pytest.mark.integration

APP_NAMESPACE = "infra-chaos"
CHAOS_NAMESPACE = "chaos-demo"
APP_ACCOUNT = f"system:serviceaccount:{APP_NAMESPACE}:infra-chaos"
# Workload -> replicas the manifests ask for.
WORKLOADS = {"web": 2, "poller": 2, "watcher": 2, "redis": 1, "postgres": 1}


def kustomize(devstack: Devstack) -> list[dict[str, Any]]:
    """k8s/ as the devstack's kubectl renders it."""
    out = devstack.kubectl("kustomize", str(ROOT / "k8s")).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_templates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The app's pod templates by workload, with the volumes a StatefulSet adds."""
    templates = {}
    for doc in docs:
        if doc["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        if doc["metadata"]["namespace"] != APP_NAMESPACE:
            continue
        name = doc["metadata"]["name"]
        template = json.loads(json.dumps(doc["spec"]["template"]))
        for claim in doc["spec"].get("volumeClaimTemplates", []):
            claim_name = claim["metadata"]["name"]
            template["spec"].setdefault("volumes", []).append(
                {
                    "name": claim_name,
                    "persistentVolumeClaim": {"claimName": f"{claim_name}-{name}-0"},
                }
            )
        templates[name] = template
    return templates


def server_dry_run_pod(devstack: Devstack, name: str, template: dict[str, Any], path: Path) -> str:
    """Submits the template as a bare Pod (what a ReplicaSet would create); returns stderr."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"psa-{name}", "namespace": APP_NAMESPACE},
        "spec": template["spec"],
    }
    path.write_text(json.dumps(pod))
    result = devstack.kubectl("create", "--dry-run=server", "-f", str(path), check=False)
    return result.stderr if result.returncode else ""


def remove_app(devstack: Devstack) -> None:
    devstack.kubectl(
        "-n", CHAOS_NAMESPACE, "delete", "rolebinding", "infra-chaos-app", "--ignore-not-found"
    )
    devstack.kubectl(
        "delete", "namespace", APP_NAMESPACE, "--ignore-not-found", "--timeout=120s", timeout=150
    )


@pytest.fixture
def app_namespace(devstack: Devstack) -> Iterator[None]:
    """The namespace alone, for real: a server-side dry run cannot create objects in a
    namespace that the same dry run only pretends to create."""
    remove_app(devstack)
    devstack.kubectl("apply", "-f", str(ROOT / "k8s/app/namespace.yaml"))
    try:
        yield
    finally:
        remove_app(devstack)
        # chaos-demo was re-applied from the same files; it must still be whole for the
        # tests that follow.
        devstack.kubectl(
            "-n",
            CHAOS_NAMESPACE,
            "rollout",
            "status",
            "deployment/chaos-demo",
            "--timeout=60s",
            timeout=70,
        )


def token_kubeconfig(devstack: Devstack, token: str, path: Path) -> Path:
    """A kubeconfig holding only the apiserver address, its CA and `token`: no admin
    client certificate that could authenticate the request instead."""
    admin = json.loads(devstack.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = dict(admin["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:
        cluster["certificate-authority"] = str(
            (Path(devstack.admin_kubeconfig).parent / cluster["certificate-authority"]).resolve()
        )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "app", "user": {"token": token}}],
        "contexts": [{"name": "app", "context": {"cluster": "c", "user": "app"}}],
        "current-context": "app",
    }
    path.write_text(json.dumps(config))
    return path


def as_app(devstack: Devstack, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [devstack.env["DEVSTACK_KUBECTL"], "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def nginx_size(value: str) -> int:
    """An nginx size ("64k", "1m", "512") in bytes."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = value.strip().lower()
    if text[-1:] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def test_manifests_render_with_everything_a_deploy_needs(devstack: Devstack) -> None:
    docs = kustomize(devstack)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Namespace", APP_NAMESPACE),
        ("Namespace", CHAOS_NAMESPACE),
        ("Deployment", "chaos-demo"),
        ("Service", "web"),
        ("Ingress", "web"),
        ("PodDisruptionBudget", "web"),
        ("PodDisruptionBudget", "chaos-demo"),
        ("StatefulSet", "postgres"),
        ("NetworkPolicy", "default-deny"),
        ("RoleBinding", "infra-chaos-app"),
    } <= kinds
    # Secrets are created by hand from the template, never rendered from the repo.
    assert not [d for d in docs if d["kind"] == "Secret"]
    templates = pod_templates(docs)
    replicas = {
        d["metadata"]["name"]: d["spec"]["replicas"]
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet"} and d["metadata"]["name"] in templates
    }
    assert replicas == WORKLOADS
    for name, template in templates.items():
        spec = template["spec"]
        token_mounted = any(
            "serviceAccountToken" in source
            for volume in spec.get("volumes", [])
            for source in volume.get("projected", {}).get("sources", [])
        )
        # The apiserver token only where the apiserver is used, and never the automatic one.
        assert spec["automountServiceAccountToken"] is False, name
        assert token_mounted == (name in {"web", "watcher"}), name
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert container["resources"]["limits"], name
    # The image's user is the one the pods run as (Dockerfile USER == runAsUser).
    user = next(
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    )
    for name in ("web", "poller", "watcher"):
        pod_security = templates[name]["spec"]["securityContext"]
        assert user == f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}", name
    web = templates["web"]["spec"]["containers"][0]
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The ingress refuses request bodies larger than the app accepts (explicitly: without
    # the annotation ingress-nginx lets 1 MiB through).
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    body_size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert nginx_size(body_size) == settings.REQUEST_BODY_MAX_BYTES
    # The demo's budget covers exactly the demo Deployment's pods, one down at a time.
    demo = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "chaos-demo"
    )
    (pdb,) = [
        d
        for d in docs
        if d["kind"] == "PodDisruptionBudget" and d["metadata"]["namespace"] == CHAOS_NAMESPACE
    ]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == demo["spec"]["selector"]
    rolebinding = next(d for d in docs if d["metadata"]["name"] == "infra-chaos-app")
    assert rolebinding["metadata"]["namespace"] == CHAOS_NAMESPACE
    assert rolebinding["subjects"] == [
        {"kind": "ServiceAccount", "name": "infra-chaos", "namespace": APP_NAMESPACE}
    ]


def test_apply_passes_restricted_pod_security_and_the_app_account_is_confined(
    devstack: Devstack, app_namespace: None, tmp_path: Path
) -> None:
    labels = json.loads(devstack.kubectl("get", "namespace", APP_NAMESPACE, "-o", "json").stdout)[
        "metadata"
    ]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    # 1. The whole of k8s/, server-side dry run: valid, and no Pod Security warning.
    dry = devstack.kubectl("apply", "-k", str(ROOT / "k8s"), "--dry-run=server", check=False)
    assert dry.returncode == 0, dry.stderr
    assert "PodSecurity" not in dry.stderr, dry.stderr

    # 2. For real. The controllers create every replica's pod, so admission let them in.
    devstack.kubectl("apply", "-k", str(ROOT / "k8s"))
    deadline = time.monotonic() + 60
    while True:
        pods = json.loads(devstack.kubectl("-n", APP_NAMESPACE, "get", "pods", "-o", "json").stdout)
        counts: dict[str, int] = {}
        for pod in pods["items"]:
            component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
            counts[component] = counts.get(component, 0) + 1
        if counts == WORKLOADS or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert counts == WORKLOADS

    # 3. Each pod template, as the Pod a controller would create, is admitted under
    #    "restricted" enforcement; the control case shows enforcement is really on.
    templates = pod_templates(kustomize(devstack))
    for name, template in templates.items():
        assert server_dry_run_pod(devstack, name, template, tmp_path / f"{name}.json") == "", name
    loose = json.loads(json.dumps(templates["web"]))
    del loose["spec"]["securityContext"]["runAsNonRoot"]
    del loose["spec"]["containers"][0]["securityContext"]["capabilities"]
    refused = server_dry_run_pod(devstack, "loose", loose, tmp_path / "loose.json")
    assert 'violates PodSecurity "restricted:latest"' in refused

    # 4. The app's ServiceAccount, with a short-lived token of its own (TokenRequest).
    token = devstack.kubectl(
        "-n", APP_NAMESPACE, "create", "token", "infra-chaos", "--duration=10m"
    ).stdout.strip()
    kubeconfig = token_kubeconfig(devstack, token, tmp_path / "app-kubeconfig")
    whoami = as_app(devstack, kubeconfig, "auth", "whoami", "-o", "json")
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == APP_ACCOUNT

    def can(verb: str, resource: str, namespace: str) -> str:
        # `auth can-i` is a SelfSubjectAccessReview; it exits 1 on "no". A subresource is
        # its own flag (`pods/eviction` would read as a pod named eviction).
        resource, _, subresource = resource.partition("/")
        extra = [f"--subresource={subresource}"] if subresource else []
        args = ["auth", "can-i", verb, resource, *extra, "-n", namespace]
        return as_app(devstack, kubeconfig, *args).stdout.strip()

    assert can("create", "pods/eviction", CHAOS_NAMESPACE) == "yes"
    assert can("watch", "pods", CHAOS_NAMESPACE) == "yes"
    assert can("list", "events", CHAOS_NAMESPACE) == "yes"
    # Evict, never delete: a delete would skip the disruption budget, which it may not touch.
    assert can("delete", "pods", CHAOS_NAMESPACE) == "no"
    assert can("patch", "poddisruptionbudgets.policy", CHAOS_NAMESPACE) == "no"
    assert can("create", "pods/eviction", APP_NAMESPACE) == "no"
    assert can("delete", "pods", APP_NAMESPACE) == "no"
    assert can("get", "secrets", CHAOS_NAMESPACE) == "no"
    assert can("get", "secrets", APP_NAMESPACE) == "no"
    assert can("delete", "deployments", CHAOS_NAMESPACE) == "no"
    assert can("delete", "pods", "kube-system") == "no"
