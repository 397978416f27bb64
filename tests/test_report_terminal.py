"""The terminal view: progress bar on a terminal only, summary tables, the verdict line."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from simulators.outcome import KEY_FIGURES
from simulators.report import (
    FIGURE_INFO,
    format_figure,
    format_time,
    plain_summary,
    print_summary,
    progress_bar,
    verdict,
)
from simulators.report._terminal import rich_summary
from tests.test_report_samples import HOSTILE, busy, every_sample, quiet

SAMPLES = sorted(every_sample())
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def rich_text(name: str) -> str:
    out = io.StringIO()
    rich_summary(every_sample()[name], Console(file=out, force_terminal=True, width=240))
    return ANSI.sub("", out.getvalue())


@pytest.mark.parametrize("name", SAMPLES)
def test_every_key_figure_and_its_unit_are_in_both_summaries(name: str) -> None:
    for text in (plain_summary(every_sample()[name]), rich_text(name)):
        for figure in KEY_FIGURES:
            line = next(line for line in text.splitlines() if f" {figure} " in line)
            assert f" {FIGURE_INFO[figure].unit} " in line


@pytest.mark.parametrize("name", SAMPLES)
def test_the_plain_summary_has_no_escape_codes(name: str) -> None:
    text = plain_summary(every_sample()[name])
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)
    assert text.splitlines()[-1].startswith("VERDICT: ")


def test_the_plain_summary_lists_faults_with_their_effects() -> None:
    text = plain_summary(busy())
    assert "broker_outage  broker          40 bundles held 7,200 s; nothing lost" in text
    assert "Faults: none injected" in plain_summary(quiet())


def test_the_mode_extras_follow_the_key_figures() -> None:
    text = plain_summary(busy())
    assert text.index("Key figures") < text.index("Other figures of fast mode")
    assert text.index("lost_updates") < text.index("wall_s")
    assert "Other figures" in rich_text("busy") and "Other figures" not in rich_text("quiet")


def test_fault_times_read_like_a_scenario_file() -> None:
    assert "  2h30m0.5s  power_cut" in plain_summary(busy())
    assert format_time(float("nan")) == "n/a"


def test_not_measured_figures_read_n_a() -> None:
    line = next(
        line for line in plain_summary(quiet()).splitlines() if "revocation_latency_s_p99" in line
    )
    assert " n/a " in line


def test_hostile_names_are_shown_literally_on_a_terminal() -> None:
    text = rich_text("hostile")
    assert "[bold red]rich[/]" in text  # rich markup is not interpreted
    assert "\x07" not in text and "\x00" not in text
    assert "<script>alert('x')</script>" in text
    assert HOSTILE not in text  # its control characters were replaced


def test_rich_summary_shows_the_verdict_and_faults() -> None:
    text = rich_text("lossy")
    assert "VERDICT: LOST: 2 door updates lost; 1 audit event lost" in text
    assert "broker_outage" in text and "40 bundles held 7,200 s; nothing lost" in text
    assert "Faults: none injected" in rich_text("quiet")


def test_print_summary_is_plain_off_a_terminal_and_rich_on_one() -> None:
    piped = io.StringIO()
    print_summary(busy(), stream=piped)
    assert piped.getvalue() == plain_summary(busy())
    terminal = Terminal()
    print_summary(busy(), stream=terminal)
    assert terminal.getvalue() != plain_summary(busy()) and "Key figures" in terminal.getvalue()


@pytest.mark.parametrize(
    ("figures", "text"),
    [
        ({"lost_updates": 0, "lost_audit_events": 0}, "nothing lost: "),
        ({"lost_updates": 1, "lost_audit_events": 0}, "LOST: 1 door update lost"),
        ({"lost_updates": 0, "lost_audit_events": 3}, "LOST: 3 audit events lost"),
        ({"lost_audit_events": 0}, "LOST: lost_updates was not measured"),
        ({"lost_updates": float("nan"), "lost_audit_events": 0}, "LOST: lost_updates was not"),
    ],
)
def test_the_verdict(figures: dict[str, int | float | None], text: str) -> None:
    judged = verdict(figures)
    assert judged.text.startswith(text)
    assert judged.ok is text.startswith("nothing")


def test_the_verdict_mentions_updates_still_pending() -> None:
    judged = verdict({"lost_updates": 0, "lost_audit_events": 0, "pending_door_updates": 4})
    assert judged.ok and judged.text.endswith("(4 door updates still pending at the end)")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "n/a"),
        (float("nan"), "n/a"),
        (12345, "12,345"),
        (0.0521, "0.052"),
        (7200.04, "7,200.0"),
    ],
)
def test_figures_are_formatted_for_people(value: int | float | None, text: str) -> None:
    assert format_figure(value) == text


def test_progress_off_a_terminal_draws_nothing() -> None:
    stream = io.StringIO()
    with progress_bar(100.0, label="x", stream=stream) as progress:
        for done in range(101):
            progress(float(done))
    assert stream.getvalue() == ""


def test_progress_on_a_terminal_draws_a_bar_and_survives_odd_values() -> None:
    stream = Terminal()
    with progress_bar(86400.0, label=HOSTILE, stream=stream) as progress:
        for done in (0.0, -5.0, float("nan"), 3600.0, 1e9, 43200.0):
            progress(done)
        for step in range(20_000):  # a runner calling per event is cheap
            progress(step * 4.32)
        progress(86400.0)
    text = ANSI.sub("", stream.getvalue())
    assert "100%" in text and "1d of 1d" in text
    assert "\x07" not in text and "<script>alert(" in text


def test_progress_of_a_zero_length_run() -> None:
    with progress_bar(0.0, label="x", stream=Terminal()) as progress:
        progress(0.0)
