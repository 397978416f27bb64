"""Typed errors of the protocol package.

Theory of operation: every failure the protocol can report is a subclass of
:class:`ProtocolError`, split by who is at fault (see ``docs/protocol.md`` §9):

* :class:`DecodeError` and its children — the *remote* sent bytes that are not a
  valid frame, message or segment. The receiver's state is unchanged.
* :class:`AuthenticationError` — a signature or AEAD check failed. It is one
  opaque error on purpose: an attacker learns nothing from which check failed.
* :class:`PolicyError` and its children — the bytes are authentic but must not be
  applied here (rollback, wrong door, base version, digest, capacity, gaps).
* :class:`UsageError` — *local* misuse of the API (a caller bug), never raised by
  bytes from the air.

Every error carries a stable :attr:`ProtocolError.code` from
:class:`protocol.codes.ErrorCode` so that it can be sent in an ERROR frame or a
receipt without string matching.
"""

from __future__ import annotations

from .codes import ErrorCode

__all__ = [
    "AuditGapError",
    "AuthenticationError",
    "BadChecksumError",
    "BadLengthError",
    "BadMagicError",
    "BaseVersionError",
    "CapacityError",
    "DecodeError",
    "DigestMismatchError",
    "DuplicateSegmentError",
    "KeyRotationOrderError",
    "MalformedMessageError",
    "MissingSegmentError",
    "OutOfOrderSegmentError",
    "PolicyError",
    "ProtocolError",
    "RollbackError",
    "SegmentError",
    "TooLargeError",
    "TrailingBytesError",
    "TruncatedError",
    "UnknownMessageTypeError",
    "UnsupportedVersionError",
    "UsageError",
    "WrongDoorError",
]


class ProtocolError(Exception):
    """Base of every error the protocol package raises on bad input."""

    code: ErrorCode = ErrorCode.MALFORMED


# --- remote sent undecodable bytes -----------------------------------------------------


class DecodeError(ProtocolError):
    """The bytes do not form a valid frame, message or segment."""


class TruncatedError(DecodeError):
    """The input ended before the structure it announces was complete."""


class BadMagicError(DecodeError):
    """The frame does not start with the protocol magic."""


class UnsupportedVersionError(DecodeError):
    """The frame's protocol version is not one this implementation speaks."""

    code = ErrorCode.UNSUPPORTED_VERSION

    def __init__(self, version: int, supported: tuple[int, ...]) -> None:
        super().__init__(
            f"protocol version {version} is not supported (supported: {list(supported)})"
        )
        self.version = version
        self.supported = supported


class UnknownMessageTypeError(DecodeError):
    """The frame's message type is not in the type registry."""

    def __init__(self, message_type: int) -> None:
        super().__init__(f"unknown message type 0x{message_type:02x}")
        self.message_type = message_type


class BadLengthError(DecodeError):
    """The frame's length field disagrees with the bytes received."""


class TooLargeError(DecodeError):
    """A size or count exceeds the configured bound (``docs/protocol.md`` §8)."""

    code = ErrorCode.TOO_LARGE


class BadChecksumError(DecodeError):
    """The frame's CRC-32 does not match its contents."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"CRC-32 mismatch: frame says 0x{expected:08x}, computed 0x{actual:08x}")
        self.expected = expected
        self.actual = actual


class TrailingBytesError(DecodeError):
    """Bytes follow the end of a complete structure."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} unexpected trailing byte(s)")
        self.count = count


class MalformedMessageError(DecodeError):
    """A message body violates its declared layout or field constraints."""


class SegmentError(DecodeError):
    """Base of BLE segmentation errors (``docs/protocol.md`` §7)."""

    code = ErrorCode.SEGMENTATION


class DuplicateSegmentError(SegmentError):
    """A segment already received arrived again; it is ignored."""


class OutOfOrderSegmentError(SegmentError):
    """A segment arrived before one or more segments that precede it."""


class MissingSegmentError(SegmentError):
    """The transfer was finished or abandoned with segments still missing."""


# --- authenticity ----------------------------------------------------------------------


class AuthenticationError(ProtocolError):
    """A signature or sealed box failed to verify. Deliberately opaque."""

    code = ErrorCode.AUTH_FAILED

    def __init__(self, message: str = "authentication failed") -> None:
        super().__init__(message)


# --- authentic but not applicable --------------------------------------------------------


class PolicyError(ProtocolError):
    """Authentic data that must not be applied in the receiver's current state."""


class WrongDoorError(PolicyError):
    """The data is bound to a different door."""

    code = ErrorCode.WRONG_DOOR


class RollbackError(PolicyError):
    """The data would move a version backwards."""

    code = ErrorCode.ROLLBACK

    def __init__(self, current: int, offered: int) -> None:
        super().__init__(f"version {offered} is older than the current version {current}")
        self.current = current
        self.offered = offered


class BaseVersionError(PolicyError):
    """A delta bundle does not apply to the receiver's list version."""

    code = ErrorCode.BASE_VERSION

    def __init__(self, current: int, base: int, target: int) -> None:
        super().__init__(
            f"bundle applies to versions [{base}, {target}) but the list is at version {current}"
        )
        self.current = current
        self.base = base
        self.target = target


class DigestMismatchError(PolicyError):
    """The list resulting from an apply does not match the signed target digest."""

    code = ErrorCode.DIGEST_MISMATCH


class CapacityError(PolicyError):
    """Applying would exceed the credential store's capacity; nothing was applied."""

    code = ErrorCode.CAPACITY_EXCEEDED

    def __init__(self, needed: int, capacity: int) -> None:
        super().__init__(f"the list would hold {needed} credentials; capacity is {capacity}")
        self.needed = needed
        self.capacity = capacity


class AuditGapError(PolicyError):
    """Audit sequence numbers are not gapless."""

    code = ErrorCode.AUDIT_GAP

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"audit sequence gap: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class KeyRotationOrderError(PolicyError):
    """A key rotation does not follow the current signing key epoch."""

    code = ErrorCode.KEY_ROTATION_ORDER

    def __init__(self, current_epoch: int, offered_epoch: int) -> None:
        super().__init__(
            f"key rotation to epoch {offered_epoch} does not follow current epoch {current_epoch}"
        )
        self.current_epoch = current_epoch
        self.offered_epoch = offered_epoch


# --- local misuse ------------------------------------------------------------------------


class UsageError(ProtocolError, ValueError):
    """The caller passed invalid arguments (a local bug, not remote bad data)."""

    code = ErrorCode.INTERNAL
