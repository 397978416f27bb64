"""``doorsim``: the building simulator's command line.

Theory of operation: a thin adapter over :mod:`simulators.demo`, the two runners and
:mod:`simulators.report`. ``doorsim demo`` runs the seeds' story in a live building on
embedded defaults (amqtt in-process, SQLite in a temporary directory, bumble's virtual
radio, the cloud API on localhost); ``--mqtt URL`` uses a running broker (Mosquitto)
instead; ``--json`` prints one JSON object (each step's ``name``, ``ok``, ``ms`` and
``detail``) instead of the narration. ``doorsim check SCENARIO...`` validates scenario
files (:mod:`simulators.scenario`): ``FILE: ok`` with the counts, or ``FILE:LINE: reason``.

``doorsim run SCENARIO [--mode fast|live] [--speed X] [--mqtt URL] [--json] [--html DIR]
[--decisions]`` runs a scenario file and reports it:

* ``--mode fast`` (the default) runs it on a virtual clock (:mod:`simulators.fast`), as
  fast as the machine goes; ``--mode live`` on real components in wall-clock time
  (:mod:`simulators.live`), ``--speed X`` scenario seconds per wall second (default 1; a
  positive finite number) and ``--mqtt URL`` a running broker instead of the embedded one.
  ``--speed`` and ``--mqtt`` are refused in fast mode.
* While it runs, a progress bar (scenario time done, wall time left) is drawn on stderr
  when stderr is a terminal. At the end stdout gets the key figures table, the faults
  with their effects and the verdict line (rich tables on a terminal, plain text
  otherwise), or, with ``--json``, one canonical JSON object instead (``--decisions``
  adds every access decision; it needs ``--json``).
* ``--html DIR`` also writes ``DIR/index.html``, a self-contained page with the tables
  and plots; DIR is created if missing and checked before the run starts.

The runners are imported only when a run starts, so ``check`` and ``demo`` work without
them. Exit status of ``run``: 0 when the run lost nothing; 1 when it lost door updates
or audit events (the verdict says how many; with ``--json`` it is also on stderr), when
the scenario is invalid (``FILE:LINE: reason`` on stderr) or when the run could not
start; 2 for bad usage, including an ``--html DIR`` that is a file or is not writable.

Exit status of ``demo`` and ``check``: 0 when every expected outcome happened; 1 when
one did not (the failed step is named) or the building could not start (one line on
stderr, e.g. an unreachable broker); 2 for bad usage (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from infra.cli_args import OneLineParser, mqtt_url

if TYPE_CHECKING:
    from .outcome import RunOutcome
    from .report import ProgressCallback
    from .scenario import Scenario

__all__ = ["main"]

PROG = "doorsim"
RUNNERS = {"fast": "simulators.fast.scenario_run", "live": "simulators.live"}
"""Where each mode's ``run_scenario`` lives (imported when a run starts)."""

Runner = Callable[["Scenario", "ProgressCallback"], "RunOutcome"]


class RunnerUnavailableError(Exception):
    """A mode's runner cannot be imported (not built yet, or a dependency is missing)."""


class RunFailedError(Exception):
    """The run could not start or go on (e.g. the broker named by ``--mqtt`` is down)."""


def speed(text: str) -> float:
    """Live mode's speed: scenario seconds per wall second (an ``argparse`` type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text!r}")
    return value


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
    _add_run(
        commands.add_parser(
            "run",
            help="run a scenario in fast or live mode and report",
            description="Run a scenario file and report it: key figures, faults, verdict.",
            epilog="Exit status: 0 nothing lost; 1 updates or audit events lost, an invalid "
            "scenario, or a run that could not start; 2 bad usage.",
        )
    )
    return parser


def _add_run(run: argparse.ArgumentParser) -> None:
    run.add_argument("scenario", metavar="SCENARIO", help="a scenario TOML file")
    run.add_argument(
        "--mode",
        choices=sorted(RUNNERS),
        default="fast",
        help="fast: a virtual clock (default); live: real components in wall-clock time",
    )
    run.add_argument(
        "--speed",
        type=speed,
        metavar="X",
        help="live mode: scenario seconds per wall second (default 1)",
    )
    run.add_argument(
        "--mqtt",
        type=mqtt_url,
        metavar="URL",
        help="live mode: a running broker, e.g. mqtt://127.0.0.1:1883 (default: amqtt in-process)",
    )
    run.add_argument(
        "--json", action="store_true", help="print one canonical JSON object, not the tables"
    )
    run.add_argument(
        "--html", type=Path, metavar="DIR", help="also write DIR/index.html (tables and plots)"
    )
    run.add_argument(
        "--decisions", action="store_true", help="with --json: every access decision too"
    )


def _check_run_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags that only make sense together (a usage error, exit 2, otherwise)."""
    if args.mode == "fast":
        for flag in ("speed", "mqtt"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag} applies to --mode live only")
    if args.decisions and not args.json:
        parser.error("--decisions applies to --json only")


def _run(args: argparse.Namespace) -> int:
    """``doorsim run``: load, check the target, run with a progress bar, report."""
    from .report import ReportTargetError, prepare_html_dir, progress_bar
    from .scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        runner = _runner(args)
        if args.html is not None:
            prepare_html_dir(args.html)
    except ReportTargetError as exc:
        return _fail(f"--html {exc}", status=2)
    except RunnerUnavailableError as exc:
        return _fail(str(exc))
    label = f"{scenario.name} ({args.mode})"
    try:
        with progress_bar(scenario.duration_s, label=label) as progress:
            outcome = runner(scenario, progress)
    except RunFailedError as exc:
        return _fail(str(exc))
    return _report(args, outcome)


def _report(args: argparse.Namespace, outcome: RunOutcome) -> int:
    """The run's reports where the flags ask; the exit status from its verdict."""
    from .report import ReportTargetError, print_summary, report_json, verdict, write_html

    if args.json:
        sys.stdout.write(report_json(outcome, decisions=args.decisions))
    else:
        print_summary(outcome)
    if args.html is not None:
        try:
            path = write_html(outcome, args.html)
        except ReportTargetError as exc:
            return _fail(f"--html {exc}")
        print(f"HTML report: {path}", file=sys.stderr if args.json else sys.stdout)
    if args.json and not outcome.ok:
        print(f"{PROG}: {verdict(outcome.figures).text}", file=sys.stderr)
    return 0 if outcome.ok else 1


def _runner(args: argparse.Namespace) -> Runner:
    """The mode's ``run_scenario``, bound to the flags; imported only now."""
    from .outcome import RunOutcome

    try:
        module = importlib.import_module(RUNNERS[args.mode])
        run_scenario = module.run_scenario
    except (ImportError, AttributeError) as exc:
        raise RunnerUnavailableError(f"{args.mode} mode is not available: {exc}") from None
    options: dict[str, object] = {}
    failures: tuple[type[Exception], ...] = ()
    if args.mode == "live":
        from .building import BuildingError

        options = {"speed": args.speed or 1.0, "mqtt_url": args.mqtt}
        failures = (BuildingError,)

    def run(scenario: Scenario, progress: ProgressCallback) -> RunOutcome:
        try:
            result = run_scenario(scenario, progress=progress, **options)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        except failures as exc:
            raise RunFailedError(_start_failure(exc)) from exc
        if not isinstance(result, RunOutcome):
            raise TypeError(f"{args.mode} runner returned {type(result).__name__}, not RunOutcome")
        return result

    return run


def _start_failure(error: Exception) -> str:
    from .building import BrokerUnreachableError

    if isinstance(error, BrokerUnreachableError):
        return f"{error} (is it running? without --mqtt the run starts its own)"
    return str(error)


async def _awaited(awaitable: object) -> object:
    return await awaitable  # type: ignore[misc]


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


def _fail(message: str, *, status: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _quiet_logs() -> None:
    """Only warnings and errors of the parts reach stderr (the narration is the output)."""
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``doorsim`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        _check_run_flags(parser, args)
    _quiet_logs()
    try:
        if args.command == "check":
            from .scenario import check_main

            return check_main(args.paths)
        if args.command == "run":
            return _run(args)
        return _demo(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (``doorsim demo | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
