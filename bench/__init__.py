"""Benchmarks: measured figures of the protocol, each checked against a goal.

Theory of operation: a benchmark is a module in this package that exposes
``run(quick: bool) -> dict[str, float | int]`` (flat figure name -> number) and
``GOALS`` (figure name -> ``(op, value)``, e.g. ``("<=", 244)``); it may also
expose ``UNITS`` (figure name -> unit) for the table. :data:`BENCHMARKS` is the
registry, name -> module; modules are imported only when asked for, so listing
the benchmarks costs nothing and one benchmark's dependencies never load for
another.

Run them with ``python -m bench NAME [--json] [--quick] [--check]``. They are
tools, not tests: nothing here is collected by pytest.
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkError",
    "Figures",
    "Goal",
    "UnknownBenchmarkError",
    "goal_met",
    "load",
]

Figures = dict[str, float | int]
"""What a benchmark's ``run`` returns: flat figure name -> number."""

Goal = tuple[str, float | int]
"""A goal on one figure: a comparison operator and the value to compare with."""

BENCHMARKS: dict[str, str] = {
    "cloud": "bench.cloud",
    "controller": "bench.controller",
    "fuzz": "bench.fuzz",
    "phone": "bench.phone",
    "protocol": "bench.protocol",
    "sim": "bench.sim",
}
"""The registry: benchmark name -> module implementing it."""

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}


class BenchmarkError(Exception):
    """A benchmark cannot be found, loaded or run as declared."""


class UnknownBenchmarkError(BenchmarkError):
    """No benchmark of this name is registered."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown benchmark {name!r}; available: {', '.join(sorted(BENCHMARKS))}")


@dataclass(frozen=True)
class Benchmark:
    """One loaded benchmark: its name, summary, entry point, goals and units."""

    name: str
    summary: str
    run: Callable[[bool], Figures]
    goals: Mapping[str, Goal]
    units: Mapping[str, str]


def load(name: str) -> Benchmark:
    """Import the module registered as ``name`` and check its interface."""
    if name not in BENCHMARKS:
        raise UnknownBenchmarkError(name)
    module = importlib.import_module(BENCHMARKS[name])
    run = getattr(module, "run", None)
    if not callable(run):
        raise BenchmarkError(f"benchmark module {module.__name__} has no run(quick) function")
    goals = getattr(module, "GOALS", {})
    for key, (op, _) in goals.items():
        if op not in _OPERATORS:
            raise BenchmarkError(f"{module.__name__}: goal on {key!r} uses unknown operator {op!r}")
    return Benchmark(name, _summary(module), run, goals, getattr(module, "UNITS", {}))


def goal_met(value: float | int, goal: Goal) -> bool:
    """True when ``value`` satisfies ``goal``."""
    op, target = goal
    return _OPERATORS[op](value, target)


def _summary(module: ModuleType) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0].replace("``", "") if doc else ""
