"""``doorsim run``: flags, refusals and exit status, against stand-in runners.

The runners of both modes are replaced by :func:`run_scenario` below (``cli.RUNNERS``
points at this module), so these tests check the command itself: bad usage exits 2 with
one line, an invalid or missing scenario exits 1 with ``FILE:LINE: reason``, a run that
lost nothing exits 0 and one that lost something exits 1 and says what, and ``--json``
and ``--html`` carry the report. The real fast runner is exercised end to end in
``test_doorsim_run_e2e.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators import cli
from simulators.building import BrokerUnreachableError
from simulators.outcome import KEY_FIGURES, RunOutcome
from simulators.report import INDEX, render_html, report_json
from simulators.scenario import Scenario
from tests.test_report_samples import busy, lossy

SMALL = str(Path(__file__).resolve().parent.parent / "simulators/scenarios/small_building.toml")
CALLS: list[dict[str, Any]] = []
OUTCOME: dict[str, Callable[[], RunOutcome]] = {"make": busy}


def run_scenario(scenario: Scenario, **options: Any) -> RunOutcome:
    """The stand-in runner: records its arguments, reports progress, returns a sample."""
    return _stand_in(scenario, **options)


async def run_scenario_async(scenario: Scenario, **options: Any) -> RunOutcome:
    return _stand_in(scenario, **options)


def _stand_in(scenario: Scenario, **options: Any) -> RunOutcome:
    CALLS.append({"scenario": scenario, **options})
    progress = options["progress"]
    for done in (0.0, scenario.duration_s / 2, scenario.duration_s):
        progress(done)
    outcome = OUTCOME["make"]()
    outcome.scenario, outcome.seed = scenario.name, scenario.seed
    return outcome


@pytest.fixture(autouse=True)
def stand_in_runners(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "RUNNERS", {"fast": __name__, "live": __name__})
    monkeypatch.setitem(OUTCOME, "make", busy)
    CALLS.clear()


def doorsim(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``doorsim ARGS`` in-process: exit status, stdout, stderr."""
    try:
        status = cli.main(list(args))
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "slow"], "argument --mode: invalid choice: 'slow'"),
        (["--speed", "0"], "must be a positive finite number, not '0'"),
        (["--speed", "-2"], "must be a positive finite number, not '-2'"),
        (["--speed", "nan"], "must be a positive finite number, not 'nan'"),
        (["--speed", "inf"], "must be a positive finite number, not 'inf'"),
        (["--speed", "fast"], "not a number: 'fast'"),
        (["--mode", "live", "--mqtt", "http://x"], "argument --mqtt"),
        (["--speed", "2"], "--speed applies to --mode live only"),
        (["--mqtt", "mqtt://127.0.0.1:1883"], "--mqtt applies to --mode live only"),
        (["--decisions"], "--decisions applies to --json only"),
        (["--html"], "argument --html: expected one argument"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, err = doorsim(capsys, "run", SMALL, *args)
    assert (status, out) == (2, "")
    line = one_error_line(err)
    assert line.startswith("doorsim") and message in line
    assert CALLS == []


def test_no_scenario_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = doorsim(capsys, "run")
    assert status == 2 and "SCENARIO" in one_error_line(err)


def test_a_missing_file_exits_1_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.toml"
    status, out, err = doorsim(capsys, "run", str(missing))
    assert (status, out) == (1, "")
    assert one_error_line(err) == f"{missing}: cannot read the file: No such file or directory"


def test_an_invalid_scenario_exits_1_with_file_line_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\nduration = "1d"\nseed = "seven"\n')
    status, out, err = doorsim(capsys, "run", str(bad), "--json")
    assert (status, out) == (1, "")
    assert one_error_line(err).startswith(f"{bad}:4: ")
    assert CALLS == []


def test_a_toml_syntax_error_exits_1_with_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nname = \n")
    status, _, err = doorsim(capsys, "run", str(bad))
    assert status == 1 and one_error_line(err).startswith(f"{bad}:2: invalid TOML")


def test_html_onto_a_file_is_refused_before_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    file = tmp_path / "report.html"
    file.write_text("keep")
    status, out, err = doorsim(capsys, "run", SMALL, "--html", str(file))
    assert (status, out) == (2, "")
    assert one_error_line(err) == f"doorsim: error: --html {file}: exists and is not a directory"
    assert CALLS == [] and file.read_text() == "keep"


def test_html_under_a_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    status, _, err = doorsim(capsys, "run", SMALL, "--html", str(tmp_path / "f" / "out"))
    assert status == 2 and "cannot create it" in one_error_line(err)


def test_a_run_that_lost_nothing_exits_0_with_the_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = doorsim(capsys, "run", SMALL)
    assert (status, err) == (0, "")
    assert out.splitlines()[0].startswith("Small building - fast mode, seed 7, 1d")
    assert all(f" {name} " in out for name in KEY_FIGURES)
    assert "VERDICT: nothing lost" in out
    assert CALLS[0]["scenario"].name == "Small building"
    assert set(CALLS[0]) == {"scenario", "progress"}


def test_a_run_that_lost_updates_exits_1_and_says_what(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(OUTCOME, "make", lossy)
    status, out, _ = doorsim(capsys, "run", SMALL)
    assert status == 1
    assert "VERDICT: LOST: 2 door updates lost; 1 audit event lost" in out


def test_json_is_the_report_alone_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = doorsim(capsys, "run", SMALL, "--json")
    assert (status, err) == (0, "")
    expected = busy()
    expected.scenario, expected.seed = "Small building", 7
    assert out == report_json(expected)
    data = json.loads(out)
    assert set(KEY_FIGURES) <= set(data["figures"]) and "decisions" not in data


def test_json_with_decisions(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = doorsim(capsys, "run", SMALL, "--json", "--decisions")
    assert status == 0 and len(json.loads(out)["decisions"]) == 500


def test_json_of_a_lossy_run_exits_1_with_the_verdict_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(OUTCOME, "make", lossy)
    status, out, err = doorsim(capsys, "run", SMALL, "--json")
    assert status == 1 and json.loads(out)["ok"] is False
    assert one_error_line(err).startswith("doorsim: LOST: 2 door updates lost; 1 audit event lost")


def test_html_is_written_and_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "report"
    status, out, err = doorsim(capsys, "run", SMALL, "--json", "--html", str(target))
    assert status == 0
    assert one_error_line(err) == f"HTML report: {target / INDEX}"
    expected = busy()
    expected.scenario, expected.seed = "Small building", 7
    assert (target / INDEX).read_text(encoding="utf-8") == render_html(expected)
    assert json.loads(out)["scenario"] == "Small building"


def test_html_path_is_printed_with_the_summary(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, _ = doorsim(capsys, "run", SMALL, "--html", str(tmp_path))
    assert status == 0 and out.splitlines()[-1] == f"HTML report: {tmp_path / INDEX}"


def test_live_mode_gets_speed_and_broker(capsys: pytest.CaptureFixture[str]) -> None:
    url = "mqtt://127.0.0.1:1883"
    status, _, _ = doorsim(capsys, "run", SMALL, "--mode", "live", "--speed", "60", "--mqtt", url)
    assert status == 0
    assert (CALLS[0]["speed"], CALLS[0]["mqtt_url"]) == (60.0, url)


def test_live_mode_defaults_to_real_time_and_the_embedded_broker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert doorsim(capsys, "run", SMALL, "--mode", "live")[0] == 0
    assert (CALLS[0]["speed"], CALLS[0]["mqtt_url"]) == (1.0, None)


def test_an_async_runner_is_awaited(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "run_scenario", run_scenario_async)
    assert doorsim(capsys, "run", SMALL, "--mode", "live")[0] == 0
    assert len(CALLS) == 1


def test_a_building_that_cannot_start_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(scenario: Scenario, **options: Any) -> RunOutcome:
        raise BrokerUnreachableError("cannot reach the MQTT broker at 127.0.0.1:9")

    monkeypatch.setattr(sys.modules[__name__], "run_scenario", unreachable)
    status, out, err = doorsim(
        capsys, "run", SMALL, "--mode", "live", "--mqtt", "mqtt://127.0.0.1:9"
    )
    assert (status, out) == (1, "")
    assert one_error_line(err) == (
        "doorsim: error: cannot reach the MQTT broker at 127.0.0.1:9 "
        "(is it running? without --mqtt the run starts its own)"
    )


def test_a_mode_without_its_runner_exits_1_saying_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "RUNNERS", {"fast": "simulators.no_such_runner", "live": __name__})
    status, out, err = doorsim(capsys, "run", SMALL)
    assert (status, out) == (1, "")
    assert one_error_line(err).startswith("doorsim: error: fast mode is not available: ")


def test_check_and_demo_still_parse(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = doorsim(capsys, "check", SMALL)
    assert status == 0 and out.startswith(f"{SMALL}: ok")
