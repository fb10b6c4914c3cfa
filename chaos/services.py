"""The chaos write path: choose a victim, delete it, record what happened."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from django.utils import timezone
from django.utils.crypto import salted_hmac
from kubernetes import client

from chaos import kube
from chaos.models import ChaosEvent
from chaos.pods import parse_selector
from chaos.victims import SYSTEM_RANDOM, Refusal, choose_victim

log = logging.getLogger(__name__)


def client_hash(identity: str) -> str:
    """What the database keeps of a visitor (their rate-limit bucket): an HMAC keyed with
    SECRET_KEY, so staff can see one visitor clicking a lot, but nobody can test guesses
    of who it was without the key."""
    return salted_hmac("chaos.client", identity, algorithm="sha256").hexdigest()


def _record(**fields: object) -> ChaosEvent:
    # One INSERT once the outcome is known: nobody (the watcher included) ever reads a
    # half-done attempt. Viewers hear of the kill from the pod watcher, which announces
    # it right after the frame that shows the victim Terminating.
    return ChaosEvent.objects.create(**fields)


def chaos_unleash(
    *,
    client_hash: str,
    namespace: str,
    selector: str,
    min_ready: int,
    api_factory: Callable[[], client.CoreV1Api] | None = None,
    rng: random.Random = SYSTEM_RANDOM,
) -> ChaosEvent:
    """Deletes one random eligible pod, or refuses, or fails; returns the saved event.

    The event row is written once, after the outcome is known, so nobody ever sees a
    half-done attempt. Raises django.db.DatabaseError only if the database is down."""
    victim = None
    try:
        api = (api_factory or kube.core_api)()
        started = time.monotonic()
        snapshot = kube.list_pods(api, namespace=namespace, selector=selector)
        listed = time.monotonic()
        choice = choose_victim(
            pods=snapshot.pods,
            namespace=namespace,
            labels=parse_selector(selector),
            min_ready=min_ready,
            rng=rng,
        )
        if isinstance(choice, Refusal):
            return _record(
                outcome=ChaosEvent.Outcome.REFUSED, reason=choice.reason, client_hash=client_hash
            )
        victim = choice
        # Taken before the call: the replacement can only be created after the deletion,
        # so the recovery timeline never starts after the replacement exists.
        deleted_at = timezone.now()
        kube.delete_pod(api, namespace=namespace, name=victim.name, uid=victim.uid)
        deleted = time.monotonic()
    except kube.KubeError as exc:
        if victim is not None and exc.reason in {"conflict", "not_found"}:
            # Between our list and our delete the pod was replaced or went away: a
            # disruption is already under way, which is what the guard exists to avoid.
            outcome, reason = ChaosEvent.Outcome.REFUSED, "victim_changed"
        else:
            outcome, reason = ChaosEvent.Outcome.FAILED, exc.reason
        log.warning("chaos: %s (%s)", outcome, exc)
        return _record(
            outcome=outcome,
            reason=reason,
            pod_name=victim.name if victim else "",
            pod_uid=victim.uid if victim else "",
            client_hash=client_hash,
        )
    event = _record(
        outcome=ChaosEvent.Outcome.DELETED,
        pod_name=victim.name,
        pod_uid=victim.uid,
        replicaset_uid=victim.replicaset_uid or "",
        client_hash=client_hash,
        deleted_at=deleted_at,
    )
    # The apiserver's and the database's share of the press, for whoever reads the logs.
    log.info(
        "chaos: deleted pod %s (list %.0f ms, delete %.0f ms, record %.0f ms)",
        victim.name,
        (listed - started) * 1000,
        (deleted - listed) * 1000,
        (time.monotonic() - deleted) * 1000,
    )
    return event
