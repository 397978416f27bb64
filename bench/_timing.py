"""Rate measurement: calibrated ``time.perf_counter`` loops, best of several repeats.

Theory of operation: a *workload* is a factory. Given a count ``n`` it does its
setup untimed (pre-generating ephemeral keys, say) and returns a zero-argument
callable that performs ``n`` operations. :func:`measure_rate` first calibrates
``n`` by doubling until one loop takes a tenth of the target time, scales it so
that a loop takes about ``seconds``, then times ``repeats`` fresh loops and
reports the best rate: the loop least disturbed by the rest of the machine, as
``timeit`` advises.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

__all__ = ["Loop", "Workload", "measure_rate", "repeated"]

Loop = Callable[[], object]
Workload = Callable[[int], Loop]
"""``workload(n)`` sets up untimed and returns a callable doing ``n`` operations."""


def repeated(op: Callable[[], object]) -> Workload:
    """The workload that calls ``op`` ``n`` times and needs no setup."""

    def workload(count: int) -> Loop:
        def loop() -> None:
            for _ in itertools.repeat(None, count):
                op()

        return loop

    return workload


def measure_rate(workload: Workload, *, seconds: float, repeats: int = 3) -> float:
    """Operations per second: the best of ``repeats`` loops of about ``seconds`` each."""
    number = _calibrate(workload, seconds)
    best = min(_elapsed(workload(number)) for _ in range(repeats))
    return round(number / best, 1)


def _calibrate(workload: Workload, seconds: float) -> int:
    """A count whose loop should take about ``seconds``."""
    number = 1
    while True:
        elapsed = _elapsed(workload(number))
        if elapsed >= seconds / 10:
            return max(1, round(number * seconds / elapsed))
        number *= 2


def _elapsed(loop: Loop) -> float:
    start = time.perf_counter()
    loop()
    return time.perf_counter() - start
