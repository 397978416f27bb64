"""Shared construct building blocks and the strict parse helper.

Theory of operation: message bodies are declared with ``construct`` from the field
types here (``docs/protocol.md`` §3.1). :func:`parse_exact` runs a compiled struct
over bytes and turns every construct failure into a typed
:class:`protocol.errors.DecodeError`, and rejects trailing bytes, so that no
construct exception ever escapes the package.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from construct import (
    Bytes,
    ConstructError,
    GreedyBytes,
    Int8ub,
    Int16ub,
    Int32ub,
    PascalString,
    Prefixed,
    StreamError,
)

from .errors import MalformedMessageError, TrailingBytesError, TruncatedError

__all__ = [
    "DIGEST_SIZE",
    "DOOR_ID_SIZE",
    "KEY_SIZE",
    "SIGNATURE_SIZE",
    "U8",
    "U16",
    "U32",
    "Bytes8",
    "Bytes16",
    "Bytes32",
    "Digest",
    "DoorId",
    "Key32",
    "Utf8Short",
    "check_extent",
    "parse_exact",
]

DOOR_ID_SIZE = 16
KEY_SIZE = 32
DIGEST_SIZE = 32
SIGNATURE_SIZE = 64

U8, U16, U32 = Int8ub, Int16ub, Int32ub
DoorId = Bytes(DOOR_ID_SIZE)
Key32 = Bytes(KEY_SIZE)
Digest = Bytes(DIGEST_SIZE)
Bytes8 = Prefixed(Int8ub, GreedyBytes)
"""``bytes8``: a byte string after a one-byte length."""
Bytes16 = Prefixed(Int16ub, GreedyBytes)
"""``bytes16``: a byte string after a two-byte length."""
Bytes32 = Prefixed(Int32ub, GreedyBytes)
"""``bytes32``: a byte string after a four-byte length."""
Utf8Short = PascalString(Int8ub, "utf8")


class _StrictStream(io.BytesIO):
    """A stream whose sized reads never come up short.

    Compiled construct parsers read ``Bytes(n)`` and ``Prefixed`` fields with a
    bare ``io.read(n)`` and accept fewer bytes at the end of the input; this
    makes a short read a :class:`StreamError` (so :class:`TruncatedError`).
    """

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if size is not None and size >= 0 and len(data) < size:
            raise StreamError(f"read {len(data)} of {size} bytes")
        return data


def parse_exact(fmt: Any, data: bytes, what: str) -> Any:
    """Parse ``data`` with ``fmt``; raise a typed error on any fault or leftover byte."""
    stream = _StrictStream(data)
    try:
        result = fmt.parse_stream(stream)
    except (StreamError, struct.error):
        raise TruncatedError(f"{what}: input ended early") from None
    except ConstructError as exc:
        raise MalformedMessageError(f"{what}: {_first_line(exc)}") from None
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise MalformedMessageError(f"{what}: {_first_line(exc)}") from None
    leftover = len(data) - stream.tell()
    if leftover:
        raise TrailingBytesError(leftover)
    return result


def check_extent(data: bytes, head: int, end: int, what: str) -> None:
    """Raise what :func:`parse_exact` raises for a body whose fields end at ``end``:
    :class:`TruncatedError` if ``data`` is shorter than its fixed ``head`` (then ``end`` is
    not known yet) or than ``end``; :class:`TrailingBytesError` if it is longer. For the
    hand-written :mod:`struct` decoders of the hot paths."""
    if len(data) < head or len(data) < end:
        raise TruncatedError(f"{what}: input ended early")
    if len(data) > end:
        raise TrailingBytesError(len(data) - end)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
