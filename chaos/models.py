"""One row per chaos attempt that got past the rate limit. Visitors are kept only as a keyed
hash of their rate-limit identity, never their address."""

from __future__ import annotations

from django.db import models


class ChaosEvent(models.Model):
    class Outcome(models.TextChoices):
        # The apiserver accepted the eviction: the pod is on its way out (the stored name
        # predates evictions; a kill is an eviction now).
        DELETED = "deleted"
        # The app's own look refused (a pod already terminating, none eligible) or the
        # apiserver refused the preconditions (the pod changed since the look).
        REFUSED = "refused"
        # The apiserver refused the eviction: the PodDisruptionBudget allows no more pods
        # down right now. Kubernetes' answer, not the app's.
        BUDGET_REFUSED = "budget_refused"
        FAILED = "failed"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, db_index=True)
    # Why it was refused or failed (e.g. pod_terminating, forbidden, timeout); empty
    # when deleted.
    reason = models.CharField(max_length=64, blank=True)
    pod_name = models.CharField(max_length=253, blank=True)
    pod_uid = models.CharField(max_length=64, blank=True, db_index=True)
    # HMAC of the rate-limit identity (the IPv4 address or the IPv6 /64): lets staff see
    # that one visitor clicked a lot without ever storing who they are.
    client_hash = models.CharField(max_length=64, db_index=True)
    # The ReplicaSet that owned the victim: its replacement is the next pod that same
    # ReplicaSet creates, which is how the watcher pairs kills with new pods.
    replicaset_uid = models.CharField(max_length=64, blank=True)

    # Recovery timeline, filled by the pod watcher. deleted_at is taken just before the
    # eviction call so that a replacement is never created "before" the kill it replaces.
    deleted_at = models.DateTimeField(null=True, blank=True)
    replacement_uid = models.CharField(max_length=64, blank=True, db_index=True)
    replacement_name = models.CharField(max_length=253, blank=True)
    replacement_created_at = models.DateTimeField(null=True, blank=True)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    recovery_s = models.FloatField(null=True, blank=True)
    # Where the recovery's seconds went (chaos/timeline.py's `Phases`): filled and updated
    # by the watcher as each phase ends, kept when the victim's termination comes in after
    # the heal, and null for events that were not kills (or predate the field).
    phases = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.outcome} {self.pod_name or '-'} at {self.at:%Y-%m-%d %H:%M:%S}"
