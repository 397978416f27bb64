"""The terminal view of a run: a live progress bar, then the summary and the verdict.

Theory of operation: :func:`progress_bar` is a context manager that yields the callback a
runner calls with the scenario seconds done. On a terminal it drives a rich progress bar
(scenario time done of total, wall time left), redrawing at most every
1/500 of the run however often the runner calls; anywhere else (a pipe, a file, CI
logs) the callback does nothing, so no escape codes reach a log. It draws on stderr by
default, so stdout stays the report alone (``--json`` pipes cleanly).

:func:`print_summary` writes, at the end, the key figures table (names as in
:data:`~simulators.outcome.KEY_FIGURES`, with units), the faults table with each fault's
effect, and the verdict line: rich tables on a terminal, aligned plain text
(:func:`plain_summary`) otherwise. Text from the scenario is shown literally: rich
markup is never interpreted and control characters (which could move the cursor or
recolour the terminal) are replaced by U+FFFD.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, TextIO

from rich.console import Console, JustifyMethod
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ..outcome import RunOutcome
from ..scenario import format_duration
from ._figures import FigureRow, figure_rows, format_figure, format_time, verdict
from ._svg import seconds_label

__all__ = ["ProgressCallback", "plain_summary", "print_summary", "progress_bar", "rich_summary"]

ProgressCallback = Callable[[float], None]
"""What a runner calls with the scenario seconds done."""

_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
_REDRAWS: Final = 500
_LABEL: Final = 24


def _ignore(done_s: float) -> None:
    """Progress off a terminal: nothing to draw."""


@contextmanager
def progress_bar(
    total_s: float, *, label: str, stream: TextIO | None = None
) -> Iterator[ProgressCallback]:
    """A progress callback for a run of ``total_s`` scenario seconds, drawn on ``stream``."""
    stream = stream if stream is not None else sys.stderr
    if not _is_terminal(stream):
        yield _ignore
        return
    total = max(total_s, 1e-9)
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=24),
        TaskProgressColumn(),
        TextColumn("{task.fields[scenario_time]}", markup=False),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=stream)) as bar:
        name = _shorten(_safe(label), _LABEL)
        task = bar.add_task(name, total=total, scenario_time=_time_text(0.0, total))
        yield _throttled(bar, task, total)


def print_summary(outcome: RunOutcome, *, stream: TextIO | None = None) -> None:
    """The summary and verdict on ``stream`` (stdout): rich on a terminal, else plain."""
    stream = stream if stream is not None else sys.stdout
    if _is_terminal(stream):
        rich_summary(outcome, Console(file=stream))
    else:
        stream.write(plain_summary(outcome))
        stream.flush()


def rich_summary(outcome: RunOutcome, console: Console) -> None:
    """The summary as rich tables on ``console``."""
    console.print(Text(_heading(outcome), style="bold"))
    key, others = _split(outcome)
    console.print(_rich_figures("Key figures", key, full=True))
    if others:
        console.print(_rich_figures(f"Other figures of {outcome.mode} mode", others, full=False))
    console.print(_rich_faults(outcome))
    judged = verdict(outcome.figures)
    style = "bold green" if judged.ok else "bold red"
    console.print(Text(f"VERDICT: {judged.text}", style=style))


def plain_summary(outcome: RunOutcome) -> str:
    """The summary as aligned plain text (no colour, no escape codes)."""
    key, others = _split(outcome)
    lines = [_heading(outcome), "", "Key figures"]
    lines += _aligned(
        [["figure", "value", "unit", "meaning"]]
        + [[row.name, format_figure(row.value), row.unit, row.meaning] for row in key],
        right={1},
    )
    if others:
        lines += ["", f"Other figures of {outcome.mode} mode"]
        lines += _aligned(
            [["figure", "value"]] + [[row.name, format_figure(row.value)] for row in others],
            right={1},
        )
    lines.append("")
    if outcome.faults:
        lines.append("Faults")
        lines += _aligned(
            [["at", "kind", "target", "effect"]]
            + [[format_time(f.at_s), f.kind, f.target, f.effect] for f in outcome.faults],
            right={0},
        )
    else:
        lines.append("Faults: none injected")
    lines += ["", f"VERDICT: {verdict(outcome.figures).text}"]
    return "\n".join(_safe(line).rstrip() for line in lines) + "\n"


def _split(outcome: RunOutcome) -> tuple[list[FigureRow], list[FigureRow]]:
    """The key figures, and the extras the mode added."""
    rows = figure_rows(outcome.figures)
    return [row for row in rows if row.key], [row for row in rows if not row.key]


def _rich_figures(title: str, rows: list[FigureRow], *, full: bool) -> Table:
    table = Table(title=title, title_justify="left")
    columns: list[tuple[str, JustifyMethod]] = [("figure", "left"), ("value", "right")]
    if full:
        columns += [("unit", "left"), ("meaning", "left")]
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for row in rows:
        cells = [row.name, format_figure(row.value)]
        cells += [row.unit, row.meaning] if full else []
        table.add_row(*(Text(_safe(c)) for c in cells))
    return table


def _rich_faults(outcome: RunOutcome) -> Table | Text:
    if not outcome.faults:
        return Text("Faults: none injected")
    table = Table(title="Faults", title_justify="left")
    table.add_column("at", justify="right")
    for name in ("kind", "target", "effect"):
        table.add_column(name)
    for fault in outcome.faults:
        cells = (format_time(fault.at_s), fault.kind, fault.target, fault.effect)
        table.add_row(*(Text(_safe(c)) for c in cells))
    return table


def _heading(outcome: RunOutcome) -> str:
    decisions = len(outcome.decisions)
    return _safe(
        f"{outcome.scenario} - {outcome.mode} mode, seed {outcome.seed}, "
        f"{format_duration(outcome.duration_s)} of scenario time, "
        f"{decisions:,} access decision{'' if decisions == 1 else 's'}"
    )


def _aligned(rows: list[list[str]], *, right: set[int]) -> list[str]:
    rows = [[_safe(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def _throttled(bar: Progress, task: TaskID, total: float) -> ProgressCallback:
    step = total / _REDRAWS
    last = [-step]

    def advance(done_s: float) -> None:
        if math.isnan(done_s):  # nothing to show
            return
        done = min(max(done_s, 0.0), total)
        if done - last[0] < step and done < total:
            return
        last[0] = done
        bar.update(task, completed=done, scenario_time=_time_text(done, total))

    return advance


def _time_text(done: float, total: float) -> str:
    return f"{seconds_label(done)} of {seconds_label(total)}"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _safe(text: str) -> str:
    return _CONTROL.sub("\ufffd", text)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
