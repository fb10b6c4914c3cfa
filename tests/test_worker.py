"""The leader heartbeat: renews while the loop lives, lets the lock lapse when it hangs."""

from __future__ import annotations

import threading
import time

from runtime.worker import WorkerCommand


class FakeLock:
    def __init__(self) -> None:
        self.held = True
        self.renewals = 0

    def acquire_or_renew(self) -> bool:
        self.renewals += 1
        return self.held


class Worker(WorkerCommand):
    lock_name = "test"
    lock_ttl_s = 0.2
    max_step_s = 0.5


def run_heartbeat(worker: Worker, lock: FakeLock, seconds: float) -> None:
    thread = threading.Thread(target=worker.heartbeat, args=(lock,))
    thread.start()
    time.sleep(seconds)
    worker.stopping.set()
    thread.join(timeout=2)


def test_a_live_leader_keeps_renewing_during_a_long_step() -> None:
    worker, lock = Worker(), FakeLock()
    # The step "takes" longer than the TTL but less than max_step_s.
    worker.progress_at = time.monotonic()
    run_heartbeat(worker, lock, 0.35)
    assert lock.held
    assert lock.renewals >= 3


def test_a_hung_leader_lets_the_lock_lapse() -> None:
    worker, lock = Worker(), FakeLock()
    worker.progress_at = time.monotonic() - 10
    run_heartbeat(worker, lock, 0.2)
    assert not lock.held
    assert lock.renewals == 0


def test_a_standby_is_not_renewed_by_the_heartbeat() -> None:
    worker, lock = Worker(), FakeLock()
    lock.held = False
    run_heartbeat(worker, lock, 0.2)
    assert lock.renewals == 0
