"""Reconnect delays shared by every adapter that retries a link (MQTT doors, the cloud's bridge).

Theory of operation: after ``failures`` consecutive failed attempts an adapter waits
``Backoff.delay(failures, random)``: exponential in the failures, capped, with "equal
jitter" (a uniform draw in the upper half) so that many clients cut off together do not
come back together. The randomness is injected, so tests and simulations are repeatable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["Backoff"]

_MAX_EXPONENT: Final = 64


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential reconnect delays with "equal jitter": in ``[d/2, d]``, ``d`` capped."""

    initial: float = 0.1
    cap: float = 5.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.cap or self.factor < 1:
            raise ValueError("need 0 < initial <= cap and factor >= 1")

    def delay(self, failures: int, random: Callable[[], float]) -> float:
        """The pause after ``failures`` consecutive failed attempts (0: the first retry)."""
        ceiling = min(self.cap, self.initial * self.factor ** min(failures, _MAX_EXPONENT))
        return ceiling / 2 + ceiling / 2 * random()
