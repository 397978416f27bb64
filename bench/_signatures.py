"""The Ed25519 operations of a run, counted, and what they cost on this machine.

Theory of operation: every signature of the project is made and checked through
:func:`protocol.crypto.sign` and :func:`protocol.crypto.verify`. :func:`counted` replaces
both, in :mod:`protocol.crypto` and in every loaded module that imported them by name,
with counting wrappers for the length of a block (one Python call each, well under a
microsecond against the tens of microseconds of the operation itself), and restores them
after. :func:`unit_costs` times one sign and one verify of a 100-byte body here. A run's
**signature floor** is its counts times those costs: the wall seconds its real crypto
alone takes on this machine, whatever the rest of the code costs. A rate figure set
against it says how much of the gap to a goal is crypto and how much is everything else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from protocol import crypto
from protocol.crypto import SignContext, ed25519_private_from_seed

from ._timing import measure_rate, repeated

__all__ = ["SignatureCount", "UnitCosts", "counted", "unit_costs"]


@dataclass
class SignatureCount:
    """Ed25519 operations seen inside a :func:`counted` block."""

    signs: int = 0
    verifies: int = 0

    def floor_s(self, costs: UnitCosts) -> float:
        """The wall seconds these operations take at ``costs``."""
        return self.signs * costs.sign_s + self.verifies * costs.verify_s


@dataclass(frozen=True)
class UnitCosts:
    """Seconds per Ed25519 sign and verify on this machine."""

    sign_s: float
    verify_s: float


@contextmanager
def counted() -> Iterator[SignatureCount]:
    """Count every :func:`protocol.crypto.sign` and ``verify`` call inside the block."""
    count = SignatureCount()
    sign, verify = crypto.sign, crypto.verify

    def counting_sign(*args: Any) -> bytes:
        count.signs += 1
        return sign(*args)

    def counting_verify(*args: Any) -> None:
        count.verifies += 1
        verify(*args)

    patched = _replace([(sign, counting_sign), (verify, counting_verify)])
    try:
        yield count
    finally:
        for module, name, original in patched:
            setattr(module, name, original)


def _replace(
    replacements: list[tuple[Callable[..., Any], Callable[..., Any]]],
) -> list[tuple[Any, str, Any]]:
    """Swap each original for its replacement wherever a loaded module holds it by name."""
    patched = []
    for module in list(sys.modules.values()):
        names = getattr(module, "__dict__", None)
        if not isinstance(names, dict):
            continue
        for name, value in list(names.items()):
            for original, replacement in replacements:
                if value is original:
                    setattr(module, name, replacement)
                    patched.append((module, name, original))
    return patched


def unit_costs(seconds: float = 0.5) -> UnitCosts:
    """Time one Ed25519 sign and one verify of a 100-byte body on this machine."""
    key = ed25519_private_from_seed(bytes(32))
    public = key.public_key()
    body = bytes(100)
    signature = crypto.sign(key, SignContext.AUDIT_BATCH, body)
    signs = measure_rate(
        repeated(lambda: crypto.sign(key, SignContext.AUDIT_BATCH, body)), seconds=seconds
    )
    verifies = measure_rate(
        repeated(lambda: crypto.verify(public, SignContext.AUDIT_BATCH, body, signature)),
        seconds=seconds,
    )
    return UnitCosts(sign_s=1 / signs, verify_s=1 / verifies)
