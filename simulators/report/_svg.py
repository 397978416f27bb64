"""Three small SVG charts, written by hand: step line, histogram panels, horizontal bars.

Theory of operation: a chart is a string, built from plain numbers with no randomness,
no clock and no ids beyond the ``ident`` the caller gives, so the same data is the same
bytes (coordinates have one decimal, :func:`~._markup.num`). Every chart is an
accessible image: ``role="img"`` labelled by its ``<title>`` and ``<desc>`` (the caller's
text alternative), and every text from the data is escaped (:func:`~._markup.esc`).

Axes: time axes tick at whole seconds, minutes, hours or days; other linear axes at
1-2-5 steps; a histogram's value axis turns logarithmic (decade ticks) when its positive
samples span two decades or more, with samples at or below the first decade counted in
the first bin. A step line with more points than the plot has pixels is drawn per pixel
column (first, highest, lowest and last value), so peaks survive and size stays bounded.

Why not a library: matplotlib draws this well but is a large dependency whose SVG needs
settings to be reproducible and is not labelled for screen readers; pygal's charts lean
on JavaScript. These three charts need about three hundred lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ._markup import esc, num

__all__ = ["bar_chart", "histogram_chart", "seconds_label", "step_chart"]

WIDTH: Final = 720
LEFT: Final = 64
RIGHT: Final = 24
TOP: Final = 14
BOTTOM: Final = 44
INK: Final = "#1b1b1b"
GRID: Final = "#d4d4d4"
FILL: Final = "#1f5fa8"
_TIME_STEPS: Final = (
    *(1, 2, 5, 10, 15, 30),
    *(60 * m for m in (1, 2, 5, 10, 15, 30)),
    *(3600 * h for h in (1, 2, 3, 6, 12)),
    *(86400 * d for d in (1, 2, 7, 14, 28)),
)

_LOG_TIME: Final = (60.0, 600.0, 3600.0, 86400.0, 604800.0)


@dataclass(frozen=True)
class Scale:
    """Data range ``lo..hi`` onto pixels ``start..end``, linear or logarithmic."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        if self.log:
            value = min(max(value, self.lo), self.hi)
            lo, hi, value = math.log10(self.lo), math.log10(self.hi), math.log10(value)
        else:
            lo, hi = self.lo, self.hi
        share = (value - lo) / (hi - lo) if hi > lo else 0.0
        return self.start + share * (self.end - self.start)


def seconds_label(seconds: float) -> str:
    """A tick label for a time: ``250ms``, ``30s``, ``5m``, ``2h``, ``1.5d``."""
    size = abs(seconds)
    if size == 0:
        return "0"
    for unit, factor in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if size >= factor:
            return f"{seconds / factor:.3g}{unit}"
    return f"{seconds * 1000:.3g}ms"


def nice_step(raw: float) -> float:
    """The 1-2-5 step at or above ``raw``."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def linear_ticks(hi: float, *, target: int = 5, time: bool = False) -> list[float]:
    """Ticks from 0 to at least ``hi`` (the last tick is the axis end)."""
    raw = hi / target if hi > 0 else 1.0
    if time and raw >= 1:
        step = next((float(s) for s in _TIME_STEPS if s >= raw), 0.0)
        step = step or 604800 * nice_step(raw / 604800)
    else:
        step = nice_step(raw)
    count = max(1, math.ceil(hi / step - 1e-9))
    return [i * step for i in range(count + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks of a logarithmic time axis from ``lo`` to ``hi``: decades of seconds below a
    minute, then a minute, ten minutes, an hour, a day, a week; at most ten of them."""
    below = [10.0**k for k in range(round(math.log10(lo)), 2)]
    ticks = [t for t in (*below, *_LOG_TIME) if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    if len(ticks) > 10:
        ticks = ticks[:: math.ceil(len(ticks) / 10)]
    return ticks


def step_chart(
    points: Sequence[tuple[float, float]],
    *,
    ident: str,
    title: str,
    desc: str,
    x_end: float,
    y_label: str,
    y_top: float | None = None,
    integer: bool = True,
) -> str:
    """A step line of ``(time, value)`` held until the next point, drawn to ``x_end``."""
    ordered = sorted(points, key=lambda p: p[0])
    height = 240
    x_ticks = linear_ticks(max(x_end, ordered[-1][0] if ordered else 0.0, 1.0), time=True)
    y_hi = y_top if y_top is not None else max((p[1] for p in ordered), default=0.0)
    y_ticks = _integer(linear_ticks(max(y_hi, 1.0), target=4)) if integer else linear_ticks(y_hi)
    sx = Scale(0.0, x_ticks[-1], LEFT, WIDTH - RIGHT)
    sy = Scale(0.0, y_ticks[-1], height - BOTTOM, TOP)
    body = _axes(sx, sy, x_ticks, y_ticks, seconds_label, _value_label, "time since start")
    body.append(_y_title(y_label, sy))
    if ordered:
        path = _step_path(ordered, sx, sy, sx(x_end))
        body.append(f'<path d="{path}" fill="none" stroke="{FILL}" stroke-width="2"/>')
    else:
        body.append(_note("no samples", sx, sy))
    return _document(ident, title, desc, height, body)


def histogram_chart(
    panels: Sequence[tuple[str, Sequence[float]]],
    *,
    ident: str,
    title: str,
    desc: str,
    x_label: str,
    bins: int = 30,
) -> str:
    """One histogram per ``(label, samples)`` panel, stacked on one shared value axis."""
    samples = [v for _, values in panels for v in values if math.isfinite(v)]
    scale_x, ticks = _value_axis(samples)
    panel_h, gap = 96.0, 30.0
    height = int(TOP + len(panels) * (panel_h + gap) + BOTTOM)
    body: list[str] = []
    for index, (label, values) in enumerate(panels):
        top = TOP + gap + index * (panel_h + gap)
        body += _histogram_panel(label, values, scale_x, top, panel_h, bins)
    bottom = height - BOTTOM
    body += _x_axis(scale_x, ticks, seconds_label, x_label, bottom)
    return _document(ident, title, desc, height, body)


def bar_chart(
    rows: Sequence[tuple[str, float]],
    *,
    ident: str,
    title: str,
    desc: str,
    value_text: Callable[[float], str],
) -> str:
    """Horizontal bars, one per ``(label, value)`` row, in the order given."""
    row_h, label_w, value_w = 20.0, 220.0, 96.0
    if not rows:
        return _document(ident, title, desc, 60, [_text(WIDTH / 2, 34, "no samples")])
    height = int(TOP + len(rows) * row_h + 12)
    top_value = max((v for _, v in rows), default=0.0)
    sx = Scale(0.0, top_value if top_value > 0 else 1.0, label_w, WIDTH - value_w)
    body: list[str] = [_line(label_w, TOP, label_w, height - 8, INK)]
    for index, (label, value) in enumerate(rows):
        y = TOP + index * row_h
        width = max(sx(value) - label_w, 0.0)
        body.append(
            f"<g><title>{esc(label)}: {esc(value_text(value))}</title>"
            f"{_text(label_w - 6, y + 14, _shorten(label, 32), 'end')}"
            f'<rect x="{num(label_w)}" y="{num(y + 3)}" width="{num(width)}" '
            f'height="{num(row_h - 6)}" fill="{FILL}"/>'
            f"{_text(label_w + width + 4, y + 14, value_text(value), 'start')}</g>"
        )
    return _document(ident, title, desc, height, body)


def _value_axis(samples: list[float]) -> tuple[Scale, list[float]]:
    """A histogram's value axis: logarithmic when the samples span two decades."""
    positive = [v for v in samples if v > 0]
    hi = max(samples, default=1.0)
    if positive and hi / min(positive) >= 100:
        lo = 10.0 ** math.floor(math.log10(min(positive)))
        top = 10.0 ** math.ceil(math.log10(hi))
        return Scale(lo, top, LEFT, WIDTH - RIGHT, log=True), log_ticks(lo, top)
    ticks = linear_ticks(hi if hi > 0 else 1.0, time=True)
    return Scale(0.0, ticks[-1], LEFT, WIDTH - RIGHT), ticks


def _histogram_panel(
    label: str, values: Sequence[float], sx: Scale, top: float, height: float, bins: int
) -> list[str]:
    finite = [v for v in values if math.isfinite(v)]
    counts = [0] * bins
    for value in finite:
        share = (sx(value) - sx.start) / (sx.end - sx.start)
        counts[min(bins - 1, max(0, int(share * bins)))] += 1
    bottom = top + height
    out = [
        _text(LEFT, top - 8, f"{label} (n={len(finite):,})", "start", bold=True),
        _line(LEFT, bottom, WIDTH - RIGHT, bottom, INK),
    ]
    if not finite:
        return [*out, _text((LEFT + WIDTH - RIGHT) / 2, top + height / 2, "no samples")]
    peak = max(counts)
    out.append(_text(LEFT - 6, top + 10, f"{peak:,}", "end"))
    width = (sx.end - sx.start) / bins
    for index, count in enumerate(counts):
        if count:
            bar = count / peak * height
            x = sx.start + index * width
            out.append(
                f'<rect x="{num(x + 0.5)}" y="{num(bottom - bar)}" width="{num(width - 1)}" '
                f'height="{num(bar)}" fill="{FILL}"><title>{count:,} '
                f"sample{'' if count == 1 else 's'}</title></rect>"
            )
    return out


def _step_path(points: Sequence[tuple[float, float]], sx: Scale, sy: Scale, x_end: float) -> str:
    """``M``/``H``/``V`` commands; points in one pixel column collapse to their extremes."""
    columns: list[tuple[float, list[float]]] = []
    for x, y in points:
        px = sx(x)
        if columns and int(px) == int(columns[-1][0]):
            columns[-1][1].append(y)
        else:
            columns.append((px, [y]))
    first_x, first_ys = columns[0]
    parts = [f"M{num(first_x)} {num(sy(first_ys[0]))}"]
    for index, (px, ys) in enumerate(columns):
        if index:
            parts.append(f"H{num(px)}")
        else:
            ys = ys[1:]  # the move went to the first value already
        steps = ys if len(ys) <= 3 else [max(ys), min(ys), ys[-1]]
        parts += [f"V{num(sy(y))}" for y in steps]
    parts.append(f"H{num(max(x_end, columns[-1][0]))}")
    return " ".join(parts)


def _axes(
    sx: Scale,
    sy: Scale,
    x_ticks: list[float],
    y_ticks: list[float],
    x_text: Callable[[float], str],
    y_text: Callable[[float], str],
    x_label: str,
) -> list[str]:
    out: list[str] = []
    for tick in y_ticks:
        y = sy(tick)
        out.append(_line(sx.start, y, sx.end, y, GRID))
        out.append(_text(sx.start - 6, y + 4, y_text(tick), "end"))
    return out + _x_axis(sx, x_ticks, x_text, x_label, sy.start)


def _x_axis(
    sx: Scale, ticks: list[float], text: Callable[[float], str], label: str, y: float
) -> list[str]:
    out = [_line(sx.start, y, sx.end, y, INK)]
    for tick in ticks:
        x = sx(tick)
        out.append(_line(x, y, x, y + 5, INK))
        out.append(_text(x, y + 18, text(tick)))
    out.append(_text((sx.start + sx.end) / 2, y + 36, label))
    return out


def _y_title(label: str, sy: Scale) -> str:
    middle = (sy.start + sy.end) / 2
    return (
        f'<text x="14" y="{num(middle)}" text-anchor="middle" fill="{INK}" '
        f'transform="rotate(-90 14 {num(middle)})">{esc(label)}</text>'
    )


def _note(text: str, sx: Scale, sy: Scale) -> str:
    return _text((sx.start + sx.end) / 2, (sy.start + sy.end) / 2, text)


def _document(ident: str, title: str, desc: str, height: int, body: list[str]) -> str:
    ident = esc(ident)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'aria-labelledby="{ident}-title {ident}-desc" font-family="sans-serif" '
        f'font-size="12"><title id="{ident}-title">{esc(title)}</title>'
        f'<desc id="{ident}-desc">{esc(desc)}</desc>' + "".join(body) + "</svg>"
    )


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str) -> str:
    return (
        f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" '
        f'stroke="{stroke}" stroke-width="1"/>'
    )


def _text(x: float, y: float, text: str, anchor: str = "middle", *, bold: bool = False) -> str:
    weight = ' font-weight="bold"' if bold else ""
    return (
        f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}" fill="{INK}"{weight}>'
        f"{esc(text)}</text>"
    )


def _value_label(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def _integer(ticks: list[float]) -> list[float]:
    """Ticks of a count axis: whole numbers only."""
    step = max(1.0, ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    return [i * step for i in range(math.ceil(ticks[-1] / step) + 1)]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
