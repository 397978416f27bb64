"""``doorsim run --html DIR``: one self-contained, accessible page, ``DIR/index.html``.

Theory of operation: :func:`render_html` writes the page as a string: inline CSS, inline
SVG plots (:mod:`._plots`), no script, no external resource, nothing read from the
network or the clock, so the same outcome is the same bytes. The page is well-formed
XML as well as HTML (void elements closed, every text escaped by :func:`~._markup.esc`),
so a test, or a reader's tooling, can parse it strictly. Structure for assistive
technology: one ``h1``, an ``h2`` per section, tables with captions and ``th`` scopes,
each plot a ``figure`` with a ``figcaption`` and an SVG labelled by its title and a text
alternative giving the plotted numbers.

:func:`prepare_html_dir` checks the target before a run starts (a long run must not fail
at its end): it creates the directory when missing and refuses, with
:class:`~._errors.ReportTargetError`, a path that is a file or cannot be written.
:func:`write_html` writes ``index.html`` through a temporary file and an atomic rename.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

from ..outcome import FaultRecord, RunOutcome
from ._errors import ReportTargetError
from ._figures import FigureRow, figure_rows, format_figure, format_time, verdict
from ._markup import esc
from ._plots import Plot, plots

__all__ = ["INDEX", "prepare_html_dir", "render_html", "write_html"]

INDEX: Final = "index.html"

_CSS: Final = """
body{font-family:system-ui,sans-serif;color:#1b1b1b;background:#fff;margin:2rem auto;
max-width:60rem;padding:0 1rem;line-height:1.45}
table{border-collapse:collapse;margin:1rem 0}caption{text-align:left;font-weight:bold;
padding:.25rem 0}th,td{border:1px solid #b8b8b8;padding:.3rem .6rem;text-align:left;
vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#eef2f7}.ok{color:#155724;background:#e6f4ea;padding:.5rem}
.lost{color:#721c24;background:#fbe9eb;padding:.5rem}figure{margin:1.5rem 0}
figcaption{font-size:.95rem;margin-top:.3rem}svg{max-width:100%;height:auto}
dt{font-weight:bold;float:left;clear:left;width:9rem}dd{margin-left:10rem}
""".strip()


def render_html(outcome: RunOutcome) -> str:
    """The whole report page."""
    title = f"doorsim report: {outcome.scenario}"
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8"/>\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>\n',
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n",
        f"<h1>{esc(title)}</h1>\n",
        _run_facts(outcome),
        _verdict(outcome),
        _figures_section(outcome),
        _faults_table(outcome.faults),
        '<section aria-labelledby="plots">\n<h2 id="plots">Plots</h2>\n',
        *(_figure(plot) for plot in plots(outcome)),
        "</section>\n</main>\n</body>\n</html>\n",
    ]
    return "".join(parts)


def prepare_html_dir(directory: Path) -> Path:
    """``directory``, created if missing; :class:`ReportTargetError` if unusable."""
    if directory.exists() and not directory.is_dir():
        raise ReportTargetError(directory, "exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReportTargetError(directory, f"cannot create it: {_why(error)}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ReportTargetError(directory, "is not writable")
    return directory


def write_html(outcome: RunOutcome, directory: Path) -> Path:
    """Write ``directory/index.html`` (atomically) and return its path."""
    prepare_html_dir(directory)
    page = render_html(outcome).encode("utf-8")
    target = directory / INDEX
    if target.is_dir():
        raise ReportTargetError(target, "exists and is a directory")
    try:
        handle, temporary = tempfile.mkstemp(prefix=".index-", suffix=".tmp", dir=directory)
        with os.fdopen(handle, "wb") as file:
            file.write(page)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError as error:
        raise ReportTargetError(target, f"cannot write it: {_why(error)}") from None
    return target


def _run_facts(outcome: RunOutcome) -> str:
    facts = [
        ("scenario", outcome.scenario),
        ("mode", outcome.mode),
        ("seed", str(outcome.seed)),
        ("duration_s", f"{format_figure(outcome.duration_s)} ({format_time(outcome.duration_s)})"),
        ("decisions", f"{len(outcome.decisions):,}"),
    ]
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>\n" for k, v in facts)
    return f"<dl>\n{items}</dl>\n"


def _verdict(outcome: RunOutcome) -> str:
    judged = verdict(outcome.figures)
    css = "ok" if judged.ok else "lost"
    return f'<p class="{css}" role="status"><strong>Verdict:</strong> {esc(judged.text)}</p>\n'


def _figures_section(outcome: RunOutcome) -> str:
    rows = figure_rows(outcome.figures)
    key = [row for row in rows if row.key]
    others = [row for row in rows if not row.key]
    html = (
        '<section aria-labelledby="figures">\n<h2 id="figures">Key figures</h2>\n'
        + _figures_table(key, "Key figures, named as in <code>--json</code>", full=True)
    )
    if others:
        caption = f"Other figures of {esc(outcome.mode)} mode, named as in <code>--json</code>"
        html += _figures_table(others, caption, full=False)
    return html + "</section>\n"


def _figures_table(rows: list[FigureRow], caption: str, *, full: bool) -> str:
    """A figures table; ``full`` adds the unit and meaning columns."""
    extra = ("unit", "meaning") if full else ()
    head = "".join(f'<th scope="col">{name}</th>' for name in ("figure", "value", *extra))
    body = "".join(
        f'<tr><th scope="row"><code>{esc(row.name)}</code></th>'
        f'<td class="num">{esc(format_figure(row.value))}</td>'
        + (f"<td>{esc(row.unit)}</td><td>{esc(row.meaning)}</td>" if full else "")
        + "</tr>\n"
        for row in rows
    )
    return (
        f"<table>\n<caption>{caption}</caption>\n<thead><tr>{head}</tr></thead>\n"
        f"<tbody>\n{body}</tbody>\n</table>\n"
    )


def _faults_table(faults: list[FaultRecord]) -> str:
    head = '<section aria-labelledby="faults">\n<h2 id="faults">Faults</h2>\n'
    if not faults:
        return head + "<p>No faults were injected.</p>\n</section>\n"
    body = "".join(
        f'<tr><td class="num">{esc(format_time(f.at_s))}</td><td>{esc(f.kind)}</td>'
        f"<td>{esc(f.target)}</td><td>{esc(f.effect)}</td></tr>\n"
        for f in faults
    )
    return (
        head + "<table>\n<caption>Faults injected and what each did</caption>\n"
        '<thead><tr><th scope="col">at</th><th scope="col">kind</th>'
        '<th scope="col">target</th><th scope="col">effect</th></tr></thead>\n'
        f"<tbody>\n{body}</tbody>\n</table>\n</section>\n"
    )


def _figure(plot: Plot) -> str:
    return (
        f'<figure id="{esc(plot.ident)}">\n<h3>{esc(plot.heading)}</h3>\n{plot.svg}\n'
        f"<figcaption>{esc(plot.caption)}</figcaption>\n</figure>\n"
    )


def _why(error: OSError) -> str:
    return error.strerror or str(error)
