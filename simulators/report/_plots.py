"""The HTML report's plots: which series becomes which chart, with its words.

Theory of operation: :func:`plots` turns a :class:`~simulators.outcome.RunOutcome` into
an ordered list of :class:`Plot` (heading, caption, chart markup): doors pending over
time (step line), time to sync by door kind (histogram panels, online and offline, on a
shared axis that turns logarithmic when the range demands), revocation latency
(histogram), bundle bytes and BLE airtime per door (bars, largest first, at most
:data:`TOP_DOORS`), and audit completeness over time (step line, 0-100 %). Each plot's
text alternative states its numbers (count, p50, p99, peak, final share), so a reader
who cannot see the chart loses nothing. An empty series still gets its plot, saying it
had no samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from ..outcome import DoorTraffic, RunOutcome
from ._figures import format_figure, format_time, plural
from ._stats import DOOR_KINDS, DistributionSummary, completeness, distribution, door_label
from ._svg import bar_chart, histogram_chart, step_chart

__all__ = ["TOP_DOORS", "Plot", "plots"]

TOP_DOORS: Final = 25


@dataclass(frozen=True)
class Plot:
    """One figure of the report."""

    ident: str
    heading: str
    caption: str
    svg: str


def plots(outcome: RunOutcome) -> list[Plot]:
    """Every plot of the report, in page order."""
    return [
        _pending(outcome),
        _time_to_sync(outcome),
        _revocation(outcome),
        _bundle_bytes(outcome.series.doors),
        _airtime(outcome.series.doors),
        _audit(outcome),
    ]


def _pending(outcome: RunOutcome) -> Plot:
    points = outcome.series.pending_doors
    if points:
        peak_at, peak = min(points, key=lambda p: (-p[1], p[0]))
        text = (
            f"{plural(len(points), 'change')} of the count; peak {plural(peak, 'door')} at "
            f"{format_time(peak_at)}; {points[-1][1]:,} pending at the end."
        )
    else:
        text = "No door was ever pending."
    start = [(0.0, 0.0)] if points and points[0][0] > 0 else []  # none pending before
    chart = step_chart(
        start + [(t, float(n)) for t, n in points],
        ident="pending",
        title="Doors pending over time",
        desc=text,
        x_end=outcome.duration_s,
        y_label="doors pending",
    )
    caption = f"Doors with an unsynced update. {text}"
    return Plot("pending", "Doors pending over time", caption, chart)


def _time_to_sync(outcome: RunOutcome) -> Plot:
    series = outcome.series.time_to_sync_s
    kinds = [*DOOR_KINDS, *sorted(set(series) - set(DOOR_KINDS))]
    panels = [(f"{kind} doors", series.get(kind, [])) for kind in kinds]
    text = " ".join(f"{label}: {_stats_text(distribution(values))}." for label, values in panels)
    chart = histogram_chart(
        panels,
        ident="time-to-sync",
        title="Time to sync by door kind",
        desc=text,
        x_label="change to receipt accepted",
    )
    caption = f"Change to receipt accepted, per door update. {text}"
    return Plot("time-to-sync", "Time to sync by door kind", caption, chart)


def _revocation(outcome: RunOutcome) -> Plot:
    values = outcome.series.revocation_latency_s
    text = f"Revocations: {_stats_text(distribution(values))}."
    chart = histogram_chart(
        [("revoking updates", values)],
        ident="revocation",
        title="Revocation latency",
        desc=text,
        x_label="revocation to the lock refusing the card",
    )
    caption = f"Revocation to the lock refusing the card. {text}"
    return Plot("revocation", "Revocation latency", caption, chart)


def _bundle_bytes(doors: list[DoorTraffic]) -> Plot:
    rows = _top([(door_label(d), float(d.bundle_bytes)) for d in doors])
    total = sum(d.bundle_bytes for d in doors)
    text = f"{plural(total, 'byte')} of bundles to {plural(len(doors), 'door')}"
    text += f"{_shown(rows, len(doors))}."
    chart = bar_chart(
        rows,
        ident="bundle-bytes",
        title="Bundle bytes per door",
        desc=text,
        value_text=lambda v: f"{v:,.0f} B",
    )
    return Plot("bundle-bytes", "Bundle bytes per door", f"Largest first. {text}", chart)


def _airtime(doors: list[DoorTraffic]) -> Plot:
    rows = _top([(door_label(d), d.ble_airtime_s) for d in doors])
    total = sum(d.ble_airtime_s for d in doors)
    offline = sum(1 for d in doors if not d.online)
    text = (
        f"{format_figure(total)} s of BLE airtime at {plural(len(doors), 'door')} "
        f"({offline:,} offline){_shown(rows, len(doors))}."
    )
    chart = bar_chart(
        rows,
        ident="ble-airtime",
        title="BLE airtime per door",
        desc=text,
        value_text=lambda v: f"{format_figure(v)} s",
    )
    return Plot("ble-airtime", "BLE airtime per door", f"Largest first. {text}", chart)


def _audit(outcome: RunOutcome) -> Plot:
    points = outcome.series.audit_completeness
    shares = [(t, 100 * completeness(made, stored)) for t, made, stored in points]
    if points:
        _, made, stored = points[-1]
        low_share, low_at = min((share, t) for t, share in shares)
        text = (
            f"At the end the cloud held {stored:,} of {made:,} audit events "
            f"({shares[-1][1]:.1f} %); lowest {low_share:.1f} % at {format_time(low_at)}."
        )
    else:
        text = "No audit events were recorded."
    chart = step_chart(
        shares,
        ident="audit",
        title="Audit completeness over time",
        desc=text,
        x_end=outcome.duration_s,
        y_label="% stored by the cloud",
        y_top=100.0,
        integer=False,
    )
    caption = f"Share of the audit events locks made that the cloud stored. {text}"
    return Plot("audit", "Audit completeness over time", caption, chart)


def _top(rows: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The :data:`TOP_DOORS` largest rows, ties by name (a non-finite value counts as 0)."""
    clean = [(label, value if math.isfinite(value) else 0.0) for label, value in rows]
    return sorted(clean, key=lambda r: (-r[1], r[0]))[:TOP_DOORS]


def _shown(rows: list[tuple[str, float]], total: int) -> str:
    return f" (the {len(rows)} largest shown)" if total > len(rows) else ""


def _stats_text(stats: DistributionSummary) -> str:
    if not stats.count:
        return "no samples"
    return (
        f"{plural(stats.count, 'sample')}, p50 {format_figure(stats.p50)} s, "
        f"p99 {format_figure(stats.p99)} s, max {format_figure(stats.max)} s"
    )
