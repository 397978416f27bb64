"""``door-controller``: provision, run and inspect a reference lock.

Theory of operation: a thin adapter over :mod:`controller.runtime`. ``provision``
creates a flash image (identity and sealing keys, the cloud's public key, ids)
and prints the registration the cloud needs; ``run`` boots the image and serves
it as an online MQTT door or an offline BLE door; ``inspect`` reads an image
without changing it. Every failure is one line on stderr and a non-zero exit:
2 for bad usage, 1 for a bad flash image or a runtime failure.

This is the one place that reads the machine's clock: the lock's RTC is the
wall clock, read through the event loop's clock while running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.cli_args import OneLineParser
from protocol.crypto import public_bytes

from .config import ControllerConfig
from .identity import LockIdentity, fingerprint
from .runtime import LockRuntime, NotProvisionedError
from .state import CorruptStateError, LockState
from .storage import StorageError, open_flash

__all__ = ["main"]

PROG = "door-controller"


class CliError(Exception):
    """A failure to report as one line (exit status 1)."""


def _hex_bytes(size: int) -> Callable[[str], bytes]:
    def parse(text: str) -> bytes:
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not hexadecimal: {text!r}") from None
        if len(value) != size:
            raise argparse.ArgumentTypeError(
                f"need {size} bytes ({2 * size} hex digits), got {len(value)}"
            )
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="The reference lock controller.")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )
    provision = commands.add_parser("provision", help="create a lock's flash image and keys")
    provision.add_argument(
        "--flash", required=True, type=Path, help="flash image directory to create"
    )
    provision.add_argument(
        "--cloud-key",
        required=True,
        type=_hex_bytes(32),
        help="the cloud's Ed25519 public signing key (64 hex digits)",
    )
    provision.add_argument(
        "--door-id", type=_hex_bytes(16), help="16-byte door id in hex (default: random)"
    )
    provision.add_argument(
        "--property-id", type=_hex_bytes(16), help="16-byte property id (default: zeros)"
    )
    provision.add_argument(
        "--doorcode-secret", type=_hex_bytes(32), help="32-byte doorcode secret (default: random)"
    )
    provision.add_argument(
        "--registration", type=Path, help="write the registration JSON here (default: stdout)"
    )
    provision.add_argument("--force", action="store_true", help="erase an existing image")
    run = commands.add_parser("run", help="boot an image and serve it")
    run.add_argument("--flash", required=True, type=Path)
    face = run.add_mutually_exclusive_group(required=True)
    face.add_argument(
        "--mqtt", metavar="URL", help="online door: broker URL, e.g. mqtt://127.0.0.1:1883"
    )
    face.add_argument(
        "--ble", metavar="TRANSPORT", help="offline door: a bumble transport, e.g. usb:0"
    )
    run.add_argument("--capacity", type=_positive, default=10_000, help="credential capacity")
    inspect = commands.add_parser("inspect", help="print what a flash image holds")
    inspect.add_argument("flash", type=Path, metavar="FLASH")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def _provision(args: argparse.Namespace) -> int:
    flash = open_flash(args.flash)
    if not args.force and flash.stats().active is not None:
        raise CliError(f"{args.flash} already holds a lock; pass --force to erase it")
    identity = LockIdentity.generate(
        door_id=args.door_id or os.urandom(16),
        property_id=args.property_id or bytes(16),
        doorcode_secret=args.doorcode_secret or os.urandom(32),
        random=os.urandom,
    )
    now = time.time()
    runtime = LockRuntime.provision(
        flash,
        identity,
        args.cloud_key,
        config=ControllerConfig(),
        clock=lambda: now,
        wall_time=int(now),
    )
    registration = runtime.controller.state.identity.registration().to_json()
    if args.registration:
        args.registration.touch(mode=0o600)
        args.registration.chmod(0o600)  # it holds the keypad secret
        args.registration.write_text(registration + "\n")
        print(f"provisioned door {identity.door_id.hex()}; registration: {args.registration}")
    else:
        print(registration)
    return 0


def _load_state(path: Path) -> tuple[LockState, str]:
    if not path.is_dir():
        raise CliError(f"{path}: not a flash image directory")
    flash = open_flash(path)
    loaded = flash.load()
    if loaded.snapshot is None:
        raise CliError(f"{path}: empty flash image (provision it first)")
    config = ControllerConfig()
    state = LockState.replay(
        loaded.snapshot,
        loaded.transactions,
        audit_capacity=config.audit_capacity,
    )
    return state, flash.stats().describe()


def _inspect(args: argparse.Namespace) -> int:
    state, flash_description = _load_state(args.flash)
    identity = state.identity
    rows = [
        ("door id", identity.door_id.hex()),
        ("property id", identity.property_id.hex()),
        ("list version", str(state.held.version)),
        ("credentials", str(len(state.held))),
        ("list digest", state.held.digest.hex()),
        ("audit head seq", str(state.audit.head_seq)),
        ("audit events held", str(state.audit.pending)),
        ("audit events lost", str(state.audit.lost)),
        ("boots", str(state.boot_count)),
        (
            "cloud key",
            f"epoch {state.cloud.epoch}, fingerprint {fingerprint(state.cloud.public_key)}",
        ),
        ("identity key", fingerprint(identity.identity_public)),
        ("sealing key", fingerprint(public_bytes(identity.sealing_key()))),
        ("clock offset", f"{state.clock_offset} s (time sync #{state.time_sync_seq})"),
        ("battery used", f"{state.battery_used_mah:.3f} mAh"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(flash_description)
    return 0


def _run(args: argparse.Namespace) -> int:
    config = ControllerConfig(capacity=args.capacity)
    try:
        return asyncio.run(_serve(args, config))
    except KeyboardInterrupt:
        return 0


async def _serve(args: argparse.Namespace, config: ControllerConfig) -> int:
    loop = asyncio.get_running_loop()
    skew = time.time() - loop.time()
    runtime = LockRuntime.boot(
        open_flash(args.flash), config=config, clock=lambda: loop.time() + skew
    )
    door_id = runtime.controller.door_id.hex()
    energise = _announce_energise(door_id)
    if args.mqtt:
        return await _serve_mqtt(runtime, args.mqtt, door_id, energise)
    return await _serve_ble(runtime, args.ble, door_id, energise)


def _announce_energise(door_id: str) -> Callable[[int], None]:
    def energise(seconds: int) -> None:
        print(f"door {door_id}: unlocked for {seconds} s", flush=True)

    return energise


async def _serve_mqtt(
    runtime: LockRuntime, url: str, door_id: str, energise: Callable[[int], None]
) -> int:
    from infra.broker import parse_mqtt_url

    from .mqtt_door import MqttDoor

    try:
        host, port = parse_mqtt_url(url)
    except ValueError as exc:
        raise CliError(f"--mqtt {url!r}: {exc}") from None
    door = MqttDoor(runtime, host=host, port=port, on_energise=energise)
    print(
        f"door {door_id}: online door on {url} (list v{runtime.controller.state.held.version})",
        flush=True,
    )
    try:
        await door.run()
    finally:
        await door.stop(announce_offline=True)
    return 0


async def _serve_ble(
    runtime: LockRuntime, transport: str, door_id: str, energise: Callable[[int], None]
) -> int:
    from .ble_door import BleDoor

    try:
        door = await BleDoor.open(runtime, transport, on_energise=energise)
    except Exception as exc:  # bumble raises many kinds for a bad transport string
        raise CliError(f"--ble {transport!r}: cannot open the transport: {exc}") from None
    await door.start()
    print(f"door {door_id}: offline BLE door advertising on {transport}", flush=True)
    try:
        while True:
            deadline = runtime.next_deadline()
            delay = 1.0 if deadline is None else max(0.0, deadline - runtime.clock())
            await asyncio.sleep(min(delay, 1.0))
            runtime.handle_timeout()
    finally:
        await door.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``door-controller`` console script."""
    args = _parser().parse_args(argv)
    handlers = {"provision": _provision, "inspect": _inspect, "run": _run}
    try:
        return handlers[args.command](args)
    except (CliError, StorageError, CorruptStateError, NotProvisionedError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
