"""Command line: ``python -m bench [NAME] [--json] [--quick] [--check] [--list]``.

Theory of operation: with no name (or ``--list``) print the registered benchmarks.
With a name, run it and print either the aligned table (figure, value, unit,
goal, verdict) or, with ``--json``, exactly one flat JSON object of figures.
Exit status: 0 whenever figures were produced, even if a goal is missed, unless
``--check`` is given, in which case a missed goal exits 1; an unknown name or a
benchmark that cannot run exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import BENCHMARKS, BenchmarkError, load
from ._report import missed_goals, to_json, to_table

EXIT_OK, EXIT_GOAL_MISSED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run what it asks and return the exit status."""
    args = _parser().parse_args(argv)
    if args.list or args.name is None:
        return _list()
    try:
        bench = load(args.name)
        figures = bench.run(args.quick)
    except BenchmarkError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(to_json(figures) if args.json else to_table(bench, figures))
    missed = missed_goals(bench, figures)
    if args.check and missed:
        print(f"bench: goal missed: {', '.join(missed)}", file=sys.stderr)
        return EXIT_GOAL_MISSED
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="benchmark to run (omit to list them)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--json", action="store_true", help="print one flat JSON object")
    parser.add_argument("--quick", action="store_true", help="shorter loops (~0.1 s each)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    return parser


def _list() -> int:
    width = max(len(name) for name in BENCHMARKS)
    for name in sorted(BENCHMARKS):
        print(f"{name.ljust(width)}  {load(name).summary}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
