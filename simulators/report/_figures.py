"""The key figures as every report shows them: name, unit, meaning, value, verdict.

Theory of operation: :data:`~simulators.outcome.KEY_FIGURES` fixes the names and the
order; :data:`FIGURE_INFO` adds a unit and a one-line meaning to each, so the terminal
table, ``--json`` and ``--html`` name and explain them the same way. :func:`figure_rows`
lists every key figure (a missing one as None, so no report silently drops a name) and
then any extra figure a mode added, sorted by name. :func:`verdict` is the run's
correctness line: nothing lost, or what was lost. A figure that was not measured (None or
missing) is not "nothing lost": the verdict says which one is unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from ..outcome import KEY_FIGURES, Figure
from ..scenario import format_duration

__all__ = [
    "FIGURE_INFO",
    "FigureInfo",
    "FigureRow",
    "Verdict",
    "figure_rows",
    "format_figure",
    "format_time",
    "plural",
    "verdict",
]


@dataclass(frozen=True)
class FigureInfo:
    """How a figure is read: its unit and what it counts."""

    unit: str
    meaning: str


FIGURE_INFO: Final[dict[str, FigureInfo]] = {
    "changes": FigureInfo("changes", "scripted access changes (activate, deactivate, lost card)"),
    "door_updates": FigureInfo("updates", "door list updates those changes caused"),
    "time_to_sync_s_p50_online": FigureInfo("s", "change to receipt accepted, online doors, p50"),
    "time_to_sync_s_p99_online": FigureInfo("s", "change to receipt accepted, online doors, p99"),
    "time_to_sync_s_p50_offline": FigureInfo("s", "change to receipt accepted, offline doors, p50"),
    "time_to_sync_s_p99_offline": FigureInfo("s", "change to receipt accepted, offline doors, p99"),
    "revocation_latency_s_p50": FigureInfo("s", "revocation to the lock refusing the card, p50"),
    "revocation_latency_s_p99": FigureInfo("s", "revocation to the lock refusing the card, p99"),
    "access_events": FigureInfo("events", "door openings tried, by card or phone"),
    "denied_events": FigureInfo("events", "of those, refused by the lock"),
    "lost_audit_events": FigureInfo(
        "events", "neither stored by the cloud nor held by their lock (must be 0)"
    ),
    "lost_updates": FigureInfo("updates", "neither applied nor shown pending (must be 0)"),
}
"""Unit and meaning of every name of :data:`KEY_FIGURES`."""

_EXTRA: Final = FigureInfo("", "reported by this mode")
_LOST: Final = (("lost_updates", "door update"), ("lost_audit_events", "audit event"))


@dataclass(frozen=True)
class FigureRow:
    """One line of a figures table."""

    name: str
    value: Figure
    unit: str
    meaning: str
    key: bool
    """One of :data:`KEY_FIGURES` (else an extra figure of the mode)."""


@dataclass(frozen=True)
class Verdict:
    """Whether the run lost anything, as one line."""

    ok: bool
    text: str


def figure_rows(figures: dict[str, Figure]) -> list[FigureRow]:
    """Every key figure in report order, then the extras by name."""
    rows = [
        FigureRow(name, _finite(figures.get(name)), info.unit, info.meaning, True)
        for name, info in FIGURE_INFO.items()
    ]
    extras = sorted(set(figures) - set(KEY_FIGURES))
    rows += [
        FigureRow(name, _finite(figures[name]), _EXTRA.unit, _EXTRA.meaning, False)
        for name in extras
    ]
    return rows


def format_figure(value: Figure) -> str:
    """A figure for people: ``1,234``, ``0.052``, ``7,200.5``; ``n/a`` when not measured."""
    value = _finite(value)
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{int(value):,}"
    return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"


def format_time(seconds: float) -> str:
    """A time in the run the way a scenario file writes one: ``6h``, ``2h30m0.5s``."""
    if not math.isfinite(seconds):
        return "n/a"
    return format_duration(round(seconds, 3))


def plural(count: float, noun: str) -> str:
    """``1 sample``, ``2 samples``, ``1,204 samples``."""
    return f"{format_figure(count)} {noun}{'' if count == 1 else 's'}"


def verdict(figures: dict[str, Figure]) -> Verdict:
    """Nothing lost, or each loss (and each loss figure nobody measured)."""
    problems: list[str] = []
    for name, what in _LOST:
        value = _finite(figures.get(name))
        if value is None:
            problems.append(f"{name} was not measured")
        elif value != 0:
            problems.append(f"{plural(value, what)} lost")
    if problems:
        return Verdict(False, "LOST: " + "; ".join(problems) + _pending(figures))
    return Verdict(
        True,
        "nothing lost: every change reached every door or is still shown pending; "
        "every audit event reached the cloud or is still held by its lock" + _pending(figures),
    )


def _pending(figures: dict[str, Figure]) -> str:
    pending = _finite(figures.get("pending_door_updates"))
    if not pending:
        return ""
    return f" ({plural(pending, 'door update')} still pending at the end)"


def _finite(value: Figure) -> Figure:
    """NaN and infinities are no measurement: None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
