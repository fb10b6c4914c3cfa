"""Staff read each kill's recovery timeline in the admin, in words, partial ones as such."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from chaos import timeline
from chaos.models import ChaosEvent
from chaos.timeline import MISSED
from tests.chaos.fakes import T0

pytestmark = pytest.mark.django_db


def at(seconds: float) -> timeline.Mark:
    return timeline.seen(T0 + timedelta(seconds=seconds))


def test_staff_see_each_kill_s_phases_and_which_were_not_seen() -> None:
    whole = timeline.build(
        killed=T0,
        marks={"created": at(0.06), "scheduled": at(0.36), "started": at(2.62), "ready": at(2.62)},
        terminated=at(1.59),
    )
    partial = timeline.build(
        killed=T0,
        marks={"created": MISSED, "scheduled": MISSED, "started": at(2.0), "ready": at(2.5)},
        terminated=MISSED,
    )
    one = ChaosEvent.objects.create(
        outcome="deleted", pod_name="web-1", client_hash="h", recovery_s=2.62, phases=whole
    )
    ChaosEvent.objects.create(
        outcome="deleted", pod_name="web-2", client_hash="h", recovery_s=2.5, phases=partial
    )
    client = Client()
    client.force_login(User.objects.create_superuser("staff", "s@example.com", "pw"))

    listing = client.get(reverse("admin:chaos_chaosevent_changelist")).text
    assert "controller 0.06 s · scheduler 0.30 s · kubelet 2.26 s · probe 0.00 s" in listing
    assert "evicted pod&#x27;s shutdown 1.59 s" in listing
    assert "probe 0.50 s" in listing
    assert "(partial: created, scheduled, started, terminated not seen)" in listing
    detail = client.get(reverse("admin:chaos_chaosevent_change", args=[one.pk])).text
    assert "kubelet 2.26 s" in detail
