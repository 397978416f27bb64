"""What a live run measures: door updates, decisions, samples; the key figures at the end.

Theory of operation
-------------------
Every change the cloud accepted (an ``activate``, ``deactivate`` or ``lost_card`` event)
answers with the doors it moved to a new list version; each (door, version) becomes an
:class:`Update` with the scenario time of the change. The runner marks an update
*applied* when the door's lock holds that version (the lock tells it, exactly:
``PoweredRuntime.on_version``) and *synced* when the cloud's ``synced_version`` for the
door reaches it (a verified receipt arrived; the runner polls the database). As in fast
mode, ``time_to_sync`` is change → receipt accepted, by door kind, and
``revocation_latency`` change → the lock refuses the card (the revoking list applied).

The figures (:data:`~simulators.outcome.KEY_FIGURES`) come from :meth:`Tracker.figures`
with the final real state: ``lost_updates`` counts updates that reached no lock *and* are
not shown pending by the cloud; ``lost_audit_events`` counts audit events a lock made
(sequence 1 … head) that are neither stored by the cloud nor still held by the lock,
plus events the lock itself had to drop (its ring full).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..outcome import Decision, Figure, Series

__all__ = ["AuditState", "DoorState", "Tracker", "Update", "percentile"]


@dataclass
class Update:
    """Door ``door`` must reach list ``version`` because of a change at ``at_s``."""

    at_s: float
    door: str
    online: bool
    version: int
    revoking: bool
    applied_s: float | None = None
    synced_s: float | None = None


@dataclass(frozen=True)
class DoorState:
    """What the cloud shows of one door: its list version and the receipted one."""

    list_version: int
    synced_version: int

    @property
    def pending(self) -> bool:
        return self.synced_version < self.list_version


@dataclass(frozen=True)
class AuditState:
    """One lock's audit log against the cloud's records of it."""

    head_seq: int
    held: frozenset[int]
    dropped: int
    """Events the lock could not log (ring full), not yet reported or reported."""
    stored: frozenset[int]

    @property
    def lost(self) -> int:
        missing = set(range(1, self.head_seq + 1)) - self.held - self.stored
        return len(missing) + self.dropped


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (None when there are no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


@dataclass
class Tracker:
    """Updates, decisions and samples of one run."""

    updates: list[Update] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    series: Series = field(default_factory=Series)
    changes: int = 0
    refused_changes: int = 0
    missed_openings: int = 0
    """Openings that found no lock to decide: the lock had no power, or the phone
    could not reach it (the door out of reach, the link lost before AUTH)."""
    errors: int = 0
    """Timeline steps that failed with an unexpected error (logged; the run went on)."""
    max_lag_s: float = 0.0
    """How far behind its scenario time the runner started an item, at worst."""

    def change(
        self,
        at_s: float,
        revoking: bool,
        doors: list[tuple[str, bool, int]],
        *,
        holds: dict[str, int],
        now: float,
    ) -> None:
        """The cloud accepted a change at ``at_s`` moving ``(door, online, version)`` each;
        ``holds``: the versions the locks held when its answer came (an online lock may
        have applied it already), at ``now``."""
        self.changes += 1
        for door, online, version in doors:
            update = Update(at_s, door, online, version, revoking)
            if holds.get(door, 0) >= version:
                update.applied_s = now
            self.updates.append(update)

    def applied(self, door: str, version: int, now: float) -> None:
        """The lock of ``door`` holds ``version``."""
        for update in self.updates:
            if update.door == door and update.applied_s is None and update.version <= version:
                update.applied_s = now

    def cloud(self, doors: dict[str, tuple[bool, DoorState]], now: float) -> None:
        """The cloud's view of every door (name → (online, state)) at ``now``."""
        for update in self.updates:
            if update.synced_s is None and doors[update.door][1].synced_version >= update.version:
                update.synced_s = now
        pending = sum(state.pending for _, state in doors.values())
        points = self.series.pending_doors
        if not points or points[-1][1] != pending:
            points.append((now, pending))

    def audit(self, now: float, made: int, stored: int) -> None:
        points = self.series.audit_completeness
        if not points or points[-1][1:] != (made, stored):
            points.append((now, made, stored))

    def figures(
        self,
        *,
        locks_hold: dict[str, int],
        doors: dict[str, tuple[bool, DoorState]],
        audits: dict[str, AuditState],
    ) -> dict[str, Figure]:
        """The key figures from the final state (see the module docstring)."""
        sync = {
            kind: [u.synced_s - u.at_s for u in self.updates if u.online is (kind == "online")
                   and u.synced_s is not None]
            for kind in ("online", "offline")
        }  # fmt: skip
        revocation = [
            u.applied_s - u.at_s for u in self.updates if u.revoking and u.applied_s is not None
        ]
        self.series.time_to_sync_s = {kind: sorted(values) for kind, values in sync.items()}
        self.series.revocation_latency_s = sorted(revocation)
        lost_updates = sum(
            1
            for u in self.updates
            if locks_hold[u.door] < u.version and not doors[u.door][1].pending
        )
        denied = sum(1 for d in self.decisions if not d.granted)
        return {
            "changes": self.changes,
            "door_updates": len(self.updates),
            "time_to_sync_s_p50_online": percentile(sync["online"], 50),
            "time_to_sync_s_p99_online": percentile(sync["online"], 99),
            "time_to_sync_s_p50_offline": percentile(sync["offline"], 50),
            "time_to_sync_s_p99_offline": percentile(sync["offline"], 99),
            "revocation_latency_s_p50": percentile(revocation, 50),
            "revocation_latency_s_p99": percentile(revocation, 99),
            "access_events": len(self.decisions),
            "denied_events": denied,
            "lost_audit_events": sum(state.lost for state in audits.values()),
            "lost_updates": lost_updates,
            "pending_door_updates": sum(1 for u in self.updates if u.synced_s is None),
            "refused_changes": self.refused_changes,
            "missed_openings": self.missed_openings,
            "max_lag_s": round(self.max_lag_s, 3),
            "errors": self.errors,
        }
