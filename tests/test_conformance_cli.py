"""``lock-conformance``: flags, exit status, the table, JUnit XML, expected failures."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance.cli import main

EXAMPLE = f"{sys.executable} -m conformance.examples.reference_adapter"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--adapter", "mqtt"], "needs --mqtt"),
        (["--adapter", "ble", "--command", "x"], "only for --adapter process"),
        (["--adapter", "process"], "needs --command"),
        (["--command", "x"], "only for --adapter process"),
        (["--only", "bundel"], "unknown tag or requirement: bundel"),
        (["--skip", "frame,nope"], "unknown tag or requirement: nope"),
        (["--timeout", "-1"], "must be positive"),
        (["--timeout", "soon"], "not a number of seconds"),
        (["--only", "frame", "--skip", "frame"], "leave no requirement"),
        (["--expected-failures", "/nonexistent/known.txt"], "cannot read"),
    ],
)
def test_bad_flags_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("lock-conformance: error:")


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "bundle_rollback_is_refused" in out and "§6.2.2 step 5" in out


def test_inprocess_run_table_and_junit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "out.xml"
    assert main(["--only", "bundle", "--skip", "capacity", "--junit", str(junit)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["REQUIREMENT", "VERDICT", "DETAIL", "SECTION"]
    assert "bundle_rollback_is_refused" in out and "bundle_over_capacity" not in out
    assert "— conformant" in out
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert cases and all(c.find("failure") is None for c in cases)
    assert {p.get("name") for p in cases[0].iter("property")} == {"section", "tags", "verdict"}


def test_expected_failure_that_passes_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    known = tmp_path / "known.txt"
    known.write_text("bundle_rollback_is_refused  # we thought this was broken\n")
    argv = ["--only", "rollback", "--expected-failures", str(known)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "XPASS" in out and "listed as a known gap, but passes" in out


def test_process_adapter_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--adapter", "process", "--command", EXAMPLE, "--only", "time,card"]) == 0
    assert "time_sync_step_is_bounded" in capsys.readouterr().out


def test_an_adapter_that_cannot_start(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--adapter", "process", "--command", "/nonexistent/adapter --flag"]
    assert main(argv) == 2
    assert "cannot start the adapter" in capsys.readouterr().err


def test_docs_list_every_requirement_and_adapter_op() -> None:
    """docs/conformance.md stays in step with the catalogue and the JSON-lines ops."""
    from conformance import catalogue
    from conformance.jsonlines import OPS

    text = (Path(__file__).resolve().parent.parent / "docs" / "conformance.md").read_text()
    for requirement in catalogue():
        assert f"| `{requirement.name}` | {requirement.title} |" in text, requirement.name
    for op in OPS:
        assert f"| `{op}` |" in text, op


def test_an_adapter_that_only_echoes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--adapter", "process", "--command", "cat", "--only", "frame_bad_magic_is_malformed"]
    assert main(argv) == 1
    assert "has no 'ok' field" in capsys.readouterr().out


def test_ble_adapter_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--adapter", "ble", "--only", "segmentation,hello"]) == 0
    out = capsys.readouterr().out
    assert "segmentation_resumes_after_a_dropped_link" in out and "— conformant" in out
