"""The leader lock (redis-py's Lock) on an in-process Redis: one leader, renewals only by
the holder, a lapsed leader never extends or frees a successor's lock."""

from __future__ import annotations

import fakeredis
import redis

from runtime.leader import LeaderLock
from stackkit.stack import free_port


def pair() -> tuple[fakeredis.FakeRedis, LeaderLock, LeaderLock]:
    store = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    return store, LeaderLock("w", ttl_s=5, client=store), LeaderLock("w", ttl_s=5, client=store)


def test_one_leads_and_renewing_restores_the_whole_ttl() -> None:
    store, first, second = pair()
    assert first.acquire_or_renew() is True
    assert second.acquire_or_renew() is False
    store.pexpire(first.key, 100)
    assert first.acquire_or_renew() is True
    assert store.pttl(first.key) > 4000
    assert second.acquire_or_renew() is False


def test_a_leader_that_lapsed_neither_renews_nor_frees_the_successors_lock() -> None:
    store, first, second = pair()
    assert first.acquire_or_renew()
    store.delete(first.key)  # its TTL ran out while it stalled
    assert second.acquire_or_renew()
    successor = store.get(second.key)
    # The old leader still believes it holds the lock: its renewal finds another token.
    assert first.acquire_or_renew() is False
    assert store.get(second.key) == successor
    first.held = True
    first.release()
    assert store.get(second.key) == successor
    second.release()
    assert store.get(second.key) is None


def test_redis_down_counts_as_not_leading() -> None:
    lock = LeaderLock("w", ttl_s=5, client=redis.Redis(port=free_port(), socket_timeout=0.2))
    assert lock.acquire_or_renew() is False
    lock.release()
