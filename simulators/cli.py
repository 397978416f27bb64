"""``doorsim``: the building simulator's command line.

Theory of operation: a thin adapter over :mod:`simulators.demo`. ``doorsim demo`` runs the
seeds' story in a live building on embedded defaults (amqtt in-process, SQLite in a
temporary directory, bumble's virtual radio, the cloud API on localhost); ``--mqtt URL``
uses a running broker (Mosquitto) instead; ``--json`` prints one JSON object (each step's
``name``, ``ok``, ``ms`` and ``detail``) instead of the narration. ``doorsim check
SCENARIO...`` validates scenario files (:mod:`simulators.scenario`): ``FILE: ok`` with the
counts, or ``FILE:LINE: reason``.

Exit status: 0 when every expected outcome happened; 1 when one did not (the failed step is
named) or the building could not start (one line on stderr, e.g. an unreachable broker);
2 for bad usage (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from infra.cli_args import OneLineParser, mqtt_url

__all__ = ["main"]

PROG = "doorsim"


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="The door-lock building simulator.")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )
    demo = commands.add_parser(
        "demo", help="the seeds' story end to end on real components, narrated step by step"
    )
    demo.add_argument(
        "--mqtt",
        type=mqtt_url,
        metavar="URL",
        help="a running broker, e.g. mqtt://127.0.0.1:1883 (default: amqtt in-process)",
    )
    demo.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the narration"
    )
    check = commands.add_parser(
        "check", help="validate scenario files (simulators/scenarios/README.md has the format)"
    )
    check.add_argument("paths", nargs="+", metavar="SCENARIO", help="a scenario TOML file")
    return parser


def _demo(args: argparse.Namespace) -> int:
    # The story's parts (cloud, locks, radio) load only once the flags are good.
    from . import demo
    from .building import BrokerUnreachableError, BuildingError

    config = replace(demo.DEMO_CONFIG, mqtt_url=args.mqtt)
    try:
        report = asyncio.run(demo.run_demo(config, out=None if args.json else sys.stdout))
    except BrokerUnreachableError as exc:
        return _fail(f"{exc} (is it running? without --mqtt the demo starts its own)")
    except BuildingError as exc:
        return _fail(str(exc))
    if args.json:
        print(report.to_json())
    return 0 if report.ok else 1


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def _quiet_logs() -> None:
    """Only warnings and errors of the parts reach stderr (the narration is the output)."""
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``doorsim`` console script."""
    args = _parser().parse_args(argv)
    _quiet_logs()
    try:
        if args.command == "check":
            from .scenario import check_main

            return check_main(args.paths)
        return _demo(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (``doorsim demo | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
