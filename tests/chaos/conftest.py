from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from django.core.cache import cache

from chaos import kube, services
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


@pytest.fixture(autouse=True)
def lock_redis(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    """The kill lock's Redis, in process: redis-py's Lock runs its own Lua scripts, which
    fakeredis runs with lupa (the real Redis runs them in tests/integration)."""
    store = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    monkeypatch.setattr(services, "lock_store", lambda: store)
    return store
