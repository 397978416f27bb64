"""What a fast run measured: per-change tracking, the key figures, canonical JSON.

Theory of operation: every door update a scripted change causes (one
:class:`cloud.sync.DoorChange`: a door moved to a new list version) becomes a
:class:`Tracked` record with the virtual time it was made. The runner marks it
*applied* when the lock's held list reaches that version and *synced* when the
cloud's synced version for the door does (a verified receipt arrived), so
``time_to_sync`` is change → receipt accepted, by door kind, and
``revocation_latency`` is change → the lock refuses the card (the revoking list is
applied). Updates still unsynced at the end are not in the distributions; they are
counted as ``pending_door_updates``.

The figures are a flat dict of ints, floats and None; :func:`canonical_json` writes
them with sorted keys, no spaces and every float rounded to 6 decimals, so a seed's
report is the same bytes on every run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

__all__ = ["Figure", "Tracked", "Tracker", "canonical_json", "percentile"]

Figure = int | float | None


@dataclass
class Tracked:
    """One door update: door ``door`` must reach list ``version``."""

    door: int
    version: int
    created: float
    online: bool
    revocation: bool
    applied: float | None = None
    synced: float | None = None


@dataclass
class Tracker:
    """Tracked updates, with per-door queues of those not yet both applied and synced."""

    doors: int
    records: list[Tracked] = field(default_factory=list)
    _open: dict[int, list[Tracked]] = field(default_factory=dict)

    def add(self, record: Tracked) -> None:
        self.records.append(record)
        self._open.setdefault(record.door, []).append(record)

    def applied(self, door: int, version: int, now: float) -> None:
        """The lock of ``door`` holds ``version``: every update up to it reached it."""
        for record in self._open.get(door, ()):
            if record.applied is None and record.version <= version:
                record.applied = now

    def synced(self, door: int, version: int, now: float) -> None:
        """The cloud accepted a receipt for ``version`` from ``door``."""
        waiting = self._open.get(door)
        if not waiting:
            return
        for record in waiting:
            if record.synced is None and record.version <= version:
                record.synced = now
        self._open[door] = [r for r in waiting if r.synced is None or r.applied is None]

    def time_to_sync(self, *, online: bool) -> list[float]:
        return sorted(
            r.synced - r.created
            for r in self.records
            if r.online is online and r.synced is not None
        )

    def revocation_latency(self) -> list[float]:
        return sorted(
            r.applied - r.created for r in self.records if r.revocation and r.applied is not None
        )

    def pending(self) -> int:
        return sum(1 for r in self.records if r.synced is None)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[rank - 1]


def _canonical(value: Figure) -> Figure:
    if isinstance(value, float):
        rounded = round(value, 6)
        return 0.0 if rounded == 0 else rounded
    return value


def canonical_json(figures: dict[str, Figure]) -> bytes:
    """The report's bytes: sorted keys, compact, floats rounded to 6 decimals."""
    data = {key: _canonical(value) for key, value in figures.items()}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
