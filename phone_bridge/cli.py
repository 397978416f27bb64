"""``phone-bridge``: the resident's phone app on the command line.

Theory of operation: a thin adapter over :class:`~phone_bridge.phone.Phone`. Every run
opens the phone's SQLite store (``--store``; it holds the login, the bundles to carry
and the uploads waiting for a signal) and, beside it, the app file ``<store>.app.json``
(mode 0600): the phone's Ed25519 key seed, made at the first ``login``, and what the
resident's ``/v1/me`` said at login (the person, the doors with their names). The
resident's own token is used for the login only and is not kept; later calls use the
phone token the login returned.

Commands: ``login --token TOKEN``; ``doors`` (the person's doors, and for each whether
the phone carries a pending bundle to it, after a prefetch when the cloud answers);
``scan`` (doors in range); ``unlock DOOR``; ``sync DOOR`` / ``sync --all`` (a manual
sync: the visit without unlocking); ``queue [--drain]``. DOOR is a door id, a unique
prefix of one, or a door's name.

Radios (``--radio``), opened only by the commands that need one: ``virtual`` is a bumble
central on the virtual radio hub (:mod:`infra.radio_hub`, ``--hub HOST:PORT``, default
``127.0.0.1:6402``) through bumble's ``tcp-client`` transport; ``platform`` is bleak's
own backend (BlueZ, CoreBluetooth, WinRT) unchanged, for the machine's adapter; any other
value is a bumble transport string (``usb:0``, ``hci-socket:0``, ``serial:…``).

Every expected failure is one line on stderr, ``phone-bridge: error: …``, and exit
status 1; usage errors exit 2 (as argparse does). This is the one place of the phone
bridge that reads the machine's clock and randomness (the phone key, the radio address).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
from bumble import hci
from bumble.device import Device
from bumble.transport import open_transport

from infra.cli_args import OneLineParser
from infra.radio_hub import DEFAULT_PORT
from protocol import Reason
from protocol.crypto import ed25519_private_from_seed

from .bleak_bumble import bumble_backends
from .cloud_client import CloudClient, CloudRefusedError
from .errors import PhoneBridgeError
from .phone import (
    BleakDoors,
    DoorInRange,
    NotLoggedInError,
    Phone,
    PhoneError,
    PhoneOfflineError,
    PhoneRefusedError,
    PhoneVisit,
    SyncOutcome,
)
from .store import PhoneStore, Upload

__all__ = ["main"]

PROG: Final = "phone-bridge"
ENV_CLOUD: Final = "LATCHSIM_CLOUD_URL"
ENV_STORE: Final = "LATCHSIM_PHONE_STORE"
ENV_HUB: Final = "LATCHSIM_RADIO_HUB"
DEFAULT_CLOUD: Final = "http://127.0.0.1:8000"
DEFAULT_HUB: Final = f"127.0.0.1:{DEFAULT_PORT}"
_BUMBLE_SCHEMES: Final = {
    # scheme: whether it needs a spec after the colon (bumble.transport.open_transport)
    "serial": True,
    "udp": True,
    "tcp-client": True,
    "tcp-server": True,
    "ws-client": True,
    "ws-server": True,
    "pty": False,
    "file": True,
    "vhci": False,
    "hci-socket": False,
    "usb": True,
    "pyusb": True,
    "android-emulator": False,
    "android-netsim": False,
    "unix": True,
    "unix-client": True,
    "unix-server": True,
}


class CliError(Exception):
    """A failure to report as one line (exit status 1)."""


# --- option values --------------------------------------------------------------------------


@dataclass(frozen=True)
class RadioChoice:
    """``--radio``: ``platform`` (bleak's backend) or a bumble transport string."""

    label: str
    transport: str | None
    """The bumble transport to open; None for the platform backend."""


def _radio_value(text: str) -> str:
    if text in ("virtual", "platform"):
        return text
    scheme, _, spec = text.partition(":")
    needs_spec = _BUMBLE_SCHEMES.get(scheme)
    if needs_spec is None:
        known = ", ".join(sorted(_BUMBLE_SCHEMES))
        raise argparse.ArgumentTypeError(
            f"{text!r} is not virtual, platform or a bumble transport ({known}), e.g. usb:0"
        )
    if needs_spec and not spec:
        raise argparse.ArgumentTypeError(f"{text!r}: the {scheme} transport needs {scheme}:SPEC")
    return text


def _hub_value(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, e.g. {DEFAULT_HUB}")
    return text


def _cloud_value(text: str) -> str:
    if not text.startswith(("http://", "https://")) or len(text) < 10:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 600 seconds: {text}")
    return value


def _default_store() -> Path:
    if env := os.environ.get(ENV_STORE):
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "latchsim" / "phone.db"


def _add_global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes, before or after its name (defaults: main parser)."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--cloud",
        type=_cloud_value,
        default=default(os.environ.get(ENV_CLOUD, DEFAULT_CLOUD)),
        help=f"the cloud's base URL (default ${ENV_CLOUD} or {DEFAULT_CLOUD})",
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=default(None),
        help=f"the phone's store file (default ${ENV_STORE} or ~/.local/share/latchsim/phone.db)",
    )
    parser.add_argument(
        "--radio",
        type=_radio_value,
        default=default("virtual"),
        help="virtual (the radio hub), platform (this machine's Bluetooth via bleak) "
        "or a bumble transport such as usb:0 (default virtual)",
    )
    parser.add_argument(
        "--hub",
        type=_hub_value,
        default=default(os.environ.get(ENV_HUB, DEFAULT_HUB)),
        help=f"the virtual radio hub for --radio virtual (default ${ENV_HUB} or {DEFAULT_HUB})",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=default(10.0),
        help="seconds each step may take: a cloud call, finding a door, a BLE connect",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log what happens"
    )


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description="A resident's phone: log in, open and sync doors."
    )
    _add_global_options(parser, defaults=True)
    common = OneLineParser(add_help=False)
    _add_global_options(common, defaults=False)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    login = command("login", "log the app in with the resident's token")
    login.add_argument("--token", required=True, help="the resident's bearer token")
    command("doors", "your doors, and the updates the phone carries to them")
    scan = command("scan", "doors in range")
    scan.add_argument("--seconds", type=_seconds, default=3.0, help="how long to listen")
    unlock = command("unlock", "open a door (and carry its update)")
    unlock.add_argument("door", metavar="DOOR", help="door id, unique id prefix, or name")
    sync = command("sync", "sync doors without opening them")
    which = sync.add_mutually_exclusive_group(required=True)
    which.add_argument("door", metavar="DOOR", nargs="?", help="door id, id prefix, or name")
    which.add_argument("--all", action="store_true", help="every door of yours in range")
    sync.add_argument("--seconds", type=_seconds, default=3.0, help="how long to scan (--all)")
    queue = command("queue", "what waits to upload to the cloud")
    queue.add_argument("--drain", action="store_true", help="upload it now")
    return parser


def _radio_choice(args: argparse.Namespace) -> RadioChoice:
    if args.radio == "virtual":
        return RadioChoice(f"virtual (hub {args.hub})", f"tcp-client:{args.hub}")
    if args.radio == "platform":
        return RadioChoice("platform", None)
    return RadioChoice(args.radio, args.radio)


# --- the app file beside the store ------------------------------------------------------------


@dataclass
class AppFile:
    """What the app keeps beside the store: the phone key seed and the login's profile."""

    path: Path
    phone_seed: bytes
    person_id: str | None = None
    person_name: str | None = None
    door_names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def beside(cls, store: Path) -> Path:
        return store.with_name(store.name + ".app.json")

    @classmethod
    def load(cls, path: Path) -> AppFile | None:
        """The app file at *path*, or None if there is none."""
        try:
            data = json.loads(path.read_text())
            return cls(
                path,
                bytes.fromhex(data["phone_seed"]),
                data.get("person_id"),
                data.get("person_name"),
                {str(k): str(v) for k, v in data.get("doors", {}).items()},
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CliError(f"{path} is damaged ({error!r}); delete it and log in again") from None

    def save(self) -> None:
        data = {
            "phone_seed": self.phone_seed.hex(),
            "person_id": self.person_id,
            "person_name": self.person_name,
            "doors": self.door_names,
        }
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)

    def label(self, door_id: str) -> str:
        """``Tower gym (1a2b3c4d)`` for a door whose name is known, else its id."""
        name = self.door_names.get(door_id)
        return f"{name} ({door_id[:8]})" if name else door_id


# --- the run: store, cloud, phone, radio --------------------------------------------------------


@dataclass
class Run:
    """One command's parts."""

    args: argparse.Namespace
    store: PhoneStore
    app: AppFile
    cloud: CloudClient
    phone: Phone


def _open_store(args: argparse.Namespace) -> PhoneStore:
    path: Path = args.store or _default_store()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return PhoneStore(path)
    except (OSError, sqlite3.Error) as error:
        raise CliError(f"cannot open the phone's store {path}: {error}") from None


def _app_file(store: PhoneStore, *, create: bool) -> AppFile:
    path = AppFile.beside(store.path)
    app = AppFile.load(path)
    if app is None:
        if not create and store.login() is not None:
            raise CliError(f"the phone key file {path} is missing; log in again")
        app = AppFile(path, os.urandom(32))  # a new phone key: a login registers it
        if create:
            app.save()
    return app


@asynccontextmanager
async def _run(args: argparse.Namespace, *, login: bool, radio: bool) -> AsyncIterator[Run]:
    """The command's parts; a command that needs a login fails before a radio is opened."""
    with _open_store(args) as store:
        if login and store.login() is None:
            raise NotLoggedInError(args.command, "log the phone in first")
        app = _app_file(store, create=args.command == "login")
        async with (
            CloudClient(args.cloud, timeout=args.timeout) as cloud,
            _doors(args, radio) as doors,
        ):
            phone = Phone(
                key=ed25519_private_from_seed(app.phone_seed), store=store, cloud=cloud, doors=doors
            )
            yield Run(args, store, app, cloud, phone)


@asynccontextmanager
async def _doors(args: argparse.Namespace, radio: bool) -> AsyncIterator[BleakDoors]:
    """The door finder on the chosen radio (no radio is opened unless *radio*)."""
    timeout = args.timeout
    choice = _radio_choice(args)
    if not radio or choice.transport is None:
        try:
            yield BleakDoors(scan_timeout_s=timeout, client_timeout_s=timeout)
        except OSError as error:  # bleak reaches the platform's stack through the OS
            if not radio:
                raise
            raise CliError(
                f"--radio platform: this machine's Bluetooth is not available ({error}); "
                "on Linux BlueZ must run (bluetoothd, D-Bus)"
            ) from None
        return
    transport = await _open_radio(choice, timeout)
    try:
        device = Device.with_hci("phone-bridge", _radio_address(), transport.source, transport.sink)
        try:
            async with asyncio.timeout(timeout):
                await device.power_on()
        except Exception as error:
            raise CliError(f"--radio {choice.label}: the radio did not start: {error!r}") from None
        scanner_kwargs, client_kwargs = bumble_backends(device)
        yield BleakDoors(
            scanner_kwargs, client_kwargs, scan_timeout_s=timeout, client_timeout_s=timeout
        )
    finally:
        with suppress(Exception):
            await transport.close()


async def _open_radio(choice: RadioChoice, timeout: float) -> Any:
    assert choice.transport is not None
    hint = ""
    if choice.transport.startswith("tcp-client:"):
        hint = " (is the radio hub running? python -m infra.radio_hub)"
    try:
        async with asyncio.timeout(timeout):
            return await open_transport(choice.transport)
    except Exception as error:  # bumble raises many kinds for a transport it cannot open
        raise CliError(f"--radio {choice.label}: cannot open the radio: {error!r}{hint}") from None


def _radio_address() -> hci.Address:
    """A fresh random static address for this run's central (two top bits set)."""
    raw = bytearray(os.urandom(6))
    raw[0] |= 0xC0
    return hci.Address(":".join(f"{b:02X}" for b in raw))


# --- login, doors, queue ---------------------------------------------------------------------


async def _login(run: Run) -> int:
    me = await _fetch_me(run.args.cloud, run.args.token, run.args.timeout)
    login = await run.phone.login(run.args.token)
    run.app.person_id, run.app.person_name = str(me["id"]), str(me["name"])
    run.app.door_names = {str(d["id"]): str(d["name"]) for d in me.get("doors", [])}
    run.app.save()
    until = _when(login.valid_until)
    print(f"logged in as {me['name']} (person {me['id']}): the app is logged in on this phone")
    print(f"phone {login.phone_id}: mobile credential valid until {until}")
    for card in me.get("keycards", []):
        print(f"keycard {card['uid']}: {card['label']}")
    prefetched = await run.phone.prefetch()
    print(f"{len(run.app.door_names)} doors; carrying {len(prefetched.doors)} pending updates")
    return 0


async def _fetch_me(base_url: str, token: str, timeout: float) -> dict[str, Any]:
    """``GET /v1/me`` with the resident's token: the person, keycards and doors."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as http:
            response = await http.get("/v1/me", headers=headers)
    except httpx.HTTPError as error:
        message = f"the cloud at {base_url} did not answer: {error!r}"
        raise PhoneOfflineError("login", message) from None
    if response.status_code >= 500:
        raise PhoneOfflineError("login", f"the cloud failed ({response.status_code})")
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        problem = body if isinstance(body, dict) else {}
        refused = CloudRefusedError(
            "read your profile",
            response.status_code,
            str(problem.get("title", response.reason_phrase)),
            str(problem.get("detail", response.text[:200])),
        )
        raise PhoneRefusedError("login", refused)
    if not isinstance(body, dict) or "id" not in body or "name" not in body:
        raise PhoneOfflineError("login", f"{base_url} did not answer as the cloud does")
    return body


async def _doors_command(run: Run) -> int:
    prefetched = await run.phone.prefetch()
    if not prefetched.online:
        print("the cloud did not answer: showing the updates the phone already carries")
    held = {b.door_id: b for b in await asyncio.to_thread(run.store.bundles)}
    doors = sorted(await _known_doors(run), key=lambda d: (run.app.door_names.get(d, "~"), d))
    if not doors:
        print("no doors: the login gave this phone none")
        return 0
    width = max(len(run.app.door_names.get(d, "")) for d in doors) or 1
    for door_id in doors:
        bundle = held.get(door_id)
        state = (
            f"pending: carries update v{bundle.base_version}->v{bundle.target_version}"
            if bundle
            else "nothing to carry"
        )
        print(f"{door_id}  {run.app.door_names.get(door_id, '?'):<{width}}  {state}")
    print(f"{len(doors)} doors, {len(held)} with a pending update this phone carries")
    return 0


async def _known_doors(run: Run) -> set[str]:
    return set(await run.phone.own_doors()) | set(run.app.door_names)


async def _queue(run: Run) -> int:
    waiting = await asyncio.to_thread(run.store.uploads)
    if not run.args.drain:
        if not waiting:
            print("nothing waits to upload")
        else:
            print(f"{len(waiting)} uploads wait, oldest first:")
        for item in waiting:
            print(f"  {_upload_line(run.app, item)}")
        return 0
    await _require_login(run, "drain")
    if not waiting:
        print("nothing waits to upload")
        return 0
    result = await run.phone.drain()
    print(f"uploaded {result.uploaded} of {len(waiting)}")
    for item, refusal in result.refused:
        print(f"  dropped #{item.id} {item.kind.value}: the cloud refused it: {refusal.detail}")
    if result.offline:
        raise PhoneOfflineError(
            "drain", f"the cloud did not answer; {result.waiting} uploads still wait"
        )
    if result.refused:
        raise CliError(f"the cloud refused {len(result.refused)} uploads (dropped)")
    return 0


def _upload_line(app: AppFile, item: Upload) -> str:
    return (
        f"#{item.id} {item.kind.value:<7} {app.label(item.door_id)}  {len(item.frame)} B"
        f"  queued {_when(item.queued_at)}"
    )


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- scan, unlock, sync ---------------------------------------------------------------------


async def _scan(run: Run) -> int:
    doors = await run.phone.doors_in_range(run.args.seconds)
    if not doors:
        print(f"no door heard in {run.args.seconds:g} s")
        return 0
    mine = await _known_doors(run) if run.store.login() is not None else set()
    for door in doors:
        rssi = "   ? dBm" if door.rssi is None else f"{door.rssi:4d} dBm"
        name = run.app.door_names.get(door.door_id) or (
            "yours" if door.door_id in mine else "not one of yours"
        )
        print(f"{door.door_id}  {rssi}  {name}")
    return 0


async def _resolve(run: Run, query: str) -> str:
    """The door id that *query* (id, unique id prefix, or name) names."""
    known = await _known_doors(run)
    wanted = query.strip().lower()
    if wanted in known or (len(wanted) == 32 and _is_hex(wanted)):
        return wanted
    by_name = [d for d, name in run.app.door_names.items() if name.lower() == wanted]
    if len(by_name) == 1:
        return by_name[0]
    by_prefix = sorted(d for d in known if _is_hex(wanted) and d.startswith(wanted))
    if len(by_prefix) == 1:
        return by_prefix[0]
    if len(by_prefix) > 1 or len(by_name) > 1:
        choices = ", ".join(run.app.label(d) for d in sorted(by_prefix or by_name))
        raise CliError(f"door {query!r} is ambiguous: {choices}")
    raise CliError(f"door {query!r} is not one of your doors (see phone-bridge doors)")


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)


async def _unlock(run: Run) -> int:
    door_id = await _resolve(run, run.args.door)
    await run.phone.prefetch()
    visit = await run.phone.visit(door_id, unlock=True)
    for line in _visit_lines(run.app.label(door_id), visit):
        print(line)
    report = visit.report
    if report.reason is not Reason.GRANTED:
        reason = _reason(report.reason)
        raise CliError(f"{run.app.label(door_id)}: the lock refused to open ({reason})")
    return 0


async def _sync(run: Run) -> int:
    await run.phone.prefetch()
    if run.args.all:
        outcomes = await run.phone.sync_all(seconds=run.args.seconds, also=run.app.door_names)
        if not outcomes:
            print(f"no door of yours heard in {run.args.seconds:g} s")
    else:
        door_id = await _resolve(run, run.args.door)
        outcomes = [await _sync_one(run, door_id)]
    failed = 0
    for outcome in outcomes:
        line, ok = _sync_line(run.app, outcome)
        failed += not ok
        print(line)
    if failed:
        raise CliError(f"{failed} of {len(outcomes)} doors failed to sync")
    return 0


async def _sync_one(run: Run, door_id: str) -> SyncOutcome:
    door = DoorInRange(door_id, "", None)
    try:
        return SyncOutcome(door, visit=await run.phone.visit(door_id, unlock=False))
    except PhoneError as error:
        return SyncOutcome(door, error=error)


async def _require_login(run: Run, step: str) -> None:
    if await asyncio.to_thread(run.store.login) is None:
        raise NotLoggedInError(step, "log the phone in first")


def _sync_line(app: AppFile, outcome: SyncOutcome) -> tuple[str, bool]:
    label = app.label(outcome.door.door_id)
    if outcome.error is not None or outcome.visit is None:
        return f"{label}: failed: {_one_line(str(outcome.error))}", False
    report = outcome.visit.report
    refused = report.bundle_refused
    if refused is not None:
        return f"{label}: failed: the lock refused the update ({refused.detail})", False
    if report.bundle_sent:
        moved = f"updated v{report.version_before}->v{report.version_after}"
        return f"{label}: synced, {moved}, {_receipt_state(outcome.visit)}", True
    return f"{label}: synced, already at v{report.version_before}, nothing to carry", True


def _visit_lines(label: str, visit: PhoneVisit) -> list[str]:
    report, lines = visit.report, []
    if visit.first is not None:
        lines.append(
            f"{label}: first refused ({_reason(visit.first.reason)}) until the update "
            "the phone carried was applied; asked again"
        )
        carried = visit.first
    else:
        carried = report
    decision = _reason(report.reason)
    opened = " - unlocked" if report.opened else ""
    lines.append(f"{label}: {decision}{opened}")
    if carried.bundle_sent:
        lines.append(
            f"  bundle delivered: v{carried.version_before}->v{carried.version_after},"
            f" {_receipt_state(visit)}"
        )
    else:
        lines.append(f"  no bundle needed (the lock holds v{report.version_before})")
    drain = visit.drain
    waiting = f", {drain.waiting} wait (phone-bridge queue --drain)" if drain.waiting else ""
    lines.append(f"  uploads: {drain.uploaded} sent{waiting}")
    return lines


def _receipt_state(visit: PhoneVisit) -> str:
    drain = visit.drain
    if drain.offline or drain.waiting or drain.stopped:
        return "receipt queued"
    return "receipt uploaded"


def _reason(reason: Reason | None) -> str:
    return "no answer" if reason is None else reason.name.lower().replace("_", " ")


# --- main ------------------------------------------------------------------------------------

_Command = Callable[[Run], Awaitable[int]]
_COMMANDS: Final[dict[str, tuple[_Command, bool, bool]]] = {
    # command: (handler, needs a login, needs a radio)
    "login": (_login, False, False),
    "doors": (_doors_command, True, False),
    "queue": (_queue, False, False),
    "scan": (_scan, False, True),
    "unlock": (_unlock, True, True),
    "sync": (_sync, True, True),
}


async def _main(args: argparse.Namespace) -> int:
    handler, login, radio = _COMMANDS[args.command]
    async with _run(args, login=login, radio=radio) as run:
        return await handler(run)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``phone-bridge`` console script."""
    args = _parser().parse_args(argv)
    root = logging.getLogger()
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(name)s: %(message)s")
    elif not root.handlers:
        root.addHandler(logging.NullHandler())  # library warnings stay off the terminal
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    except (CliError, PhoneBridgeError, OSError, TimeoutError) as error:
        message = str(error) or type(error).__name__
        if isinstance(error, NotLoggedInError):
            message += " (phone-bridge login --token TOKEN)"
        print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
