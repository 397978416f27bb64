"""A discrete-event scheduler on a virtual clock.

Theory of operation: :class:`Scheduler` keeps a heap of ``(time, seq, callback)``.
``seq`` is a counter taken when an event is scheduled, so two events due at the same
virtual instant run in the order they were scheduled: ties are broken the same way on
every run, which is what makes a seeded simulation reproducible byte for byte.
:meth:`Scheduler.run_until` pops events in order, sets :attr:`Scheduler.now` to each
event's time before calling it, and stops at the first event later than the limit
(leaving it queued), then moves the clock to the limit. The clock only moves forward
and jumps straight to the next event when nothing is due (trio's ``MockClock``
autojump); it never reads wall time.

:meth:`Scheduler.spawn` runs a *process*: a generator that yields delays in seconds.
Each yield parks the process on the heap until the delay has passed, so a multi-step
flow (a phone's BLE visit) reads as straight-line code while other events interleave.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

__all__ = ["Process", "Scheduler", "SchedulingError"]

Process = Generator[float, None, None]
"""A flow that yields the delays (virtual seconds) between its steps."""


class SchedulingError(ValueError):
    """An event was scheduled in the past or with a negative delay."""


@dataclass
class Scheduler:
    """The virtual clock and its event heap. ``now`` is seconds since the run began."""

    now: float = 0.0
    events_run: int = 0
    _heap: list[tuple[float, int, Callable[[], object]]] = field(default_factory=list)
    _seq: int = 0

    def at(self, when: float, callback: Callable[[], object]) -> None:
        """Run ``callback`` at virtual time ``when`` (not before :attr:`now`)."""
        if when < self.now:
            raise SchedulingError(f"cannot schedule at {when} before now ({self.now})")
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, callback))

    def after(self, delay: float, callback: Callable[[], object]) -> None:
        """Run ``callback`` ``delay`` seconds from now."""
        if delay < 0:
            raise SchedulingError(f"negative delay {delay}")
        self.at(self.now + delay, callback)

    def spawn(self, process: Process, delay: float = 0.0) -> None:
        """Start ``process`` after ``delay``; each value it yields is its next delay."""
        self.after(delay, lambda: self._resume(process))

    def _resume(self, process: Process) -> None:
        try:
            delay = next(process)
        except StopIteration:
            return
        self.after(delay, lambda: self._resume(process))

    def next_time(self) -> float | None:
        """When the earliest queued event is due (None: nothing queued)."""
        return self._heap[0][0] if self._heap else None

    def run_until(self, limit: float) -> None:
        """Run every event due at or before ``limit`` in order; then ``now = limit``."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= limit:
            when, _, callback = pop(heap)
            self.now = when
            self.events_run += 1
            callback()
        self.now = max(self.now, limit)

    def __len__(self) -> int:
        return len(self._heap)
