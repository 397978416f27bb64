"""The ``phone-bridge`` command and the cross-process radio hub, real parts only.

Theory of operation: the seeded cloud is served by uvicorn on localhost
(``tests.test_cloud_api.open_api``). The virtual radio is :class:`infra.radio_hub.RadioHub`:
its offline doors (Tower basement, Tower gym) are real :class:`controller.ble_door.BleDoor`
faces that reach the hub through bumble's ``tcp-client`` transport, with the identities the
cloud registered (``tests.test_phone_end_to_end.lock_identity``). Hub and doors run in their
own event loop in a thread (:class:`Air`), so the CLI's ``main`` runs in the test's thread
as it would in its own process, and its radio is a ``tcp-client`` to the hub. One test runs
everything as separate processes: ``python -m infra.radio_hub``, ``door-controller run``
and the ``phone-bridge`` console script. Waits are on conditions, with timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from bumble import hci
from bumble.core import UUID
from bumble.device import Connection, Device, Peer
from bumble.gatt import Characteristic, Service
from bumble.transport import open_transport

from controller.ble_door import BleDoor
from controller.config import ControllerConfig
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium, open_flash
from infra.radio_hub import RadioHub
from phone_bridge.cli import main
from simulators.fixture import counting_random
from tests.test_cloud_api import ANA, BEN, MAYA, Api, activate, card_status, ok, open_api
from tests.test_phone_end_to_end import OFFLINE, lock_identity

WAIT = 20.0
"""Upper bound of one step (everything answers in milliseconds on localhost)."""
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_T = TypeVar("_T")


# --- the hub on its own ------------------------------------------------------------------------


async def device_on_hub(port: int, name: str, address: str) -> tuple[Device, Any]:
    """A bumble Device whose controller is on the hub (bumble's tcp-client transport)."""
    transport = await open_transport(f"tcp-client:127.0.0.1:{port}")
    device = Device.with_hci(name, hci.Address(address), transport.source, transport.sink)
    await device.power_on()
    return device, transport


async def wait_until(condition: Any, what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


async def test_two_bumble_devices_meet_through_the_hub_and_exchange_gatt() -> None:
    async with RadioHub() as hub:
        await hub.start(port=0)
        server, server_transport = await device_on_hub(hub.port, "server", "F0:00:00:00:00:01")
        client, client_transport = await device_on_hub(hub.port, "client", "F0:00:00:00:00:02")
        value = Characteristic(
            UUID("5a7c0001-0000-4000-8000-00000000cafe"),
            Characteristic.Properties.READ,
            Characteristic.READABLE,
            b"across the hub",
        )
        server.add_service(Service(UUID("5a7c0000-0000-4000-8000-00000000cafe"), [value]))
        await server.start_advertising(auto_restart=False)
        assert hub.clients == 2
        async with asyncio.timeout(WAIT):
            connection = await client.connect("F0:00:00:00:00:01")
            peer = Peer(connection)
            await peer.discover_services()
            (found,) = [c for c in await peer.discover_characteristics() if c.uuid == value.uuid]
            assert await peer.read_value(found) == b"across the hub"
        lost = asyncio.Event()
        connection.on(Connection.EVENT_DISCONNECTION, lambda _reason: lost.set())
        await server_transport.close()  # the server's process goes away
        async with asyncio.timeout(WAIT):
            await lost.wait()  # its peer sees the link drop, as over the air
        await wait_until(lambda: hub.clients == 1, "the server's controller left the air")
        await client_transport.close()
        await wait_until(lambda: hub.clients == 0, "every controller left the air")


async def raw_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_malformed_bytes_do_not_crash_the_hub() -> None:
    async with RadioHub() as hub:
        await hub.start(port=0)
        # A well-framed HCI command with parameters that do not parse: dropped, client stays.
        reader, writer = await raw_client(hub.port)
        writer.write(bytes([0x01, 0x06, 0x20, 0x01, 0xFF]))  # LE Set Advertising Params, 1 byte
        writer.write(bytes([0x01, 0xFF, 0xFF, 0x00]))  # an opcode no chip has
        writer.write(bytes([0x04, 0x0E, 0x00]))  # an event from the host side
        writer.write(bytes([0x01, 0x03, 0x0C, 0x00]))  # then a good HCI Reset
        await writer.drain()
        answers = b""
        async with asyncio.timeout(WAIT):  # the client stays on: the Reset is answered
            while b"\x0e\x04\x01\x03\x0c\x00" not in answers:
                answers += await reader.read(256)
        assert hub.clients == 1
        # Bytes that do not frame as H4: that client is dropped, the hub serves on.
        bad_reader, bad_writer = await raw_client(hub.port)
        bad_writer.write(b"\xffgarbage that is no HCI packet" * 10)
        await bad_writer.drain()
        async with asyncio.timeout(WAIT):
            assert await bad_reader.read() == b""  # the hub closed it
        bad_writer.close()
        device, transport = await device_on_hub(hub.port, "after", "F0:00:00:00:00:03")
        assert hub.clients == 2
        await transport.close()
        writer.close()
        await wait_until(lambda: hub.clients == 0, "both clients left")
        assert device.host is not None


async def test_the_hub_refuses_clients_beyond_its_bound() -> None:
    async with RadioHub(max_clients=1) as hub:
        await hub.start(port=0)
        _first_reader, first = await raw_client(hub.port)
        await wait_until(lambda: hub.clients == 1, "the first client is on the air")
        second_reader, second = await raw_client(hub.port)
        async with asyncio.timeout(WAIT):
            assert await second_reader.read() == b""  # closed at once
        assert hub.clients == 1
        for writer in (first, second):
            writer.close()
        await wait_until(lambda: hub.clients == 0, "the first client left")


# --- the air: hub and doors in their own loop ----------------------------------------------


@dataclass
class Air:
    """The radio hub and the offline doors, in an event loop of their own (a thread)."""

    api: Api
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    hub: RadioHub = field(init=False)
    doors: list[BleDoor] = field(default_factory=list)
    energised: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever, name="air", daemon=True)
        self.thread.start()
        self.run(self._start())

    def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(WAIT)

    @property
    def hub_address(self) -> str:
        return f"127.0.0.1:{self.hub.port}"

    async def _start(self) -> None:
        self.hub = RadioHub()
        await self.hub.start(port=0)
        with self.api.world.service() as cloud:
            cloud_public = cloud.key.public
        for name in OFFLINE:
            door_id = self.api.door(name)
            runtime = LockRuntime.provision(
                Flash(MemoryMedium()),
                lock_identity(self.api, door_id),
                cloud_public,
                config=ControllerConfig(),
                clock=self.loop.time,
                wall_time=self.api.world.now,
                random=counting_random(f"cli lock {door_id}"),
            )
            self.energised[door_id] = []
            door = await BleDoor.open(
                runtime,
                f"tcp-client:{self.hub_address}",
                on_energise=self.energised[door_id].append,
                advertising_interval_ms=20.0,
            )
            await door.start()
            self.doors.append(door)

    async def _stop(self) -> None:
        for door in self.doors:
            await door.stop()
        await self.hub.close()

    def close(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT)
            self.loop.close()


@dataclass
class Cli:
    """``phone-bridge`` run in-process against the served cloud and the air."""

    api: Api
    air: Air
    store: Path

    def __call__(self, *args: str, cloud: str | None = None) -> Result:
        argv = [
            "--cloud",
            cloud or str(self.api.http.base_url).rstrip("/"),
            "--store",
            str(self.store),
            "--hub",
            self.air.hub_address,
            "--timeout",
            "5",
            *args,
        ]
        return run_main(argv)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def run_main(argv: list[str]) -> Result:
    """Run the CLI's ``main``; its exit status (argparse exits too) and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def one_error_line(result: Result, code: int, *phrases: str) -> str:
    """The run failed with *code* and said so in one line on stderr, with *phrases*."""
    assert result.code == code, result
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("phone-bridge") and ": error: " in lines[0], lines[0]
    assert "Traceback" not in result.err + result.out
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(f"sqlite:///{tmp_path / 'cloud.db'}") as served:
        yield served


@pytest.fixture
def air(api: Api) -> Iterator[Air]:
    made = Air(api)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def cli(api: Api, air: Air, tmp_path: Path) -> Cli:
    return Cli(api, air, tmp_path / "phone" / "phone.db")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A localhost port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]


def activate_ana(api: Api) -> None:
    """A manager activates Ana's card; the online lobby syncs over MQTT on its own."""
    activate(api, MAYA, ANA, "card-1")
    api.world.sync_door(api.door("Tower lobby"))


def pending_doors(api: Api, who: str) -> set[str]:
    return {d["name"] for d in card_status(api, MAYA, who)["pending_doors"]}


def door_line(out: str, name: str) -> str:
    (line,) = [line for line in out.splitlines() if f" {name} " in f"{line} "]
    return line


# --- the commands ---------------------------------------------------------------------------


def test_login_doors_sync_all_clears_pending_in_the_cloud(api: Api, cli: Cli) -> None:
    activate_ana(api)
    assert pending_doors(api, ANA) == set(OFFLINE)

    login = cli("login", "--token", api.tokens[ANA])
    assert login.code == 0, login
    assert "logged in as Ana Ruiz" in login.out and "app is logged in" in login.out
    assert ok(api.get(f"/v1/people/{api.person(ANA)}", MAYA))["app_logged_in"]

    doors = cli("doors")
    assert doors.code == 0, doors
    for name in OFFLINE:
        assert "pending: carries update v0->v1" in door_line(doors.out, name)
    assert "nothing to carry" in door_line(doors.out, "Tower lobby")

    scan = cli("scan", "--seconds", "0.5")
    assert scan.code == 0, scan
    for name in OFFLINE:
        assert api.door(name) in scan.out and "-50 dBm" in door_line(scan.out, name)

    synced = cli("sync", "--all", "--seconds", "0.5")
    assert synced.code == 0, synced
    lines = synced.out.splitlines()
    assert len(lines) == 2 and all("synced, updated v0->v1, receipt uploaded" in x for x in lines)
    card = card_status(api, MAYA, ANA)
    assert card["status"] == "active" and card["pending_doors"] == []
    assert all(energised == [] for energised in cli.air.energised.values())  # no door opened

    after = cli("doors")
    assert after.code == 0 and "pending:" not in after.out
    again = cli("sync", "tower GYM")  # by name, any case: nothing left to carry
    assert again.code == 0 and "already at v1, nothing to carry" in again.out


def test_unlock_offline_prints_granted_then_queue_lists_and_drains(
    api: Api, cli: Cli, closed_port: int
) -> None:
    activate_ana(api)
    assert cli("login", "--token", api.tokens[ANA]).code == 0
    basement = api.door("Tower basement")
    offline = f"http://127.0.0.1:{closed_port}"

    unlocked = cli("unlock", basement[:6], cloud=offline)  # a prefix of the id; no signal
    assert unlocked.code == 0, unlocked
    assert "granted - unlocked" in unlocked.out
    assert "bundle delivered: v0->v1, receipt queued" in unlocked.out
    assert cli.air.energised[basement] == [ControllerConfig().unlock_seconds]
    assert pending_doors(api, ANA) == set(OFFLINE)  # the cloud has not heard yet

    queued = cli("queue")
    assert queued.code == 0, queued
    header, *items = queued.out.splitlines()
    assert header.startswith(f"{len(items)} uploads wait, oldest first")
    assert "receipt" in items[0] and "Tower basement" in items[0] and len(items) >= 2

    stuck = cli("queue", "--drain", cloud=offline)
    one_error_line(stuck, 1, "drain:", f"{len(items)} uploads still wait")

    drained = cli("queue", "--drain")
    assert drained.code == 0 and f"uploaded {len(items)} of {len(items)}" in drained.out
    assert cli("queue").out.strip() == "nothing waits to upload"
    assert pending_doors(api, ANA) == {"Tower gym"}


def test_every_error_is_one_line_with_the_right_exit_status(
    api: Api, cli: Cli, closed_port: int, tmp_path: Path
) -> None:
    # usage errors: exit 2
    for argv, phrase in [
        (["--timeout", "soon", "doors"], "--timeout"),
        (["--timeout", "0", "doors"], "--timeout"),
        (["--radio", "garbage", "scan"], "'garbage' is not virtual, platform or a bumble"),
        (["--radio", "usb", "scan"], "needs usb:SPEC"),
        (["--hub", "nohost", "scan"], "HOST:PORT"),
        (["--cloud", "ftp://cloud", "doors"], "http"),
        (["sync"], "DOOR --all"),
        (["scan", "--seconds", "-1"], "--seconds"),
        (["fly"], "invalid choice"),
        (["login"], "--token"),
    ]:
        one_error_line(cli(*argv), 2, phrase)

    # not logged in: exit 1, with what to do (before any radio is opened)
    no_hub = ["--hub", f"127.0.0.1:{closed_port}"]
    for argv in (
        ["doors"],
        ["unlock", "Tower gym"],
        [*no_hub, "sync", "--all"],
        ["queue", "--drain"],
    ):
        one_error_line(cli(*argv), 1, "log the phone in first", "phone-bridge login --token")

    # the cloud: down, or refusing the token
    down = cli("login", "--token", api.tokens[ANA], cloud=f"http://127.0.0.1:{closed_port}")
    one_error_line(down, 1, "login:", "did not answer")
    one_error_line(cli("login", "--token", "not-a-token"), 1, "login:", "refused: 401")
    one_error_line(cli("login", "--token", api.tokens[ANA]), 1, "refused: 403", "activate")

    activate_ana(api)
    assert cli("login", "--token", api.tokens[ANA]).code == 0
    one_error_line(cli("unlock", "Tower attic"), 1, "'Tower attic' is not one of your doors")
    one_error_line(cli("sync", "zz"), 1, "'zz' is not one of your doors")
    lobby = api.door("Tower lobby")  # an online door: no BLE advertisement to find
    one_error_line(cli("--timeout", "0.5", "unlock", lobby), 1, "scan:", "not heard")
    one_error_line(
        cli("--hub", f"127.0.0.1:{closed_port}", "scan"), 1, "cannot open the radio", "radio hub"
    )
    one_error_line(cli("--radio", "tcp-client:127.0.0.1:notaport", "scan"), 1, "--radio")

    app_file = Path(f"{cli.store}.app.json")  # the phone key: the owner's only
    assert app_file.stat().st_mode & 0o777 == 0o600
    app_file.unlink()
    one_error_line(cli("doors"), 1, "phone key file", "log in again")
    assert cli("login", "--token", api.tokens[ANA]).code == 0 and app_file.exists()


# --- separate processes: hub, door-controller, phone-bridge --------------------------------


def read_line(process: subprocess.Popen[str], what: str) -> str:
    """The next line *process* prints, within WAIT seconds."""
    assert process.stdout is not None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            assert line, f"{what} exited: {process.wait()}"
            return line.strip()
        assert process.poll() is None, f"{what} exited with {process.returncode}"
    raise TimeoutError(f"{what} printed nothing in {WAIT} s")


def start(argv: list[str], what: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        return process, read_line(process, what)
    except BaseException:
        stop(process)
        raise


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(WAIT)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def test_processes_door_controller_and_phone_bridge_meet_on_the_hub(
    api: Api, tmp_path: Path
) -> None:
    script = BIN / "phone-bridge"
    assert script.exists(), "pip install -e . registers the phone-bridge console script"
    activate(api, MAYA, BEN, "card-6")
    activate_ana(api)  # and the online lobby syncs both
    basement = api.door("Tower basement")
    with api.world.service() as cloud:
        cloud_public = cloud.key.public
    flash = tmp_path / "basement"
    LockRuntime.provision(
        open_flash(flash),
        lock_identity(api, basement),
        cloud_public,
        config=ControllerConfig(),
        clock=time.time,
        wall_time=api.world.now,  # the lock's clock agrees with the cloud's
        random=counting_random("process lock"),
    )
    hub, hub_line = start([sys.executable, "-m", "infra.radio_hub", "--port", "0"], "hub")
    try:
        assert hub_line.startswith("virtual radio listening on 127.0.0.1:")
        hub_address = hub_line.rsplit(" ", 1)[1]
        host, port = hub_address.split(":")
        with socket.create_connection((host, int(port))) as garbage:
            garbage.sendall(b"\x00\x01\x02 no HCI here")  # the hub drops it and serves on
        door, door_line_ = start(
            [str(BIN / "door-controller"), "run", "--flash", str(flash), "--ble",
             f"tcp-client:{hub_address}"],
            "door-controller",
        )  # fmt: skip
        try:
            assert f"door {basement}: offline BLE door advertising" in door_line_
            env = {
                **os.environ,
                "LATCHSIM_CLOUD_URL": str(api.http.base_url).rstrip("/"),
                "LATCHSIM_PHONE_STORE": str(tmp_path / "ben" / "phone.db"),
                "LATCHSIM_RADIO_HUB": hub_address,
            }

            def phone(*args: str) -> subprocess.CompletedProcess[str]:
                argv = [str(script), "--timeout", "10", *args]
                return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=WAIT)

            login = phone("login", "--token", api.tokens[BEN])
            assert login.returncode == 0 and "logged in as Ben Okafor" in login.stdout, login
            doors = phone("doors")
            assert "pending: carries update" in door_line(doors.stdout, "Tower basement")
            scan = phone("scan", "--seconds", "1")
            assert scan.returncode == 0 and basement in scan.stdout, scan
            synced = phone("sync", "--all", "--seconds", "1")
            assert synced.returncode == 0, synced
            assert synced.stdout.splitlines() == [
                f"Tower basement ({basement[:8]}): synced, updated v0->v2, receipt uploaded"
            ]
            assert pending_doors(api, BEN) == {"Tower gym"}  # Ben's phone carried it
            assert pending_doors(api, ANA) == {"Tower gym"}  # and Ana's change with it
            refused = phone("--timeout", "1", "unlock", "Tower gym")  # not in range
            assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused
            assert "Traceback" not in refused.stderr
        finally:
            stop(door)
    finally:
        stop(hub)
