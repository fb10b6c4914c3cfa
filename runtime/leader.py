"""Leader election on Redis: redis-py's Lock, a key with a TTL that only its holder (its
token) can extend or release.

The poller and the pod watcher each run in several replicas for availability, but exactly
one of each may do the work, so Prometheus and the apiserver see one client, not N.
"""

from __future__ import annotations

import contextlib

import redis
from redis.exceptions import LockNotOwnedError

from runtime.redisclient import redis_client


class LeaderLock:
    def __init__(self, name: str, *, ttl_s: float, client: redis.Redis | None = None) -> None:
        self.key = f"infra:leader:{name}"
        # Not thread-local: the worker's loop takes the lock and its heartbeat thread
        # renews it, so both must know the same token.
        self.lock = (client or redis_client()).lock(
            self.key, timeout=ttl_s, blocking=False, thread_local=False
        )
        self.held = False

    def acquire_or_renew(self) -> bool:
        """Returns whether this process leads now. Redis errors count as not leading."""
        try:
            if self.held:
                # Back to a full TTL, atomically, only if the key still holds our token: a
                # leader that stalled past its TTL never extends a standby's lock.
                with contextlib.suppress(LockNotOwnedError):
                    self.lock.reacquire()
                    return True
            self.held = bool(self.lock.acquire())
        except redis.RedisError:
            self.held = False
        return self.held

    def release(self) -> None:
        if self.held:
            # Deletes the key only if it still holds our token; on a Redis error (or a
            # lock already lost) the TTL frees it anyway.
            with contextlib.suppress(redis.RedisError):
                self.lock.release()
            self.held = False
