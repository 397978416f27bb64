"""What a simulated run produced, the same for live and fast mode: the reports' input.

Theory of operation: a runner (:mod:`simulators.fast` on a virtual clock,
:mod:`simulators.live` on real components) fills one :class:`RunOutcome`: every access
decision (:class:`Decision`), every fault it injected and what that fault did
(:class:`FaultRecord`), the time series the HTML report plots (:class:`Series`) and the
key figures (:data:`KEY_FIGURES`, named the same in the terminal table, ``--json`` and
``--html``). Times are seconds from the scenario's start. Everything is plain data, so
the renderers in :mod:`simulators.report` know nothing of either mode, and a test can
compare two runs' decisions directly (:func:`disagreements`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "KEY_FIGURES",
    "Decision",
    "DoorTraffic",
    "FaultRecord",
    "Figure",
    "RunOutcome",
    "Series",
    "disagreements",
]

Figure = int | float | None
Mode = Literal["live", "fast"]

KEY_FIGURES: tuple[str, ...] = (
    "changes",
    "door_updates",
    "time_to_sync_s_p50_online",
    "time_to_sync_s_p99_online",
    "time_to_sync_s_p50_offline",
    "time_to_sync_s_p99_offline",
    "revocation_latency_s_p50",
    "revocation_latency_s_p99",
    "access_events",
    "denied_events",
    "lost_audit_events",
    "lost_updates",
)
"""The issue's key figures, in report order. ``lost_audit_events`` and ``lost_updates``
must be 0: every change reached every door or is still shown pending; every audit event
reached the cloud or is still held by its lock. A percentile with no samples is None."""


@dataclass(frozen=True)
class Decision:
    """One access decision a lock made: who, where, how, and the lock's verdict."""

    at_s: float
    person: str
    building: str
    door: str
    via: Literal["card", "phone"]
    granted: bool
    reason: str
    """The protocol's reason code name (``protocol.Reason``), e.g. ``GRANTED``, ``REVOKED``."""


@dataclass(frozen=True)
class FaultRecord:
    """A fault the run injected and what it did, in one sentence a QA engineer reads."""

    at_s: float
    kind: str
    """The scenario event's kind: ``broker_outage``, ``power_cut``, ``clock_drift``, ..."""
    target: str
    """What it hit: ``broker``, ``cloud``, ``Tower/Basement``, a person's name."""
    effect: str
    """E.g. "3 bundles held 7,200 s, delivered on reconnect; nothing lost"."""


@dataclass(frozen=True)
class DoorTraffic:
    """What one door received and sent over the run."""

    building: str
    door: str
    online: bool
    bundle_bytes: int
    ble_airtime_s: float
    """Modelled (fast) or measured (live) time on the BLE link; 0 for online doors."""


@dataclass
class Series:
    """What the HTML report plots."""

    pending_doors: list[tuple[float, int]] = field(default_factory=list)
    """(time, doors with at least one unsynced update), at every change of that count."""
    time_to_sync_s: dict[str, list[float]] = field(default_factory=dict)
    """Per door kind (``online``, ``offline``): change → receipt accepted, each update."""
    revocation_latency_s: list[float] = field(default_factory=list)
    """Revocation → the lock refuses the card, each revoking update."""
    doors: list[DoorTraffic] = field(default_factory=list)
    audit_completeness: list[tuple[float, int, int]] = field(default_factory=list)
    """(time, audit events made by locks so far, of those stored by the cloud)."""


@dataclass
class RunOutcome:
    """One run of one scenario in one mode."""

    scenario: str
    mode: Mode
    seed: int
    duration_s: float
    figures: dict[str, Figure] = field(default_factory=dict)
    """At least every name of :data:`KEY_FIGURES`; a mode may add its own (``wall_s``...)."""
    decisions: list[Decision] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    series: Series = field(default_factory=Series)

    @property
    def ok(self) -> bool:
        """Nothing was lost: the run's correctness verdict."""
        return self.figures.get("lost_audit_events") == 0 and self.figures.get("lost_updates") == 0


def disagreements(a: RunOutcome, b: RunOutcome) -> list[str]:
    """Where two runs' access decisions differ (matched in order per person and door);
    one line each, empty when they agree."""

    def keyed(outcome: RunOutcome) -> dict[tuple[str, str, str], list[Decision]]:
        found: dict[tuple[str, str, str], list[Decision]] = {}
        for decision in outcome.decisions:
            found.setdefault((decision.person, decision.building, decision.door), []).append(
                decision
            )
        return found

    left, right = keyed(a), keyed(b)
    lines: list[str] = []
    for key in sorted(left.keys() | right.keys()):
        ours, theirs = left.get(key, []), right.get(key, [])
        if len(ours) != len(theirs):
            lines.append(
                f"{'/'.join(key)}: {len(ours)} decisions in {a.mode}, {len(theirs)} in {b.mode}"
            )
            continue
        for x, y in zip(ours, theirs, strict=True):
            if (x.via, x.granted, x.reason) != (y.via, y.granted, y.reason):
                lines.append(
                    f"{'/'.join(key)} at {x.at_s:.3f}s via {x.via}: {a.mode} {x.reason}, "
                    f"{b.mode} {y.reason}"
                )
    return lines
