"""Constructor checks shared by the message classes.

Each helper raises :class:`protocol.errors.UsageError` with the field name; the
decoders turn that into :class:`MalformedMessageError` for bytes from the wire.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

from .errors import UsageError

E = TypeVar("E", bound=IntEnum)


def check_uint(name: str, value: int, bits: int) -> None:
    """``value`` must be an int in ``[0, 2**bits)``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
        raise UsageError(f"{name} must be an integer in [0, 2**{bits}); got {value!r}")


def check_bytes(name: str, value: bytes, *, size: int | None = None, max_size: int = 0) -> None:
    """``value`` must be bytes of exactly ``size`` or at most ``max_size`` bytes."""
    if not isinstance(value, bytes):
        raise UsageError(f"{name} must be bytes; got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise UsageError(f"{name} must be {size} bytes; got {len(value)}")
    if max_size and len(value) > max_size:
        raise UsageError(f"{name} must be at most {max_size} bytes; got {len(value)}")


def to_enum(enum: type[E], name: str, value: int) -> E:
    """Convert a wire integer to ``enum`` or raise :class:`UsageError`."""
    if type(value) is enum:  # already a member: enum(member) is the member itself
        return value
    try:
        return enum(value)
    except ValueError:
        raise UsageError(f"{name}: {value!r} is not a valid {enum.__name__}") from None
