"""``doorsim demo``: the seeds' story on a live building, end to end.

The demo runs in-process on the embedded broker and, when it is reachable, on Mosquitto;
the console script runs in a subprocess (exit 0 and every step printed; bad flags exit 2
and an unreachable broker exits 1, each with one line); and a building with one offline
door out of every phone's reach makes the demo fail at the step that needed that door,
named in the output, with exit status 1.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from infra.broker import is_reachable, parse_mqtt_url
from simulators import cli, demo
from simulators.demo import DEMO_CONFIG, STEPS, run_demo
from tests.conftest import preferred_mqtt_url

DOORSIM = Path(sys.executable).parent / "doorsim"
STEP_NAMES = [name for name, _ in STEPS]
SUBPROCESS_TIMEOUT_S = 60


def doorsim(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``doorsim`` console script."""
    if not DOORSIM.exists():
        pytest.skip(f"{DOORSIM} is not installed (pip install -e .)")
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [str(DOORSIM), *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        env=env,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_the_demo_runs_to_the_end_on_the_embedded_broker() -> None:
    out = io.StringIO()
    report = await run_demo(DEMO_CONFIG, out=out)
    assert report.ok, out.getvalue()
    assert [s.name for s in report.steps] == STEP_NAMES
    assert all(s.ok and s.ms > 0 for s in report.steps)
    assert report.broker.startswith("embedded amqtt at mqtt://127.0.0.1:")
    lines = out.getvalue().splitlines()
    for number, name in enumerate(STEP_NAMES, 1):
        (line,) = [li for li in lines if li.startswith(f"[{number:2}] {name} ")]
        assert " ms  ok " in line
    assert lines[-1].endswith("every expected outcome happened")


async def test_the_demo_runs_on_mosquitto_when_it_is_reachable() -> None:
    url = preferred_mqtt_url()
    if not await is_reachable(*parse_mqtt_url(url)):
        pytest.skip(f"no MQTT broker at {url} (set LATCHSIM_MQTT_URL to use another)")
    out = io.StringIO()
    report = await run_demo(replace(DEMO_CONFIG, mqtt_url=url), out=out)
    assert report.ok, out.getvalue()
    assert report.broker.startswith("mosquitto at ")


def test_the_console_script_prints_every_step_and_exits_0() -> None:
    done = doorsim("demo")
    assert done.returncode == 0, done.stdout + done.stderr
    for number, name in enumerate(STEP_NAMES, 1):
        assert f"[{number:2}] {name} " in done.stdout
    assert "FAILED" not in done.stdout
    assert done.stderr == ""


def test_json_gives_each_steps_name_ok_and_ms(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True and document["failed"] == []
    assert [s["name"] for s in document["steps"]] == STEP_NAMES
    assert all(s["ok"] is True and s["ms"] > 0 for s in document["steps"])


@pytest.mark.parametrize(
    "args",
    [["demo", "--bogus"], ["demo", "--mqtt", "http://127.0.0.1:1883"], ["dance"], []],
)
def test_bad_usage_exits_2_with_one_line(args: list[str]) -> None:
    done = doorsim(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "error:" in done.stderr


def test_an_unreachable_broker_exits_1_with_one_line() -> None:
    url = f"mqtt://127.0.0.1:{closed_port()}"
    done = doorsim("demo", "--mqtt", url)
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"doorsim: error: MQTT broker {url} is not reachable")


def test_a_door_no_phone_can_reach_fails_the_demo_at_that_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unreachable = replace(DEMO_CONFIG, unpowered_doors=frozenset({"Tower gym"}), scan_timeout_s=0.5)
    monkeypatch.setattr(demo, "DEMO_CONFIG", unreachable)
    assert cli.main(["demo"]) == 1
    out = capsys.readouterr().out
    failing = STEP_NAMES.index("phone opens the offline doors") + 1
    (line,) = [li for li in out.splitlines() if li.startswith(f"[{failing:2}] ")]
    assert "FAILED" in line and "Tower gym" in line and "not heard" in line
    for later in STEP_NAMES[failing:]:
        assert f"{later} " in out
    assert out.count("skipped") == len(STEP_NAMES) - failing
    assert out.splitlines()[-1].endswith(f"FAILED [{failing}] phone opens the offline doors")


def test_check_validates_every_example_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    examples = sorted(str(p) for p in (Path(demo.__file__).parent / "scenarios").glob("*.toml"))
    assert examples and cli.main(["check", *examples]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(examples) and all(": ok (" in line for line in out)


def test_check_names_the_file_and_line_of_a_bad_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\nduratoin = 5\n')
    assert cli.main(["check", str(bad)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{bad}:3: ") and '"duratoin"' in line
