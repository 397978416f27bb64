"""``doorsim run`` end to end: the installed console script on the real fast runner.

Skipped, with the reason, while :mod:`simulators.fast.scenario_run` (built alongside the
reports) cannot be imported. The small building runs twice in fast mode with ``--json``:
exit 0, every key figure present, nothing lost, and the same bytes both times (the
issue's "the same seed gives the same report, byte for byte"); once more with
``--html`` and stdout a pipe (plain text, no escape codes). Bad usage through the
console script needs no runner.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from simulators.outcome import KEY_FIGURES

ROOT = Path(__file__).resolve().parent.parent
DOORSIM = Path(sys.executable).parent / "doorsim"
SMALL = "simulators/scenarios/small_building.toml"
TIMEOUT_S = 240


def fast_runner_or_skip() -> None:
    try:
        module = importlib.import_module("simulators.fast.scenario_run")
    except ImportError as exc:
        pytest.skip(f"the fast runner is not importable yet: {exc}")
    if not callable(getattr(module, "run_scenario", None)):
        pytest.skip("simulators.fast.scenario_run has no run_scenario yet")
    if not DOORSIM.exists():
        pytest.skip(f"{DOORSIM} is not installed (pip install -e .)")


def doorsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DOORSIM), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )


def test_small_building_in_fast_mode_reports_the_same_json_twice() -> None:
    fast_runner_or_skip()
    first = doorsim("run", SMALL, "--mode", "fast", "--json")
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert set(KEY_FIGURES) <= set(data["figures"])
    assert (data["scenario"], data["mode"], data["seed"]) == ("Small building", "fast", 7)
    assert data["ok"] is True and data["figures"]["lost_updates"] == 0
    assert data["figures"]["access_events"] > 0
    second = doorsim("run", SMALL, "--mode", "fast", "--json")
    assert second.stdout == first.stdout


def test_small_building_summary_on_a_pipe_and_html(tmp_path: Path) -> None:
    fast_runner_or_skip()
    done = doorsim("run", SMALL, "--html", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and done.stderr == ""
    assert all(f" {name} " in done.stdout for name in KEY_FIGURES)
    assert "VERDICT: nothing lost" in done.stdout
    page = ET.fromstring((tmp_path / "report" / "index.html").read_text(encoding="utf-8"))
    names = {"".join(th.itertext()) for th in page.iter("th") if th.get("scope") == "row"}
    assert set(KEY_FIGURES) <= names


@pytest.mark.parametrize(
    ("args", "status", "pattern"),
    [
        (["run", "missing.toml"], 1, r"^missing\.toml: cannot read the file"),
        (["run", SMALL, "--mode", "live", "--speed", "nan"], 2, r"^doorsim run: error: "),
        (["run", SMALL, "--mode", "warp"], 2, r"invalid choice: 'warp'"),
    ],
)
def test_garbage_through_the_console_script(args: list[str], status: int, pattern: str) -> None:
    if not DOORSIM.exists():
        pytest.skip(f"{DOORSIM} is not installed (pip install -e .)")
    done = doorsim(*args)
    assert (done.returncode, done.stdout) == (status, "")
    assert len(done.stderr.splitlines()) == 1 and re.search(pattern, done.stderr), done.stderr
