from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache

from chaos import kube
from tests.chaos.fakes import FakeApi, three_healthy


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    # Rate-limit counters and remembered frames live in the (LocMem) cache: never let one
    # test spend another's budget.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    """The Kubernetes seam's client factory returns this fake: three healthy pods."""
    api = FakeApi(pods=three_healthy())
    monkeypatch.setattr(kube, "core_api", lambda: api)
    return api
