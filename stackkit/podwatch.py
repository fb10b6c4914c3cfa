"""A kubectl-style watch of the namespace the tests press in: what really got deleted.

The ground truth that chaos tests and the soak benchmark hold the app's answers against:
when each pod got its deletionTimestamp, when it was gone, whether it was evicted, and the
most pods that were terminating at any one moment.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes import config as kube_config

from chaos import kube
from chaos.pods import Pod
from stackkit.stack import SELECTOR, Devstack


@dataclass
class Terminations:
    """What a kubectl-style watch saw: when each pod got its deletionTimestamp, when it
    was gone, which carried DisruptionTarget / EvictionByEvictionAPI (evicted), and the
    most pods terminating at any one moment."""

    pods: dict[str, Pod] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    evicted: set[str] = field(default_factory=set)
    most: int = 0
    most_names: list[str] = field(default_factory=list)

    def apply(self, kind: str, pod: Pod, now: float) -> None:
        self.names[pod.uid] = pod.name
        if pod.evicted:
            self.evicted.add(pod.uid)
        if kind == "DELETED":
            self.pods.pop(pod.uid, None)
            self.gone.setdefault(pod.uid, now)
            self.since.setdefault(pod.uid, now)
        else:
            self.pods[pod.uid] = pod
            if pod.deleting:
                self.since.setdefault(pod.uid, now)
        terminating = [p.name for p in self.pods.values() if p.deleting]
        if len(terminating) > self.most:
            self.most, self.most_names = len(terminating), sorted(terminating)


class PodWatch:
    """Watches the test namespace as the admin on a thread, from a list taken at start."""

    def __init__(self, devstack: Devstack) -> None:
        api_client = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=devstack.admin_kubeconfig
        )
        self.api = client.CoreV1Api(api_client)
        self.namespace = devstack.namespace
        self.seen = Terminations()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        snapshot = kube.list_pods(self.api, namespace=self.namespace, selector=SELECTOR)
        for pod in snapshot.pods:
            self.seen.apply("ADDED", pod, time.monotonic())
        self.version = snapshot.resource_version
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                for event in kube.watch_pods(
                    self.api,
                    namespace=self.namespace,
                    selector=SELECTOR,
                    resource_version=self.version,
                    timeout_s=2,
                ):
                    self.version = event.resource_version or self.version
                    if event.pod is not None:
                        self.seen.apply(event.type, event.pod, time.monotonic())
        except BaseException as exc:
            self.error = exc

    def close(self) -> Terminations:
        self.stop.set()
        self.thread.join(timeout=15)
        if self.error is not None:
            raise self.error
        return self.seen
