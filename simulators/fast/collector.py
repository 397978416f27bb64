"""Python's cyclic garbage collector, tuned for one long fast-mode run.

Theory of operation: a fast run first builds a world of millions of small objects (locks,
credential lists, cloud rows) that live as long as the run, then makes a few more per
access event (decisions, audit events) and almost no reference cycles. With the default
thresholds the collector runs every 700 allocations and, now and then, walks every object
alive: about a fifth of a week-long build and a twentieth of its run went there, finding
nearly nothing. :func:`collector_paused` turns the collector off while the world is built;
:func:`collector_for_run` moves what exists into the permanent generation
(:func:`gc.freeze`) and collects the young generation a thirtieth as often. Both restore
the collector's state when they end (:func:`gc.unfreeze`: the world can be freed after
the run), so a process that runs many scenarios, like the test suite, still collects.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RUN_THRESHOLD", "collector_for_run", "collector_paused"]

RUN_THRESHOLD = 20_000
"""Allocations between young-generation collections during a run (Python's default: 700)."""


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block (a bulk build); the previous state after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def collector_for_run() -> Iterator[None]:
    """Freeze what exists and collect young objects rarely inside the block."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(RUN_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
