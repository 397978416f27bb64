"""Presenting figures: the aligned table, the JSON object and the goal verdicts.

Theory of operation: figures stay plain numbers until the last moment. The JSON
form is the flat figures object and nothing else (goals are the benchmark's
business, not the data's); the table adds a unit, the goal and a verdict per
figure. A goal whose figure is absent counts as missed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from . import Benchmark, Figures, Goal, goal_met

__all__ = ["MET", "MISSED", "MISSING", "missed_goals", "to_json", "to_table", "verdict"]

MET, MISSED, MISSING = "ok", "MISSED", "missing"
_HEADINGS = ("figure", "value", "unit", "goal", "verdict")
_SUFFIX_UNITS = (("_per_s", "ops/s"), ("_bytes", "bytes"))


def to_json(figures: Figures) -> str:
    """Exactly one JSON object: figure name -> number."""
    return json.dumps(figures)


def verdict(figures: Figures, key: str, goal: Goal | None) -> str:
    """``ok``, ``MISSED``, ``missing`` (goal without figure) or ``""`` (no goal)."""
    if goal is None:
        return ""
    if key not in figures:
        return MISSING
    return MET if goal_met(figures[key], goal) else MISSED


def missed_goals(bench: Benchmark, figures: Figures) -> list[str]:
    """The figures whose goal is missed or that were never reported."""
    return [key for key, goal in bench.goals.items() if verdict(figures, key, goal) != MET]


def to_table(bench: Benchmark, figures: Figures) -> str:
    """A readable table with aligned columns, one row per figure and per orphan goal."""
    keys = [*figures, *(key for key in bench.goals if key not in figures)]
    rows = [_HEADINGS, *(_row(bench, figures, key) for key in keys)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADINGS))]
    return "\n".join(_line(row, widths) for row in rows)


def _row(bench: Benchmark, figures: Figures, key: str) -> tuple[str, str, str, str, str]:
    goal = bench.goals.get(key)
    value = _number(figures[key]) if key in figures else "-"
    goal_text = f"{goal[0]} {_number(goal[1])}" if goal else ""
    return key, value, _unit(bench.units, key), goal_text, verdict(figures, key, goal)


def _line(row: tuple[str, ...], widths: list[int]) -> str:
    name, value, *rest = row
    cells = [name.ljust(widths[0]), value.rjust(widths[1])]
    cells += [cell.ljust(width) for cell, width in zip(rest, widths[2:], strict=True)]
    return "  ".join(cells).rstrip()


def _unit(units: Mapping[str, str], key: str) -> str:
    if key in units:
        return units[key]
    return next((unit for suffix, unit in _SUFFIX_UNITS if key.endswith(suffix)), "")


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"
