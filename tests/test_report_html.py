"""``--html DIR``: a self-contained, well-formed, accessible page with the tables and plots."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from simulators.outcome import KEY_FIGURES, DoorTraffic, RunOutcome
from simulators.report import (
    INDEX,
    ReportTargetError,
    prepare_html_dir,
    render_html,
    report_json,
    write_html,
)
from simulators.report._plots import TOP_DOORS
from tests.test_report_samples import HOSTILE, busy, every_sample, quiet

SAMPLES = sorted(every_sample())
SVG = "{http://www.w3.org/2000/svg}"
VOID = {"meta", "br", "hr", "img", "input", "link"}


def page(outcome: RunOutcome) -> ET.Element:
    """The page parsed as XML (it must be well-formed)."""
    return ET.fromstring(render_html(outcome))


def visible(text: str) -> str:
    """``text`` as the page shows it: control characters replaced by U+FFFD."""
    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f]", "\ufffd", text)


class TagBalance(HTMLParser):
    """Every non-void element closed, in order, by the HTML parser's reading."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


@pytest.mark.parametrize("name", SAMPLES)
def test_the_page_is_well_formed_xml_and_balanced_html(name: str) -> None:
    text = render_html(every_sample()[name])
    ET.fromstring(text)
    checker = TagBalance()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == []


@pytest.mark.parametrize("name", SAMPLES)
def test_the_page_is_self_contained(name: str) -> None:
    text = render_html(every_sample()[name])
    assert "<script" not in text
    assert not re.search(r"\b(src|href)=", text)
    assert re.findall(r"https?://[^\"' ]+", text) == ["http://www.w3.org/2000/svg"] * 6
    assert "<style>" in text


@pytest.mark.parametrize("name", SAMPLES)
def test_the_figures_table_names_every_figure_as_the_json_does(name: str) -> None:
    outcome = every_sample()[name]
    root = page(outcome)
    section = root.find(".//section[@aria-labelledby='figures']")
    assert section is not None
    names = ["".join(th.itertext()) for th in section.iterfind(".//tbody/tr/th")]
    assert names[: len(KEY_FIGURES)] == list(KEY_FIGURES)
    assert set(names) == {visible(n) for n in json.loads(report_json(outcome))["figures"]}


@pytest.mark.parametrize("name", SAMPLES)
def test_every_plot_is_a_labelled_figure(name: str) -> None:
    root = page(every_sample()[name])
    figures = root.findall(".//figure")
    assert [f.get("id") for f in figures] == [
        "pending",
        "time-to-sync",
        "revocation",
        "bundle-bytes",
        "ble-airtime",
        "audit",
    ]
    for figure in figures:
        svg = figure.find(f"{SVG}svg")
        assert svg is not None and svg.get("role") == "img"
        title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
        assert title is not None and title.text and desc is not None and desc.text
        assert svg.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
        caption = figure.find("figcaption")
        assert caption is not None and caption.text
        assert figure.find("h3") is not None


@pytest.mark.parametrize("name", SAMPLES)
def test_the_same_outcome_gives_the_same_page(name: str) -> None:
    assert render_html(every_sample()[name]) == render_html(every_sample()[name])


def test_the_page_has_headings_and_table_headers() -> None:
    root = page(busy())
    assert len(root.findall(".//h1")) == 1
    assert ["".join(h.itertext()) for h in root.iter("h2")] == ["Key figures", "Faults", "Plots"]
    for table in root.iter("table"):
        assert table.find("caption") is not None
        assert all(th.get("scope") == "col" for th in table.iterfind("thead/tr/th"))


def test_hostile_names_are_escaped_everywhere() -> None:
    text = render_html(every_sample()["hostile"])
    assert "<script>" not in text and "\x1b" not in text and "\x00" not in text
    root = ET.fromstring(text)
    shown = visible(HOSTILE)
    title = root.find("head/title")
    assert title is not None and title.text == f"doorsim report: {shown}"
    cells = ["".join(td.itertext()) for td in root.iter("td")]
    assert cells.count(shown) == 3  # the fault's kind, target and effect
    bars = [t.text for t in root.iter(f"{SVG}title") if t.text and t.text.startswith(shown)]
    assert bars, "the hostile door's bar is titled with its full, escaped name"


def test_the_faults_table_shows_each_effect() -> None:
    root = page(busy())
    rows = root.findall(".//section[@aria-labelledby='faults']//tbody/tr")
    assert ["".join(td.itertext()) for td in rows[0]] == [
        "1h",
        "broker_outage",
        "broker",
        "40 bundles held 7,200 s; nothing lost",
    ]


def test_the_mode_extras_are_in_their_own_table() -> None:
    root = page(busy())
    tables = root.findall(".//section[@aria-labelledby='figures']/table")
    assert len(tables) == 2
    caption = tables[1].find("caption")
    assert caption is not None and "".join(caption.itertext()).startswith("Other figures of fast")
    assert ["".join(th.itertext()) for th in tables[1].iterfind("tbody/tr/th")] == [
        "pending_door_updates",
        "wall_s",
    ]
    assert len(page(quiet()).findall(".//section[@aria-labelledby='figures']/table")) == 1


def test_no_faults_and_empty_series_say_so() -> None:
    text = render_html(quiet())
    assert "No faults were injected." in text
    assert text.count("no samples") >= 4
    assert "No door was ever pending." in text
    assert "n/a" in text


def test_the_verdict_is_shown_with_what_was_lost() -> None:
    root = page(every_sample()["lossy"])
    status = root.find(".//p[@role='status']")
    assert status is not None and status.get("class") == "lost"
    assert "2 door updates lost; 1 audit event lost" in "".join(status.itertext())


def test_many_doors_show_the_top_ones_largest_first() -> None:
    outcome = busy()
    root = page(outcome)
    chart = root.find(".//figure[@id='bundle-bytes']")
    assert chart is not None
    bars = chart.findall(f".//{SVG}rect")
    assert len(bars) == TOP_DOORS
    widths = [float(bar.get("width", "0")) for bar in bars]
    assert widths == sorted(widths, reverse=True)
    assert f"the {TOP_DOORS} largest shown" in "".join(chart.itertext())


def test_a_wide_range_of_sync_times_gets_a_log_axis() -> None:
    root = page(busy())
    chart = root.find(".//figure[@id='time-to-sync']")
    assert chart is not None
    labels = {t.text for t in chart.iter(f"{SVG}text")}
    assert {"10ms", "100ms", "1s", "1m", "1h", "1d"} <= labels


def test_a_long_series_is_drawn_per_pixel_column() -> None:
    outcome = busy()
    assert len(outcome.series.pending_doors) == 6000
    root = page(outcome)
    path = root.find(f".//figure[@id='pending']//{SVG}path")
    assert path is not None
    assert len(path.get("d", "").split()) < 4 * 720


def test_no_door_is_pending_before_the_first_change() -> None:
    outcome = quiet()
    outcome.series.pending_doors = [(600.0, 2), (1200.0, 0)]
    path = page(outcome).find(f".//figure[@id='pending']//{SVG}path")
    assert path is not None
    assert path.get("d", "").split()[:3] == ["M64.0", "196.0", "H169.3"]


def test_airtime_counts_every_door_that_used_the_radio() -> None:
    outcome = quiet()
    outcome.series.doors = [
        DoorTraffic("T", "Main", True, 260, 0.15),
        DoorTraffic("T", "Basement", False, 0, 0.0),
    ]
    chart = page(outcome).find(".//figure[@id='ble-airtime']")
    assert chart is not None
    titles = [t.text for t in chart.iter(f"{SVG}title")]
    assert titles[1:] == ["T/Main: 0.150 s", "T/Basement: 0.000 s"]


def test_write_html_creates_the_directory_and_index(tmp_path: Path) -> None:
    target = write_html(busy(), tmp_path / "a" / "b")
    assert target == tmp_path / "a" / "b" / INDEX
    assert target.read_text(encoding="utf-8") == render_html(busy())
    assert [p.name for p in target.parent.iterdir()] == [INDEX]


def test_write_html_replaces_an_old_report(tmp_path: Path) -> None:
    write_html(busy(), tmp_path)
    write_html(quiet(), tmp_path)
    assert (tmp_path / INDEX).read_text(encoding="utf-8") == render_html(quiet())


def test_a_file_is_refused_as_the_directory(tmp_path: Path) -> None:
    file = tmp_path / "report.txt"
    file.write_text("keep me")
    with pytest.raises(ReportTargetError, match="exists and is not a directory"):
        write_html(busy(), file)
    assert file.read_text() == "keep me"


def test_a_directory_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ReportTargetError, match="cannot create it") as caught:
        prepare_html_dir(tmp_path / "file" / "sub")
    assert "\n" not in str(caught.value)


def test_an_unwritable_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, who may write anywhere: ask os.access to say no.
    monkeypatch.setattr("simulators.report._html.os.access", lambda path, mode: False)
    with pytest.raises(ReportTargetError, match="is not writable"):
        prepare_html_dir(tmp_path)
