"""Reports of a simulated run: terminal view, canonical JSON, self-contained HTML.

Theory of operation: every renderer takes one :class:`~simulators.outcome.RunOutcome`
(the same for live and fast mode) and knows nothing of how it was produced. The key
figures carry the same names, units and order everywhere (:mod:`._figures`); the series
are summarized once (:mod:`._stats`) for JSON and plotted (:mod:`._plots`, drawn by the
hand-written SVG of :mod:`._svg`) for HTML. Modules, one job each:

==================  =====================================================
``_figures``        key figures: units, meanings, formatting, the verdict
``_stats``          series summaries (percentiles, peaks, completeness)
``_json``           ``--json``: the canonical JSON object
``_markup``         escaping for HTML/SVG, fixed-precision coordinates
``_svg``            step line, histogram panels, bar charts as SVG
``_plots``          which series becomes which chart, with its text alternative
``_html``           ``--html DIR``: the page and writing it
``_terminal``       progress bar, summary tables, plain-text fallback
``_errors``         :class:`ReportError` and :class:`ReportTargetError`
==================  =====================================================

Rendering never fails for any outcome (empty series, None percentiles, NaN, hostile
names); only writing to a place the user named can (:class:`ReportTargetError`).
"""

from __future__ import annotations

from ._errors import ReportError, ReportTargetError
from ._figures import FIGURE_INFO, Verdict, figure_rows, format_figure, format_time, verdict
from ._html import INDEX, prepare_html_dir, render_html, write_html
from ._json import report_data, report_json
from ._stats import SeriesSummary, summarize
from ._terminal import ProgressCallback, plain_summary, print_summary, progress_bar

__all__ = [
    "FIGURE_INFO",
    "INDEX",
    "ProgressCallback",
    "ReportError",
    "ReportTargetError",
    "SeriesSummary",
    "Verdict",
    "figure_rows",
    "format_figure",
    "format_time",
    "plain_summary",
    "prepare_html_dir",
    "print_summary",
    "progress_bar",
    "render_html",
    "report_data",
    "report_json",
    "summarize",
    "verdict",
    "write_html",
]
