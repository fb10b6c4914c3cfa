"""Leader election on Redis: a lock with a TTL that only its holder can renew or release.

The poller and the pod watcher each run in several replicas for availability, but exactly
one of each may do the work, so Prometheus and the apiserver see one client, not N.
"""

from __future__ import annotations

import contextlib
import secrets

import redis

from infra_site.redisclient import redis_client

# Renew and release only if we still hold the lock: a leader that stalled past its TTL
# must not extend or delete the lock a standby has taken over since.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then"
    " return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then"
    " return redis.call('del', KEYS[1]) else return 0 end"
)


class LeaderLock:
    def __init__(self, name: str, *, ttl_s: float, client: redis.Redis | None = None) -> None:
        self.key = f"infra:leader:{name}"
        self.ttl_ms = int(ttl_s * 1000)
        self.token = secrets.token_hex(16)
        self.client = client or redis_client()
        self.held = False

    def acquire_or_renew(self) -> bool:
        """Returns whether this process leads now. Redis errors count as not leading."""
        try:
            if self.held and self.client.eval(_RENEW, 1, self.key, self.token, str(self.ttl_ms)):
                return True
            self.held = bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        except redis.RedisError:
            self.held = False
        return self.held

    def release(self) -> None:
        if self.held:
            # On a Redis error the TTL frees the lock anyway.
            with contextlib.suppress(redis.RedisError):
                self.client.eval(_RELEASE, 1, self.key, self.token)
            self.held = False
