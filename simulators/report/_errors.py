"""The report package's errors: one base, split by what went wrong.

Theory of operation: rendering a :class:`~simulators.outcome.RunOutcome` is pure and
cannot fail for any outcome value; only writing a report somewhere can. So there is one
base, :class:`ReportError`, and one kind of it, :class:`ReportTargetError`, for a place
the user named (``--html DIR``) that cannot hold the report. Its text is one line a
command line prints as is.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ReportError", "ReportTargetError"]


class ReportError(Exception):
    """Base of every error of :mod:`simulators.report`."""


class ReportTargetError(ReportError):
    """A report cannot be written where the user asked: ``path`` and ``reason``."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
