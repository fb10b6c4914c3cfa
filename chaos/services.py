"""The chaos write path: choose a victim, evict it, record what happened.

Two guards, each doing what it is best at:

- Kubernetes keeps the demo up. A kill is an eviction, and the apiserver checks the
  namespace's PodDisruptionBudget atomically with it: whoever else evicts at the same
  moment (a second copy of this app with its own Redis, a drain), at most the budget's
  pods are ever down. When it says no, that is recorded as its own outcome.
- The app keeps the presses orderly: one press at a time, cluster-wide, under a lock in
  the shared Redis (redis-py's Lock: a token, a TTL, an atomic release). Django runs
  each sync view in a thread of its own, so presses race inside one process as well as
  across replicas. A press that finds the lock taken is answered "busy" at once (it does
  not wait, so a crowd never piles up threads behind one slow apiserver call); a lock
  store that cannot be reached refuses the press.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from django.db import DatabaseError
from django.utils import timezone
from django.utils.crypto import salted_hmac
from redis.exceptions import LockError, LockNotOwnedError

from chaos import kube
from chaos.models import ChaosEvent
from chaos.pods import parse_selector
from chaos.recovery import Recovery
from chaos.selectors import refresh_history
from chaos.timeline import Phases
from chaos.victims import Refusal, choose_victim
from runtime.redisclient import redis_client

log = logging.getLogger(__name__)

KILL_LOCK_KEY = "infra:chaos:kill-lock"
# The slowest one apiserver call may be: its connect plus its read timeout.
CALL_MAX_S = kube.TIMEOUT[0] + kube.TIMEOUT[1]
# Held across a list and an eviction, each bounded by CALL_MAX_S; the rest is slack. If
# a web process dies holding it, presses are "busy" for at most this long.
KILL_LOCK_TTL_S = 20


class KillLockBusy(Exception):
    """Another press (in this process or any other) is running list -> guard -> evict."""


class KillLockUnavailable(Exception):
    """The lock store (Redis) could not be asked: the press must be refused."""


def lock_store() -> redis.Redis:
    """Where the kill lock lives: the shared Redis (unit tests put a fake one here)."""
    return redis_client()


@contextmanager
def kill_lock() -> Iterator[float]:
    """Holds the cluster-wide kill lock; yields the monotonic time until which it is
    certainly still ours (its TTL, counted from before we asked for it)."""
    lock = lock_store().lock(
        KILL_LOCK_KEY, timeout=KILL_LOCK_TTL_S, blocking=False, thread_local=False
    )
    asked = time.monotonic()
    try:
        taken = lock.acquire()
    except (redis.RedisError, OSError) as exc:
        raise KillLockUnavailable(str(exc)) from exc
    if not taken:
        raise KillLockBusy
    try:
        yield asked + KILL_LOCK_TTL_S
    finally:
        try:
            # Atomic: deletes the key only if it still holds our token.
            lock.release()
        except LockNotOwnedError:
            # Expired while held (and perhaps taken by the next press): left alone.
            log.warning("chaos: the kill lock expired while held")
        except (LockError, redis.RedisError, OSError):
            log.warning("chaos: could not release the kill lock; its TTL will", exc_info=True)


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
    spend: Callable[[], None] = lambda: None,
) -> ChaosEvent:
    """Evicts one random eligible pod, or refuses, or fails; returns the saved event.

    `spend` is called once the kill lock is won, before the cluster is asked: the
    caller's cluster-wide budget of kills, which presses answered "busy" never reach.
    Whatever it raises propagates, with nothing asked and nothing written.

    Raises KillLockBusy while another press holds the kill lock and KillLockUnavailable
    when the lock store is down; neither touched the cluster or wrote a row. The event
    row is written once, after the outcome is known and the lock is released, so nobody
    ever sees a half-done attempt. Raises django.db.DatabaseError only if the database
    is down."""
    victim = None
    refusal: Refusal | None = None
    try:
        # Built before the lock: the first call loads the client (slow) on its own time.
        api = kube.core_api()
        with kill_lock() as deadline:
            spend()
            started = time.monotonic()
            snapshot = kube.list_pods(api, namespace=namespace, selector=selector)
            listed = time.monotonic()
            choice = choose_victim(
                pods=snapshot.pods, namespace=namespace, labels=parse_selector(selector)
            )
            if isinstance(choice, Refusal):
                refusal = choice
            else:
                victim = choice
                if listed + CALL_MAX_S >= deadline:
                    # Not enough lock left to cover the slowest eviction: another press
                    # could take the lock mid-call. A list can outlast CALL_MAX_S, since
                    # the read timeout bounds each read of the answer, not the whole call.
                    raise kube.KubeError("timeout")
                # Taken before the call: the replacement can only be created after the
                # eviction, so the recovery timeline never starts after it exists.
                deleted_at = timezone.now()
                kube.evict_pod(
                    api,
                    namespace=namespace,
                    name=victim.name,
                    uid=victim.uid,
                    resource_version=victim.resource_version,
                )
                evicted = time.monotonic()
    except kube.KubeError as exc:
        if victim is not None and exc.reason == "disruption_budget":
            # Kubernetes itself said no: one more pod down would break the budget.
            outcome, reason = ChaosEvent.Outcome.BUDGET_REFUSED, exc.reason
        elif victim is not None and exc.reason in {"conflict", "not_found"}:
            # The apiserver refused our preconditions: between our list and our eviction
            # the pod changed (someone else's kill, a replacement) or went away.
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
    if victim is None:
        # The look said no (`refusal` is set whenever no victim was chosen).
        reason = refusal.reason if refusal is not None else "no_eligible_pod"
        return _record(outcome=ChaosEvent.Outcome.REFUSED, reason=reason, client_hash=client_hash)
    event = _record(
        outcome=ChaosEvent.Outcome.DELETED,
        pod_name=victim.name,
        pod_uid=victim.uid,
        replicaset_uid=victim.replicaset_uid or "",
        client_hash=client_hash,
        deleted_at=deleted_at,
    )
    try:
        # The page's "recent kills" changed: recompute the cached history now, so page
        # views keep reading the cache instead of the table.
        refresh_history()
    except DatabaseError:
        # The kill is recorded; the cached history catches up when it expires.
        log.warning("chaos: could not refresh the history", exc_info=True)
    # The apiserver's and the database's share of the press, for whoever reads the logs.
    log.info(
        "chaos: evicted pod %s (list %.0f ms, evict %.0f ms, record %.0f ms)",
        victim.name,
        (listed - started) * 1000,
        (evicted - listed) * 1000,
        (time.monotonic() - evicted) * 1000,
    )
    return event


def chaos_event_record_recovery(*, recovery: Recovery) -> ChaosEvent | None:
    """Stores how a kill healed; returns the updated event, or None when it was already
    recorded. Conditional, so if another watcher (an old leader) got there first nothing
    is written twice, and the caller announces nothing twice."""
    updated = ChaosEvent.objects.filter(pk=recovery.event_id, ready_at__isnull=True).update(
        replacement_uid=recovery.replacement_uid,
        replacement_name=recovery.replacement_name,
        replacement_created_at=recovery.replacement_created_at,
        scheduled_at=recovery.scheduled_at,
        ready_at=recovery.ready_at,
        recovery_s=recovery.recovery_s,
        phases=recovery.phases,
    )
    return ChaosEvent.objects.get(pk=recovery.event_id) if updated else None


def chaos_event_record_phases(*, event_id: int, phases: Phases, healed: bool) -> ChaosEvent | None:
    """Stores a kill's timeline as it grows; returns the updated event, or None when the
    event is no longer in the state the timeline was built for (`healed` or not): an old
    leader's late in-progress timeline never overwrites the healed one."""
    updated = ChaosEvent.objects.filter(pk=event_id, ready_at__isnull=not healed).update(
        phases=phases
    )
    return ChaosEvent.objects.get(pk=event_id) if updated else None
