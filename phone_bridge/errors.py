"""The phone bridge's error base: every error it raises is a :class:`PhoneBridgeError`.

Theory of operation: each module keeps its own family, split by who is at fault (a link
step, a phone step, a cloud call, the store), and all share this base so a caller (the
``phone-bridge`` command) can report any of them as one line. A :class:`StepError`
names the step that failed (``connect``, ``send auth``, ``prefetch`` …) and says why.
"""

from __future__ import annotations

__all__ = ["PhoneBridgeError", "StepError"]


class PhoneBridgeError(Exception):
    """Base of every error the phone bridge raises."""


class StepError(PhoneBridgeError):
    """A step failed; ``step`` names it and ``reason`` says why."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step, self.reason = step, reason
