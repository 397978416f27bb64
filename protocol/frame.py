"""The frame: one envelope for every transport (``docs/protocol.md`` §2).

Theory of operation: a frame is ``header || payload || crc32``. The 8-byte header
(magic ``"LK"``, protocol version, message type, payload length) is declared once
with ``construct`` and compiled; the CRC-32 (IEEE 802.3, as ``zlib.crc32``) over the
header and payload is computed outside construct, which keeps a round trip fast.

Decoding checks, in this order, and raises a distinct
:class:`protocol.errors.DecodeError` subclass for each failure: length of the
header, magic, version, length field against the configured cap and against the
bytes present, trailing bytes, CRC, message type. Nothing is returned until every
check has passed.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

from construct import Const, Int8ub, Int32ub, Struct

from .codes import MessageType
from .errors import (
    BadChecksumError,
    BadLengthError,
    BadMagicError,
    TooLargeError,
    TrailingBytesError,
    TruncatedError,
    UnknownMessageTypeError,
    UnsupportedVersionError,
    UsageError,
)
from .limits import DEFAULT_LIMITS, Limits

__all__ = [
    "FRAME_OVERHEAD",
    "HEADER_SIZE",
    "MAGIC",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Frame",
]

MAGIC = b"LK"
PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (PROTOCOL_VERSION,)
HEADER_SIZE = 8
CRC_SIZE = 4
FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE

FrameHeader = Struct(
    "magic" / Const(MAGIC),
    "version" / Int8ub,
    "type" / Int8ub,
    "length" / Int32ub,
).compile()

HEADER_STRUCT: Final = struct.Struct(">2sBBI")
""":data:`FrameHeader` as a ``struct`` format, for the encoding hot path."""

_TYPES: Final = {int(t): t for t in MessageType}
_KNOWN_TYPES = frozenset(_TYPES)


@dataclass(frozen=True, kw_only=True, slots=True)
class Frame:
    """A decoded frame: protocol version, message type and the raw payload."""

    type: MessageType
    payload: bytes
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if self.version not in SUPPORTED_VERSIONS:
            raise UsageError(f"cannot build a frame of unsupported version {self.version}")
        if len(self.payload) >= 1 << 32:
            raise UsageError("payload does not fit the 32-bit length field")

    def to_bytes(self) -> bytes:
        """Encode as ``header || payload || crc32`` (§2.1)."""
        return encode_frame(self.type, self.payload, self.version)

    @classmethod
    def from_bytes(cls, data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Frame:
        """Decode exactly one frame; raise a :class:`DecodeError` subclass on any fault."""
        version, message_type, payload = decode_frame(data, limits=limits)
        return cls(type=_TYPES[message_type], payload=payload, version=version)


def encode_frame(message_type: int, payload: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    """Encode a frame without building a :class:`Frame` object (hot path).

    The header is packed with :data:`HEADER_STRUCT`, the same bytes as :data:`FrameHeader`
    builds (a property test checks it) in a fraction of the time.
    """
    body = HEADER_STRUCT.pack(MAGIC, version, message_type, len(payload)) + payload
    return body + zlib.crc32(body).to_bytes(CRC_SIZE, "big")


def decode_frame(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> tuple[int, int, bytes]:
    """Check one frame and return ``(version, type, payload)`` (§2.3 order of checks)."""
    if len(data) < FRAME_OVERHEAD:
        raise TruncatedError(f"a frame is at least {FRAME_OVERHEAD} bytes; got {len(data)}")
    if data[:2] != MAGIC:
        raise BadMagicError(f"frame must start with {MAGIC!r}; got {bytes(data[:2])!r}")
    version, message_type, length = data[2], data[3], int.from_bytes(data[4:8], "big")
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(version, SUPPORTED_VERSIONS)
    _check_length(length, len(data), limits)
    expected = int.from_bytes(data[-CRC_SIZE:], "big")
    actual = zlib.crc32(memoryview(data)[:-CRC_SIZE])
    if expected != actual:
        raise BadChecksumError(expected, actual)
    if message_type not in _KNOWN_TYPES:
        raise UnknownMessageTypeError(message_type)
    return version, message_type, bytes(data[HEADER_SIZE:-CRC_SIZE])


def _check_length(length: int, received: int, limits: Limits) -> None:
    if length > limits.max_frame_payload:
        raise TooLargeError(
            f"frame payload of {length} bytes exceeds the limit of {limits.max_frame_payload}"
        )
    needed = FRAME_OVERHEAD + length
    if received < needed:
        raise BadLengthError(f"length field says {needed} bytes in all; only {received} arrived")
    if received > needed:
        raise TrailingBytesError(received - needed)
