"""The web process's garbage-collector tuning."""

from __future__ import annotations

import gc

from infra_site import gctuning


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
