"""Scenario time on the event loop's clock, and each lock's own (drifting) clock.

Theory of operation
-------------------
Live mode runs a scenario in wall-clock time compressed by ``speed``: one wall second is
``speed`` scenario seconds. :class:`ScenarioClock` is the one source of scenario time:
:meth:`ScenarioClock.now` is seconds from the scenario's second 0 and :meth:`wall` the
unix time of that instant (``start`` + now), which the cloud, the MQTT bridge and the
phones read. Before :meth:`ScenarioClock.start` (while the building is set up) the clock
runs at wall speed from ``-pre_roll_s``, so set-up takes no scenario time and the
reading never goes backwards: at ``start`` it jumps forward to 0.

Each lock reads its own :class:`LockClock`: the scenario clock plus what a
``clock_drift`` fault did to it (a step, and a rate error in ppm from the fault's
start). A lock's wall time is ``int(now) + offset`` (the controller core), provisioned so
that an undisturbed lock tells the scenario's wall time; only a TIME_SYNC moves the
offset. All readings come from ``loop.time()`` (monotonic, safe to read from the cloud
API's thread).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["LockClock", "ScenarioClock"]

PRE_ROLL_S = 600.0
"""Where the clock starts before the run: set-up happens at scenario time -600 s ..."""


class ScenarioClock:
    """Scenario seconds on the running loop's clock, ``speed`` times wall speed."""

    def __init__(self, start: datetime, *, speed: float, pre_roll_s: float = PRE_ROLL_S) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive; got {speed}")
        self.speed = speed
        self.start_unix = int(start.timestamp())
        self._loop = asyncio.get_running_loop()
        self._created = self._loop.time()
        self._pre_roll = pre_roll_s
        self._zero: float | None = None

    @property
    def started(self) -> bool:
        return self._zero is not None

    def start(self) -> None:
        """Second 0 of the scenario is now."""
        self._zero = self._loop.time()

    def now(self) -> float:
        """Seconds from the scenario's start (negative while the building is set up)."""
        if self._zero is None:
            return min(-1e-3, self._loop.time() - self._created - self._pre_roll)
        return (self._loop.time() - self._zero) * self.speed

    def wall(self) -> int:
        """Unix seconds at scenario time :meth:`now`."""
        return self.start_unix + int(self.now())

    def loop_time_at(self, at_s: float) -> float:
        """The loop-clock time at which scenario time ``at_s`` comes (after :meth:`start`)."""
        if self._zero is None:
            raise RuntimeError("the scenario clock has not started")
        return self._zero + at_s / self.speed

    async def sleep_until(self, at_s: float) -> None:
        """Return once scenario time ``at_s`` has come."""
        delay = self.loop_time_at(at_s) - self._loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class LockClock:
    """One lock's clock: the scenario clock, stepped and drifting as a fault says."""

    scenario: ScenarioClock
    step_s: float = 0.0
    ppm: float = 0.0
    drift_from_s: float = field(default=0.0)

    def __call__(self) -> float:
        now = self.scenario.now()
        drift = max(0.0, now - self.drift_from_s) * self.ppm / 1e6 if self.ppm else 0.0
        return now + self.step_s + drift

    def disturb(self, *, step_s: float, ppm: float) -> None:
        """From now on, run ``ppm`` fast (or slow) and jump by ``step_s`` (a fault)."""
        now = self.scenario.now()
        # Fold the drift so far into the step, so the reading never jumps but by step_s.
        self.step_s += step_s + (
            max(0.0, now - self.drift_from_s) * self.ppm / 1e6 if self.ppm else 0.0
        )
        self.ppm, self.drift_from_s = ppm, now
