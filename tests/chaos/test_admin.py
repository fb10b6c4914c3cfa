from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from chaos.models import ChaosEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def event() -> ChaosEvent:
    return ChaosEvent.objects.create(
        outcome="deleted", pod_name="chaos-demo-abc-x1", pod_uid="u1", client_hash="f" * 64
    )


def test_visitors_cannot_reach_the_history(event: ChaosEvent) -> None:
    response = Client().get(reverse("admin:chaos_chaosevent_changelist"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_staff_see_the_history_filtered_and_searchable_but_cannot_change_it(
    event: ChaosEvent,
) -> None:
    ChaosEvent.objects.create(outcome="refused", reason="not_enough_healthy", client_hash="e" * 64)
    client = Client()
    client.force_login(User.objects.create_superuser("staff", "s@example.com", "pw"))
    changelist = reverse("admin:chaos_chaosevent_changelist")
    assert "chaos-demo-abc-x1" in client.get(changelist).text
    filtered = client.get(changelist, {"outcome__exact": "refused"}).text
    assert "not_enough_healthy" in filtered
    assert "chaos-demo-abc-x1" not in filtered
    assert "chaos-demo-abc-x1" in client.get(changelist, {"q": "abc-x1"}).text
    assert client.get(reverse("admin:chaos_chaosevent_add")).status_code == 403
    change = reverse("admin:chaos_chaosevent_change", args=[event.pk])
    assert client.post(change, {"outcome": "failed"}).status_code == 403
    delete = reverse("admin:chaos_chaosevent_delete", args=[event.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    assert event.outcome == "deleted"
