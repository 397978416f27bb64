"""``lock-conformance``: judge one lock, requirement by requirement, against LK1.

Theory of operation: parse the flags (usage errors are one line and exit status 2,
via :class:`infra.cli_args.OneLineParser`), build the lock under test — the reference
controller in this process (default), an adapter program (``--adapter process
--command ...``), the reference lock's BLE face (``--adapter ble``) or its MQTT face on
a broker (``--adapter mqtt --mqtt URL``) — select requirements by tag, run them
(:mod:`conformance.runner`),
print the table (:mod:`conformance.report`), write JUnit XML if asked, and exit 0 when
every verdict was expected, 1 otherwise. Exit status 2 also covers an unreadable
expected-failures file and an adapter that cannot be started (such as a broker
that does not answer).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.cli_args import OneLineParser, mqtt_url

from .lut import AdapterError, LockUnderTest
from .registry import Requirement, catalogue
from .report import table, write_junit
from .runner import ExpectedFailuresError, load_expected_failures, run, select

__all__ = ["main"]

PROG = "lock-conformance"


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Run the LK1 conformance catalogue against one lock (docs/conformance.md).",
    )
    parser.add_argument(
        "--adapter",
        choices=("inprocess", "process", "ble", "mqtt"),
        default="inprocess",
        help="how to reach the lock: the reference controller in this process (default), an"
        " adapter program speaking JSON lines on stdin/stdout, the reference lock's BLE"
        " face over bumble's virtual radio through the bleak API, or the reference lock's"
        " MQTT face on the broker given by --mqtt",
    )
    parser.add_argument("--command", help="the adapter program to start (with --adapter process)")
    parser.add_argument(
        "--mqtt",
        type=mqtt_url,
        metavar="URL",
        help="the broker, mqtt://HOST[:PORT] (with --adapter mqtt; e.g. mqtt://127.0.0.1:1883)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=30.0,
        help="seconds to wait for each adapter reply (default 30)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TAG",
        help="run only requirements with this tag or name (repeatable, or comma-separated)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="TAG",
        help="leave out requirements with this tag or name (repeatable, or comma-separated)",
    )
    parser.add_argument(
        "--expected-failures",
        type=Path,
        metavar="FILE",
        help="known gaps: one requirement name per line, '#' comments",
    )
    parser.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML here")
    parser.add_argument(
        "--list", action="store_true", help="list the requirements (name, tags, section) and exit"
    )
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _tags(values: Sequence[str]) -> list[str]:
    return [tag.strip() for value in values for tag in value.split(",") if tag.strip()]


def _check_tags(parser: argparse.ArgumentParser, tags: list[str], known: set[str]) -> None:
    unknown = sorted(set(tags) - known)
    if unknown:
        parser.error(f"unknown tag or requirement: {', '.join(unknown)} (see --list)")


def _lock(parser: argparse.ArgumentParser, args: argparse.Namespace) -> LockUnderTest:
    if args.adapter != "process" and args.command:
        parser.error("--command is only for --adapter process")
    if args.adapter != "mqtt" and args.mqtt:
        parser.error("--mqtt is only for --adapter mqtt")
    if args.adapter == "inprocess":
        from .inprocess import InProcessLock

        return InProcessLock()
    if args.adapter == "ble":
        from .ble import BleLock

        return BleLock(timeout=args.timeout)
    if args.adapter == "mqtt":
        if not args.mqtt:
            parser.error("--adapter mqtt needs --mqtt mqtt://HOST[:PORT], the broker to use")
        from .mqtt import MqttLock

        return MqttLock(args.mqtt, timeout=args.timeout)
    if not args.command:
        parser.error('--adapter process needs --command "PROGRAM ARGS"')
    from .process import ProcessLock

    return ProcessLock(args.command, timeout=args.timeout)


def _listing(requirements: Sequence[Requirement]) -> str:
    width = max(len(r.name) for r in requirements)
    return "\n".join(
        f"{r.name.ljust(width)}  {r.section:24}  {','.join(sorted(r.tags))}" for r in requirements
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    requirements = catalogue()
    known = {t for r in requirements for t in r.tags} | {r.name for r in requirements}
    only, skip = _tags(args.only), _tags(args.skip)
    _check_tags(parser, only + skip, known)
    if args.list:
        print(_listing(requirements))
        return 0
    try:
        expected = (
            load_expected_failures(args.expected_failures, (r.name for r in requirements))
            if args.expected_failures
            else frozenset()
        )
    except ExpectedFailuresError as exc:
        parser.error(str(exc))
    chosen = select(requirements, only=only, skip=skip)
    if not chosen:
        parser.error("--only/--skip leave no requirement to run")
    try:
        lock = _lock(parser, args)
    except AdapterError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        results = run(lock, chosen, expected_failures=expected)
    finally:
        lock.close()
    print(table(results))
    if args.junit:
        write_junit(results, args.junit)
    return 1 if any(r.verdict.unexpected for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
