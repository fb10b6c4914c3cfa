"""`python manage.py watch_pods`: the chaos namespace, live, for every viewer.

A Kubernetes watch (list once, then watch from the list's resourceVersion), not polling:
a pod turning Terminating reaches the page as fast as the apiserver tells us. Each step
is one bounded watch call, so the worker loop renews its leader lock between calls; a
410 Gone re-lists, a silent stream times out and reconnects from where it was.

Every change publishes a `pods` frame. As a chaos kill heals, each phase that ends (the
replacement created, scheduled, started, Ready; the victim gone) updates the kill's
timeline (chaos/timeline.py) and a `chaos` frame tells everyone; when the replacement is
Ready, the frame says how fast Kubernetes healed. The namespace's Kubernetes Events,
narrated, ride along in the pods frame (`events`), fed by a second watch on a thread
(chaos/eventwatch.py).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from chaos import kube
from chaos.eventwatch import EventWatch
from chaos.models import ChaosEvent
from chaos.narration import EventFeed
from chaos.recovery import MAX_TRACKED, PodState, Progress, Recovery, RecoveryTracker
from chaos.selectors import chaos_event_frame, kills_to_follow, refresh_history
from chaos.services import chaos_event_record_phases, chaos_event_record_recovery
from live.nodes import node_label
from live.publish import publish
from runtime.metrics import RECOVERY_SECONDS
from runtime.worker import WorkerCommand

log = logging.getLogger(__name__)

# Server-side duration of one watch call. Short, so a watcher that lost its lock notices
# within seconds (the lock itself is renewed by WorkerCommand's heartbeat meanwhile).
WATCH_TIMEOUT_S = 5
MAX_BACKOFF_S = 4.0
# A watch that resumes after being away longer than this first replays what it missed:
# its events within REPLAY_S of the reconnect are not taken as the moment of their change.
WATCH_GAP = timedelta(seconds=0.25)
REPLAY_S = timedelta(seconds=0.5)


class Command(WorkerCommand):
    help = "Watches the chaos namespace, publishes pod changes and times recoveries."
    lock_name = "watcher"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resource_version: str | None = None
        # The last moment the watch was known to be connected and up to date.
        self.contact: datetime | None = None
        self.state = PodState()
        self.tracker = RecoveryTracker()
        self.failures = 0
        # A frame that could not be published (Redis blip) is retried at the next step.
        self.unpublished = False
        self.feed = EventFeed()
        self.event_watch: EventWatch | None = None
        # The events thread publishes pods frames too; the state is changed and read
        # under this lock so a frame is never built from a half-applied event.
        self.lock = threading.RLock()

    def handle(self, *args: Any, **options: Any) -> None:
        # One loop on one thread: here, unlike in the web process (settings.DATABASES), a
        # persistent connection is simply reused step after step; close_old_connections()
        # at each step retires it after WORKER_CONN_MAX_AGE or when it breaks. Set before
        # the first query, on the dict every connection of this process reads.
        for alias in connections:
            connections[alias].settings_dict["CONN_MAX_AGE"] = settings.WORKER_CONN_MAX_AGE
        super().handle(*args, **options)

    def interval(self) -> float:
        # Back off after failures (apiserver down, RBAC missing), but briefly: a kill
        # should still be shown within seconds once the apiserver answers again.
        return 0.0 if self.failures == 0 else min(MAX_BACKOFF_S, 0.5 * 2**self.failures)

    def on_leadership_lost(self) -> None:
        # Another replica leads now; what we knew may be stale by the time we lead again.
        if self.event_watch is not None:
            self.event_watch.stop()
            self.event_watch = None
        with self.lock:
            self.resource_version = None
            self.state = PodState()
            self.tracker = RecoveryTracker()
            self.feed = EventFeed()

    def _ensure_event_watch(self) -> None:
        if self.event_watch is not None:
            return
        watch: EventWatch | None = None

        def on_change() -> None:
            # A thread from a lost leadership may still be reading its last watch call:
            # it must never publish (the state it would publish from has been reset).
            with self.lock:
                if watch is not None and watch is self.event_watch:
                    self._publish_pods()

        watch = EventWatch(
            namespace=settings.CHAOS_NAMESPACE,
            feed=self.feed,
            on_change=on_change,
            stopped=self.stopping.is_set,
        )
        self.event_watch = watch
        watch.start()

    def step(self) -> bool:
        close_old_connections()
        self._ensure_event_watch()
        changed = False
        try:
            api = kube.core_api()
            if self.resource_version is None:
                self._relist(api)
                changed = True
            else:
                changed = self._watch(api)
            self.failures = 0
        except kube.KubeError as exc:
            if exc.reason == "gone":
                log.info("watch_pods: resourceVersion expired (410 Gone), re-listing")
                self.resource_version = None
            elif exc.reason == "timeout":
                # A stalled stream: reconnect from the last version we saw.
                log.info("watch_pods: watch stalled, reconnecting")
            else:
                self.failures += 1
                self.resource_version = None
                log.warning("watch_pods: %s", exc)
        self._settle_recoveries()
        if self.unpublished:
            self._publish_pods()
        return changed

    def _relist(self, api: Any) -> None:
        snapshot = kube.list_pods(
            api, namespace=settings.CHAOS_NAMESPACE, selector=settings.CHAOS_SELECTOR
        )
        with self.lock:
            self.state.reset(snapshot.pods, now=timezone.now())
            self.resource_version = snapshot.resource_version
            self.contact = timezone.now()
            self._publish_pods()

    def _watch(self, api: Any) -> bool:
        assert self.resource_version is not None
        changed = False
        started = timezone.now()
        away = self.contact is None or started - self.contact > WATCH_GAP
        for event in kube.watch_pods(
            api,
            namespace=settings.CHAOS_NAMESPACE,
            selector=settings.CHAOS_SELECTOR,
            resource_version=self.resource_version,
            timeout_s=WATCH_TIMEOUT_S,
        ):
            self.resource_version = event.resource_version or self.resource_version
            now = timezone.now()
            exact = not away or now - started > REPLAY_S
            self.contact = now
            with self.lock:
                applied = event.pod is not None and self.state.apply(
                    event.type, event.pod, now=now, exact=exact
                )
                told = event.pod is not None and self.feed.note_eviction(event.pod, now)
                if applied or told:
                    self._publish_pods()
            if applied:
                changed = True
                self._settle_recoveries()
            if self.stopping.is_set():
                break
        else:
            # The call ran its course: connected, and told everything, until now.
            self.contact = timezone.now()
        return changed

    def _publish_pods(self) -> None:
        with self.lock:
            frame = self.state.pod_list(
                namespace=settings.CHAOS_NAMESPACE, now=timezone.now(), node_label=node_label
            )
            frame["events"] = self.feed.recent()
            try:
                publish("pods", frame)
                self.unpublished = False
            except Exception:
                self.unpublished = True
                log.warning("watch_pods: could not publish pods", exc_info=True)

    def _settle_recoveries(self) -> None:
        """Learns of new kills, and records and announces how each one heals."""
        now = timezone.now()
        self.tracker.track(
            kills_to_follow(since=now - MAX_TRACKED, following=self.tracker.following())
        )
        for progress in self.tracker.expire(now=now, state=self.state):
            log.info(
                "watch_pods: stopped following kill %s; its timeline stays partial",
                progress.event_id,
            )
            self._store(progress)
        for recovery in self.tracker.recoveries(self.state):
            self._record(recovery)
        # A newly learnt kill's first timeline is its announcement. It comes from here, not
        # from the web process: with many viewers each frame is a fan-out, and the pods
        # frame showing the victim Terminating (published first) is the one that must not
        # wait.
        for progress in self.tracker.progress(self.state):
            self._store(progress)

    def _store(self, progress: Progress) -> None:
        event = chaos_event_record_phases(
            event_id=progress.event_id, phases=progress.phases, healed=progress.healed
        )
        if event is not None:
            self._announce(event)

    def _record(self, recovery: Recovery) -> None:
        event = chaos_event_record_recovery(recovery=recovery)
        if event is None:
            return
        RECOVERY_SECONDS.observe(recovery.recovery_s)
        log.info("watch_pods: %s healed in %.2f s", event.pod_name, recovery.recovery_s)
        self._announce(event)

    def _announce(self, event: ChaosEvent) -> None:
        # Recent kills, their bars and the 24 h recovery summary are the cached history a
        # page view reads: recomputed (in SQL) and cached here, where they change, then sent.
        frame = {**chaos_event_frame(event=event), "recovery": refresh_history()["recovery"]}
        try:
            publish("chaos", frame)
        except Exception:
            # Not retried: the event is in the history the page loads on reconnect.
            log.warning("watch_pods: could not publish chaos event %s", frame["id"], exc_info=True)
