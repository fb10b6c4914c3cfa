"""The narrated events feed's own watch, on a thread beside the pod watch.

Pod changes must reach viewers the moment they happen, so the pod watch never waits for
events; Events change at about the same moments, so their watch runs alongside it and
asks for a pods frame (which carries the feed) whenever the shown feed changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from chaos import kube
from chaos.narration import EventFeed

log = logging.getLogger(__name__)

# Events matter less than pods: longer watch calls, and a long pause when the Role does
# not allow reading them (someone may add the rule; nobody needs a retry storm).
WATCH_TIMEOUT_S = 30
FORBIDDEN_PAUSE_S = 60.0
MAX_BACKOFF_S = 30.0


class EventWatch:
    def __init__(
        self,
        *,
        namespace: str,
        feed: EventFeed,
        on_change: Callable[[], None],
        stopped: Callable[[], bool],
    ) -> None:
        self.namespace = namespace
        self.feed = feed
        self.on_change = on_change
        self.stopped = stopped
        self.resource_version: str | None = None
        self.failures = 0
        self._wake = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="event-watch", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self.stopped() and not self._wake.is_set():
            pause = self.step()
            if pause:
                self._wake.wait(pause)

    def step(self) -> float:
        """One list or one watch call; returns how long to pause before the next."""
        try:
            api = kube.core_api()
            if self.resource_version is None:
                snapshot = kube.list_events(api, namespace=self.namespace)
                self.feed.reset(snapshot.items)
                self.resource_version = snapshot.resource_version
                self.on_change()
            else:
                for kind, raw, version in kube.watch_events(
                    api,
                    namespace=self.namespace,
                    resource_version=self.resource_version,
                    timeout_s=WATCH_TIMEOUT_S,
                ):
                    self.resource_version = version or self.resource_version
                    if kind != "BOOKMARK" and self.feed.apply(kind, raw):
                        self.on_change()
                    if self.stopped() or self._wake.is_set():
                        break
            self.failures = 0
            return 0.0
        except kube.KubeError as exc:
            if exc.reason == "gone":
                self.resource_version = None
                return 0.0
            if exc.reason == "timeout":
                return 0.0
            self.resource_version = None
            if exc.reason == "forbidden":
                # Reading events is optional (the Role may not allow it): hide the feed.
                log.info("watch_pods: events not readable (%s); feed hidden", exc)
                self.feed.unavailable()
                self.on_change()
                return FORBIDDEN_PAUSE_S
            self.failures += 1
            log.warning("watch_pods: events: %s", exc)
            return float(min(MAX_BACKOFF_S, 0.5 * 2**self.failures))
        except Exception:
            # A thread that dies would freeze the feed silently; log and carry on.
            log.exception("watch_pods: events watch failed")
            self.resource_version = None
            return MAX_BACKOFF_S
