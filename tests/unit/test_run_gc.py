"""``xconv run`` tunes the cyclic garbage collector before the engine starts."""

from __future__ import annotations

import gc

from consumer.commands.run import GC_THRESHOLDS, tune_gc


def test_start_up_objects_are_frozen_and_collections_are_rarer() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
