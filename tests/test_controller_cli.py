"""``door-controller``: provision → inspect round trip, and garbage in every flag and file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from controller.cli import main
from infra.broker import BrokerChoice
from protocol import Hello, decode_message
from protocol.transport import door_topic

CLOUD_KEY = "ab" * 32


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_provision_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flash = tmp_path / "lock"
    status, out, _ = run(
        capsys, "provision", "--flash", str(flash), "--cloud-key", CLOUD_KEY, "--door-id", "01" * 16
    )
    assert status == 0
    registration = json.loads(out)
    assert (
        registration["door_id"] == "01" * 16
        and len(bytes.fromhex(registration["identity_public"])) == 32
        and len(bytes.fromhex(registration["doorcode_secret"])) == 32  # the cloud issues codes
    )
    status, out, _ = run(capsys, "inspect", str(flash))
    assert status == 0
    assert "01" * 16 in out and "list version       0" in out and "boots              1" in out


def test_provision_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flash = str(tmp_path / "lock")
    assert run(capsys, "provision", "--flash", flash, "--cloud-key", CLOUD_KEY)[0] == 0
    status, _, err = run(capsys, "provision", "--flash", flash, "--cloud-key", CLOUD_KEY)
    assert status == 1 and "--force" in err and err.count("\n") == 1
    assert run(capsys, "provision", "--flash", flash, "--cloud-key", CLOUD_KEY, "--force")[0] == 0


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["provision"],
        ["provision", "--flash", "x", "--cloud-key", "zz"],
        ["provision", "--flash", "x", "--cloud-key", "ab"],
        ["provision", "--flash", "x", "--cloud-key", CLOUD_KEY, "--door-id", "00"],
        ["provision", "--flash", "x", "--cloud-key", CLOUD_KEY, "--doorcode-secret", "é"],
        ["run", "--flash", "x"],
        ["run", "--flash", "x", "--mqtt", "u", "--ble", "t"],
        ["run", "--flash", "x", "--mqtt", "u", "--capacity", "-3"],
        ["run", "--flash", "x", "--mqtt", "u", "--capacity", "many"],
        ["inspect"],
    ],
)
def test_bad_flags_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("door-controller") and "Traceback" not in err


@pytest.mark.parametrize(
    "garbage", [b"", b"\x00" * 64, b"LKFL" + bytes(100), bytes(range(256)) * 3]
)
def test_corrupt_flash_one_line_exit_1(
    tmp_path: Path, garbage: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    flash = tmp_path / "lock"
    flash.mkdir()
    (flash / "slot-a.img").write_bytes(garbage)
    for argv in (
        ["inspect", str(flash)],
        ["run", "--flash", str(flash), "--mqtt", "mqtt://127.0.0.1:1"],
    ):
        status, _, err = run(capsys, *argv)
        assert status == 1 and err.count("\n") == 1 and "Traceback" not in err


def test_inspect_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "inspect", str(tmp_path / "nothing"))
    assert status == 1 and "not a flash image" in err


def test_console_script_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "inspect", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "empty flash image" in result.stderr


async def test_run_mqtt_serves_the_image(tmp_path: Path, mqtt_broker: BrokerChoice) -> None:
    """``run --mqtt`` boots the image and announces it: status online, HELLO retained."""
    flash = tmp_path / "lock"
    assert main(["provision", "--flash", str(flash), "--cloud-key", CLOUD_KEY]) == 0
    door_id = _door_id_of(flash)
    async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as client:
        await client.subscribe(door_topic(bytes.fromhex(door_id), "hello"), qos=1)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "controller.cli",
            "run",
            "--flash",
            str(flash),
            "--mqtt",
            mqtt_broker.url,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(20):
                message = await anext(aiter(client.messages))
            hello = decode_message(bytes(message.payload))  # type: ignore[arg-type]
            assert isinstance(hello, Hello) and hello.door_id.hex() == door_id
        finally:
            process.terminate()
            await process.wait()
        await client.publish(door_topic(bytes.fromhex(door_id), "hello"), b"", retain=True)
        await client.publish(door_topic(bytes.fromhex(door_id), "status"), b"", retain=True)


def test_run_ble_with_a_bad_transport(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flash = tmp_path / "lock"
    assert main(["provision", "--flash", str(flash), "--cloud-key", CLOUD_KEY]) == 0
    capsys.readouterr()
    status, _, err = run(capsys, "run", "--flash", str(flash), "--ble", "no-such-transport:7")
    assert status == 1 and err.count("\n") == 1 and "cannot open the transport" in err


def _door_id_of(flash: Path) -> str:
    from controller.state import LockState
    from controller.storage import open_flash

    loaded = open_flash(flash).load()
    assert loaded.snapshot is not None
    return LockState.from_snapshot(loaded.snapshot, audit_capacity=10).identity.door_id.hex()
