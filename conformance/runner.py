"""Running the catalogue against one lock: selection, verdicts, expected failures.

Theory of operation: our own small runner, not pytest. The suite ships to integrators
as a command, so it must not depend on a test framework (pytest is only a test extra
here) and must not mix its verdicts with pytest's collection, fixtures and plugins; and
what it reports is not "tests" but requirements, each with a section of
``docs/protocol.md``, tags, a verdict and one detail line. The runner selects
requirements by tag (``only`` / ``skip``), builds a fresh :class:`~conformance.session.Session`
for each (a freshly provisioned lock), runs the check and maps the outcome to a
:class:`Verdict`. An integrator's expected-failures file turns known gaps into XFAIL and
reports a known gap that now passes as XPASS, so a release can be compared to the last.
Only FAIL, ERROR and XPASS are *unexpected*: they make the run fail.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .lut import AdapterError, LockUnderTest
from .registry import CheckFailed, NotApplicable, Requirement, catalogue
from .session import Session

__all__ = [
    "ExpectedFailuresError",
    "Result",
    "Verdict",
    "load_expected_failures",
    "run",
    "select",
]


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    """The adapter or the check broke down; no verdict on the requirement."""
    SKIP = "SKIP"
    XFAIL = "XFAIL"
    """Failed, and listed as a known gap."""
    XPASS = "XPASS"
    """Listed as a known gap, but passed: update the expected-failures file."""

    @property
    def unexpected(self) -> bool:
        return self in (Verdict.FAIL, Verdict.ERROR, Verdict.XPASS)


@dataclass(frozen=True)
class Result:
    requirement: Requirement
    verdict: Verdict
    detail: str
    seconds: float


class ExpectedFailuresError(ValueError):
    """The expected-failures file is unreadable or names unknown requirements."""


def load_expected_failures(path: Path, known: Iterable[str]) -> frozenset[str]:
    """Requirement names, one per line; ``#`` starts a comment (the reason, by convention)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExpectedFailuresError(f"cannot read {path}: {exc.strerror}") from None
    names = {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}
    unknown = sorted(names - set(known))
    if unknown:
        raise ExpectedFailuresError(
            f"{path} names unknown requirements: {', '.join(unknown)} (list them with --list)"
        )
    return frozenset(names)


def select(
    requirements: Sequence[Requirement], *, only: Iterable[str] = (), skip: Iterable[str] = ()
) -> list[Requirement]:
    """Keep requirements with any ``only`` tag (all if none) and without any ``skip`` tag.

    A requirement's own name counts as a tag, so ``--only bundle_rollback_is_refused`` works.
    """
    only, skip = set(only), set(skip)
    return [
        r
        for r in requirements
        if (not only or only & (r.tags | {r.name})) and not skip & (r.tags | {r.name})
    ]


def run(
    lock: LockUnderTest,
    requirements: Sequence[Requirement] | None = None,
    *,
    expected_failures: frozenset[str] = frozenset(),
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Judge ``lock`` on each requirement (all of the catalogue by default)."""
    results = []
    for requirement in catalogue() if requirements is None else requirements:
        result = _judge(lock, requirement, requirement.name in expected_failures)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _judge(lock: LockUnderTest, requirement: Requirement, known_gap: bool) -> Result:
    started = time.monotonic()
    verdict, detail = _outcome(lock, requirement)
    if known_gap and verdict is Verdict.FAIL:
        verdict = Verdict.XFAIL
    elif known_gap and verdict is Verdict.PASS:
        verdict, detail = Verdict.XPASS, f"listed as a known gap, but passes: {detail}"
    return Result(requirement, verdict, detail, time.monotonic() - started)


def _outcome(lock: LockUnderTest, requirement: Requirement) -> tuple[Verdict, str]:
    try:
        session = Session.start(lock)
        missing = sorted(requirement.needs - session.reg.capabilities)
        if missing:
            return Verdict.SKIP, f"the adapter lacks {', '.join(missing)}"
        return Verdict.PASS, requirement.check(session) or ""
    except CheckFailed as failure:
        return Verdict.FAIL, str(failure)
    except NotApplicable as reason:
        return Verdict.SKIP, str(reason)
    except AdapterError as exc:
        return Verdict.ERROR, f"adapter: {exc}"
    except Exception as exc:  # a check or adapter bug: report it, judge the next one
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return Verdict.ERROR, f"{type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"
