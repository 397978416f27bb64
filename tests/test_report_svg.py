"""The hand-written SVG charts: axes, ticks, scales, escaping, determinism."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from simulators.report._markup import esc, num
from simulators.report._svg import (
    Scale,
    bar_chart,
    histogram_chart,
    linear_ticks,
    log_ticks,
    nice_step,
    seconds_label,
    step_chart,
)

SVG = "{http://www.w3.org/2000/svg}"
NASTY = "a<b & 'c' \"d\" \x00\x1b"


def texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text")]


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(0, "0"), (0.05, "50ms"), (1, "1s"), (90, "1.5m"), (7200, "2h"), (86400, "1d")],
)
def test_seconds_labels(seconds: float, label: str) -> None:
    assert seconds_label(seconds) == label


def test_nice_steps_are_one_two_five() -> None:
    assert [nice_step(x) for x in (0.7, 1.0, 1.2, 3, 7, 420)] == [1, 1, 2, 5, 10, 500]
    assert nice_step(0) == 1.0 and nice_step(math.nan) == 1.0


def test_time_ticks_fall_on_whole_units() -> None:
    assert linear_ticks(86400, time=True) == [i * 21600.0 for i in range(5)]
    assert linear_ticks(3600, time=True) == [i * 900.0 for i in range(5)]
    assert linear_ticks(0.3, time=True)[-1] >= 0.3
    weeks = linear_ticks(60 * 86400, time=True)
    assert weeks[-1] >= 60 * 86400 and len(weeks) <= 7


def test_log_ticks_are_time_decades() -> None:
    assert log_ticks(0.01, 100000) == [0.01, 0.1, 1, 10, 60, 600, 3600, 86400]
    assert len(log_ticks(1e-9, 1e7)) <= 10


def test_a_log_scale_clamps_values_outside_its_range() -> None:
    scale = Scale(1.0, 1000.0, 0.0, 300.0, log=True)
    assert (scale(0.0), scale(10.0), scale(1e6)) == (0.0, 100.0, 300.0)
    assert Scale(5.0, 5.0, 0.0, 10.0)(5.0) == 0.0


def test_escaping_covers_markup_and_characters_xml_forbids() -> None:
    assert esc(NASTY) == "a&lt;b &amp; &#x27;c&#x27; &quot;d&quot; \ufffd\ufffd"
    assert num(-0.04) == "0.0" and num(1.25) == "1.2"


def test_charts_escape_titles_labels_and_descriptions() -> None:
    charts = [
        step_chart([(0, 1)], ident=NASTY, title=NASTY, desc=NASTY, x_end=10, y_label=NASTY),
        histogram_chart([(NASTY, [1.0])], ident="h", title=NASTY, desc=NASTY, x_label=NASTY),
        bar_chart([(NASTY, 1.0)], ident="b", title=NASTY, desc=NASTY, value_text=lambda v: NASTY),
    ]
    for chart in charts:
        root = ET.fromstring(chart)
        title = root.find(f"{SVG}title")
        assert title is not None and title.text == "a<b & 'c' \"d\" \ufffd\ufffd"


def test_empty_charts_say_no_samples() -> None:
    assert "no samples" in texts(
        step_chart([], ident="s", title="t", desc="d", x_end=0, y_label="y")
    )
    assert "no samples" in texts(
        histogram_chart([("a", []), ("b", [])], ident="h", title="t", desc="d", x_label="x")
    )
    assert "no samples" in texts(bar_chart([], ident="b", title="t", desc="d", value_text=str))


def step_path(points: list[tuple[float, float]], x_end: float) -> list[str]:
    svg = step_chart(points, ident="s", title="t", desc="d", x_end=x_end, y_label="y")
    path = ET.fromstring(svg).find(f"{SVG}path")
    assert path is not None
    return path.get("d", "").split()


def test_a_step_line_holds_each_value_to_the_end() -> None:
    commands = step_path([(0, 0), (50, 2), (75, 1)], x_end=100)
    axis = Scale(0.0, linear_ticks(100, time=True)[-1], 64, 696)
    assert commands[:2] == ["M64.0", "196.0"] and commands[-1] == f"H{num(axis(100))}"
    assert [c[0] for c in commands[2:]] == ["H", "V", "H", "V", "H"]


def test_many_points_in_one_pixel_keep_their_extremes() -> None:
    commands = step_path([(i / 1000, float(i % 7)) for i in range(1000)], x_end=100)
    columns = sum(1 for c in commands if c.startswith("H")) - 1
    assert columns <= 6 and len(commands) <= 2 + 4 * (columns + 1)
    highest = step_path([(0, 6)], x_end=100)[1]
    assert f"V{highest}" in commands  # the peak (6) survives the collapse


def test_histograms_count_every_finite_sample() -> None:
    values = [0.0, 0.001, 1.0, 10.0, 100.0, float("nan")]
    svg = histogram_chart([("x", values)], ident="h", title="t", desc="d", x_label="x")
    bars = ET.fromstring(svg).iter(f"{SVG}rect")
    counts = [int((b.find(f"{SVG}title").text or "").split()[0]) for b in bars]  # type: ignore[union-attr]
    assert sum(counts) == 5
    assert "x (n=5)" in texts(svg)


def test_charts_are_deterministic() -> None:
    points = [(i * 1.7, float(i % 5)) for i in range(300)]
    first = step_chart(points, ident="s", title="t", desc="d", x_end=600, y_label="y")
    assert first == step_chart(points, ident="s", title="t", desc="d", x_end=600, y_label="y")
