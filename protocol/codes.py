"""Numeric code points of the protocol (``docs/protocol.md`` §2 and §9).

Theory of operation: every number that travels on the wire and means something
(message types, error codes, access-decision reasons, audit event kinds) is an
``IntEnum`` here, so that the codec, the lock, the cloud and the docs share one table.
Values are frozen once released: add new members, never renumber.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AuditEventKind",
    "CredentialKind",
    "CredentialStatus",
    "ErrorCode",
    "Intent",
    "MessageType",
    "Reason",
    "ReceiptStatus",
    "ScopeKind",
]


class MessageType(IntEnum):
    """The ``type`` byte of a frame (§2.2)."""

    HELLO = 0x01
    AUTH = 0x02
    UNLOCK_RESULT = 0x03
    BUNDLE = 0x04
    RECEIPT = 0x05
    AUDIT_BATCH = 0x06
    AUDIT_ACK = 0x07
    TIME_SYNC = 0x08
    KEY_ROTATION = 0x09
    ERROR = 0x0A


class ErrorCode(IntEnum):
    """Codes carried by ERROR frames and receipts (§9)."""

    NONE = 0
    MALFORMED = 1
    UNSUPPORTED_VERSION = 2
    AUTH_FAILED = 3
    ROLLBACK = 4
    WRONG_DOOR = 5
    BASE_VERSION = 6
    DIGEST_MISMATCH = 7
    CAPACITY_EXCEEDED = 8
    LOCKED_OUT = 9
    TOO_LARGE = 10
    SEGMENTATION = 11
    AUDIT_GAP = 12
    KEY_ROTATION_ORDER = 13
    STALE = 14
    BUSY = 15
    INTERNAL = 16


class Reason(IntEnum):
    """Why a lock granted or refused access (§4.3)."""

    GRANTED = 0
    UNKNOWN_CREDENTIAL = 1
    REVOKED = 2
    NOT_YET_VALID = 3
    EXPIRED = 4
    OUTSIDE_SCHEDULE = 5
    BAD_SIGNATURE = 6
    LOCKED_OUT = 7
    WRONG_DOOR = 8
    BAD_CHALLENGE = 9
    CREDENTIAL_EXPIRED = 10
    BAD_CODE = 11


class CredentialKind(IntEnum):
    """Kinds of credential-list entries (§5.1)."""

    KEYCARD = 1
    PERSON = 2


class CredentialStatus(IntEnum):
    """State of a credential-list entry (§5.1)."""

    ACTIVE = 1
    REVOKED = 2


class ScopeKind(IntEnum):
    """What a mobile credential opens (§4.2)."""

    DOORS = 1
    PROPERTY = 2


class Intent(IntEnum):
    """What a phone asks for in AUTH (§4.2)."""

    UNLOCK = 1
    SYNC_ONLY = 2


class ReceiptStatus(IntEnum):
    """Outcome a lock reports in a RECEIPT (§6.3)."""

    OK = 0
    """The list is at ``list_version``; a duplicate bundle yields the same receipt."""
    CAPACITY_EXCEEDED = 1
    """The bundle was refused whole: the store would overflow."""
    BASE_VERSION = 2
    """The bundle's base is above the lock's version; the cloud must send an older base."""


class AuditEventKind(IntEnum):
    """Kinds of audit events (§6.4)."""

    BOOT = 1
    CARD_DECISION = 2
    PHONE_DECISION = 3
    DOORCODE_DECISION = 4
    BUNDLE_APPLIED = 5
    BUNDLE_REFUSED = 6
    TIME_CORRECTED = 7
    KEY_ROTATED = 8
    EVENTS_LOST = 9
    POWER_LOSS = 10
