"""Summary statistics of a run's time series: what ``--json`` says instead of every point.

Theory of operation: each series of :class:`~simulators.outcome.Series` becomes one small
frozen record of plain numbers. Distributions (time to sync per door kind, revocation
latency) give count, min, p50, p90, p99, max and mean with the nearest-rank percentile
(the one the runners use for the key figures, so a p50 here equals the key figure's);
NaN and infinite samples are left out. The pending-doors series gives its peak and final
count; audit completeness its final and lowest share of events stored; the per-door
traffic its totals and largest door. Empty series give zero counts and None, never an
error. Door kinds ``online`` and ``offline`` are always present, others follow by name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..outcome import DoorTraffic, Series

__all__ = [
    "DOOR_KINDS",
    "AuditSummary",
    "DistributionSummary",
    "DoorsSummary",
    "PendingSummary",
    "SeriesSummary",
    "completeness",
    "distribution",
    "door_label",
    "percentile",
    "summarize",
]

DOOR_KINDS = ("online", "offline")


@dataclass(frozen=True)
class DistributionSummary:
    count: int
    min: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    mean: float | None


@dataclass(frozen=True)
class PendingSummary:
    points: int
    peak: int
    peak_at_s: float | None
    """When the count first reached its peak (None without points)."""
    final: int
    last_change_at_s: float | None


@dataclass(frozen=True)
class AuditSummary:
    points: int
    final_made: int
    final_stored: int
    final_completeness: float | None
    """Stored / made at the last point (1.0 when no event was made yet)."""
    min_completeness: float | None
    min_completeness_at_s: float | None


@dataclass(frozen=True)
class DoorsSummary:
    count: int
    online: int
    offline: int
    bundle_bytes_total: int
    bundle_bytes_max: int
    bundle_bytes_max_door: str | None
    ble_airtime_s_total: float
    ble_airtime_s_max: float
    ble_airtime_s_max_door: str | None


@dataclass(frozen=True)
class SeriesSummary:
    pending_doors: PendingSummary
    time_to_sync_s: dict[str, DistributionSummary]
    revocation_latency_s: DistributionSummary
    doors: DoorsSummary
    audit_completeness: AuditSummary


def summarize(series: Series) -> SeriesSummary:
    """Every series of a run, summarized."""
    kinds = [*DOOR_KINDS, *sorted(set(series.time_to_sync_s) - set(DOOR_KINDS))]
    return SeriesSummary(
        pending_doors=_pending(series.pending_doors),
        time_to_sync_s={k: distribution(series.time_to_sync_s.get(k, ())) for k in kinds},
        revocation_latency_s=distribution(series.revocation_latency_s),
        doors=_doors(series.doors),
        audit_completeness=_audit(series.audit_completeness),
    )


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile ``p`` (0-100) of sorted ``ordered``; None when empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def distribution(values: Iterable[float]) -> DistributionSummary:
    """Count, extremes, percentiles and mean of the finite ``values``."""
    ordered = sorted(v for v in values if math.isfinite(v))
    if not ordered:
        return DistributionSummary(0, None, None, None, None, None, None)
    return DistributionSummary(
        count=len(ordered),
        min=ordered[0],
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        max=ordered[-1],
        mean=math.fsum(ordered) / len(ordered),
    )


def completeness(made: int, stored: int) -> float:
    """Share of audit events the cloud stored: 1.0 when none were made."""
    return 1.0 if made <= 0 else stored / made


def door_label(door: DoorTraffic) -> str:
    """How a report names a door: ``Building/Door``."""
    return f"{door.building}/{door.door}"


def _pending(points: list[tuple[float, int]]) -> PendingSummary:
    if not points:
        return PendingSummary(0, 0, None, 0, None)
    peak_at, peak = min(points, key=lambda p: (-p[1], p[0]))
    return PendingSummary(len(points), peak, peak_at, points[-1][1], points[-1][0])


def _audit(points: list[tuple[float, int, int]]) -> AuditSummary:
    if not points:
        return AuditSummary(0, 0, 0, None, None, None)
    shares = [(completeness(made, stored), at) for at, made, stored in points]
    lowest, lowest_at = min(shares)
    _, made, stored = points[-1]
    return AuditSummary(len(points), made, stored, shares[-1][0], lowest, lowest_at)


def _doors(doors: list[DoorTraffic]) -> DoorsSummary:
    online = sum(1 for d in doors if d.online)
    # The largest door; ties go to the first by name.
    by_bytes = min(doors, key=lambda d: (-d.bundle_bytes, door_label(d)), default=None)
    by_air = min(doors, key=lambda d: (-d.ble_airtime_s, door_label(d)), default=None)
    return DoorsSummary(
        count=len(doors),
        online=online,
        offline=len(doors) - online,
        bundle_bytes_total=sum(d.bundle_bytes for d in doors),
        bundle_bytes_max=by_bytes.bundle_bytes if by_bytes else 0,
        bundle_bytes_max_door=door_label(by_bytes) if by_bytes else None,
        ble_airtime_s_total=math.fsum(d.ble_airtime_s for d in doors),
        ble_airtime_s_max=by_air.ble_airtime_s if by_air else 0.0,
        ble_airtime_s_max_door=door_label(by_air) if by_air else None,
    )
