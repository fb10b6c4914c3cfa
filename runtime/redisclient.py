"""The shared Redis, for the code that talks to it directly rather than through the cache
or the channel layer: the leader locks, the kill lock, the readiness probe."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # Short timeouts: every caller has a fallback (not leading, 503), none should hang.
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def redis_client() -> redis.Redis:
    """The client for REDIS_URL (one connection pool per process)."""
    return _client(settings.REDIS_URL)
