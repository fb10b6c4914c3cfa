"""Garbage-collector tuning for a web process that holds thousands of websockets."""

from __future__ import annotations

import gc

# CPython's defaults are (700, 10, 10); why the first is larger: configure_gc.
GC_THRESHOLDS = (10_000, 10, 10)


def configure_gc() -> None:
    """Tunes the cyclic garbage collector of a web process for thousands of websockets.

    Each open websocket keeps ~170 GC-tracked objects alive (mostly daphne's, Twisted's
    and autobahn's), and every frame sent to every socket briefly allocates a few more.
    With the default thresholds those bursts promote short-lived objects into the oldest
    generation, so a full collection (all live objects: ~0.5 s at 5,000 sockets, ~0.1 s
    at 1,000) runs every few frames and every viewer waits for it; measured with
    bench/ws_fanout.py, p99 went from 380 ms to over 1 s at 5,000 viewers. A larger first
    threshold lets those bursts die young, and freezing what startup created (Django, the
    URL conf, the app's modules: ~170,000 objects that live as long as the process) keeps
    them out of every full collection. Full collections still run when the process's live
    objects grow by a quarter, so cyclic garbage from closed connections is still freed.

    Call once, at the end of start-up (infra_site/asgi.py).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
