"""Fuzzing throughput: the decoders fed random inputs from ``tests/fuzzing.py``.

Theory of operation: ``tests/fuzzing.py`` exposes ``TARGETS`` and
``run(count: int, seed: int) -> dict[str, int]``, which feeds ``count`` inputs
from a seeded generator and counts the outcomes. It is loaded by file path only
when this benchmark runs (never at import), with ``tests/`` on ``sys.path`` as
pytest puts it there, so the fuzz code can share the test strategies. The whole
run is timed once with ``time.perf_counter``. ``run`` raises ``FuzzCrash`` on the
first exception that is not a declared protocol error; that stops the run and is
reported as one unexpected exception (goal: zero) with the input printed.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path
from types import ModuleType

from . import BenchmarkError, Figures, Goal

__all__ = ["DEFAULT_COUNT", "GOALS", "QUICK_COUNT", "SEED", "UNITS", "run"]

DEFAULT_COUNT = 1_000_000
QUICK_COUNT = 100_000
SEED = 0
FUZZING_PATH = Path(__file__).resolve().parent.parent / "tests" / "fuzzing.py"
_MODULE_NAME = "fuzzing"

GOALS: dict[str, Goal] = {"fuzz_unexpected_exceptions": ("==", 0)}
UNITS: dict[str, str] = {
    "fuzz_targets": "targets",
    "fuzz_inputs": "inputs",
    "fuzz_inputs_per_s": "inputs/s",
    "fuzz_unexpected_exceptions": "count",
}


def run(quick: bool) -> Figures:
    """Run every fuzz target over ``count`` seeded inputs and report the outcomes."""
    fuzzing = _load_fuzzing()
    count = QUICK_COUNT if quick else DEFAULT_COUNT
    start = time.perf_counter()
    try:
        outcomes, unexpected = fuzzing.run(count, SEED), 0
    except fuzzing.FuzzCrash as crash:
        print(f"bench fuzz: {crash}", file=sys.stderr)
        outcomes, unexpected = {}, 1
    elapsed = time.perf_counter() - start
    inputs = sum(outcomes.values())
    return {
        "fuzz_targets": len(fuzzing.TARGETS),
        "fuzz_inputs": inputs,
        "fuzz_inputs_per_s": round(inputs / elapsed, 1),
        "fuzz_unexpected_exceptions": unexpected,
        **{f"fuzz_outcome_{_slug(name)}": int(n) for name, n in sorted(outcomes.items())},
    }


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _load_fuzzing() -> ModuleType:
    """Import ``tests/fuzzing.py`` by path (``tests`` is not an installed package)."""
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    if not FUZZING_PATH.is_file():
        raise BenchmarkError(f"fuzz targets not found: {FUZZING_PATH} does not exist yet")
    tests_dir = str(FUZZING_PATH.parent)
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, FUZZING_PATH)
    if spec is None or spec.loader is None:
        raise BenchmarkError(f"cannot load {FUZZING_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[_MODULE_NAME]
        raise BenchmarkError(f"cannot import {FUZZING_PATH}: {exc!r}") from exc
    _check_interface(module)
    return module


def _check_interface(module: ModuleType) -> None:
    if (
        not callable(getattr(module, "run", None))
        or not hasattr(module, "TARGETS")
        or not hasattr(module, "FuzzCrash")
    ):
        raise BenchmarkError(f"{FUZZING_PATH} must define run(count, seed), TARGETS, FuzzCrash")
