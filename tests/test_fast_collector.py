"""The fast run's collector settings apply inside their blocks and are undone after."""

from __future__ import annotations

import gc

import pytest

from simulators.fast.collector import RUN_THRESHOLD, collector_for_run, collector_paused


def test_paused_inside_and_restored_after_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_paused_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_run_freezes_what_exists_then_unfreezes_and_restores_thresholds() -> None:
    before = gc.get_threshold()
    kept = [object() for _ in range(10)]
    with collector_for_run():
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold() == (RUN_THRESHOLD, *before[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
