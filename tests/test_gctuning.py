"""The web process's garbage-collector tuning."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from runtime import gctuning


def test_configure_gc_freezes_start_up_and_raises_the_first_threshold() -> None:
    before = gc.get_threshold()
    try:
        gctuning.configure_gc()
        assert gc.get_threshold() == gctuning.GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()  # tuned, not switched off: closed connections' cycles go
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_a_wave_of_closed_sockets_gets_one_full_collection_once_it_settles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collections: list[float] = []
    monkeypatch.setattr(gctuning.gc, "collect", lambda: collections.append(time.monotonic()))
    monkeypatch.setattr(gctuning, "COLLECT_AFTER_CLOSES", 3)
    monkeypatch.setattr(gctuning, "COLLECT_SETTLE_S", 0.05)
    monkeypatch.setattr(gctuning, "COLLECT_MIN_INTERVAL_S", 0.3)
    closed = gctuning.ClosedSockets()
    for _ in range(2):
        closed.note_closed()
    await asyncio.sleep(0.1)
    assert collections == [], "fewer closes than a wave: no collection"
    for _ in range(5):  # the wave: one collection, not one per close
        closed.note_closed()
    await asyncio.sleep(0.1)
    assert len(collections) == 1
    start = time.monotonic()
    for _ in range(3):  # a second wave right after: waits out the minimum interval
        closed.note_closed()
    await asyncio.sleep(0.1)
    assert len(collections) == 1
    await asyncio.sleep(0.4)
    assert len(collections) == 2
    assert collections[1] - collections[0] >= 0.29
    assert collections[1] >= start
