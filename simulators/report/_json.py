"""``doorsim run --json``: one canonical JSON object per run.

Theory of operation: :func:`report_data` builds plain data from a
:class:`~simulators.outcome.RunOutcome`: the run's identity (``scenario``, ``mode``,
``seed``, ``duration_s``), the verdict (``ok``, ``verdict``), ``figures`` (every name of
:data:`~simulators.outcome.KEY_FIGURES`, null when not measured, plus the mode's extras),
``faults`` in run order, ``series`` (the summaries of :mod:`._stats`, not the points),
``decision_count`` and, only when asked, every ``decisions`` entry. :func:`report_json`
writes it canonically: sorted keys, no spaces, ASCII only, every float rounded to 6
decimals with negative zero as zero and NaN/infinity as null, one trailing newline. So
the same outcome is the same bytes, whatever the platform or the dict order.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from ..outcome import Decision, FaultRecord, RunOutcome
from ._figures import figure_rows, verdict
from ._stats import summarize

__all__ = ["canonical", "report_data", "report_json"]

FLOAT_DECIMALS = 6


def report_json(outcome: RunOutcome, *, decisions: bool = False) -> str:
    """The report as one canonical JSON line (ending in a newline)."""
    data = canonical(report_data(outcome, decisions=decisions))
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def report_data(outcome: RunOutcome, *, decisions: bool = False) -> dict[str, Any]:
    """The report as plain data (not yet canonical: see :func:`canonical`)."""
    judged = verdict(outcome.figures)
    data: dict[str, Any] = {
        "scenario": outcome.scenario,
        "mode": outcome.mode,
        "seed": outcome.seed,
        "duration_s": outcome.duration_s,
        "ok": judged.ok,
        "verdict": judged.text,
        "figures": {row.name: row.value for row in figure_rows(outcome.figures)},
        "faults": [_fault(f) for f in outcome.faults],
        "series": asdict(summarize(outcome.series)),
        "decision_count": len(outcome.decisions),
    }
    if decisions:
        data["decisions"] = [_decision(d) for d in outcome.decisions]
    return data


def canonical(value: Any) -> Any:
    """``value`` with floats rounded, -0.0 as 0.0 and NaN/infinity as None, recursively."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        rounded = round(value, FLOAT_DECIMALS)
        return 0.0 if rounded == 0 else rounded
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def _fault(fault: FaultRecord) -> dict[str, Any]:
    return {"at_s": fault.at_s, "kind": fault.kind, "target": fault.target, "effect": fault.effect}


def _decision(decision: Decision) -> dict[str, Any]:
    return asdict(decision)
