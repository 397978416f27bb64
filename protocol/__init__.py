"""The shared binary protocol of the door-controller simulator.

Pure and sans-IO: bytes in, typed messages out. No asyncio, sockets, files or
clocks here; time and randomness are arguments. ``docs/protocol.md`` is the
normative specification; ``tests/vectors/`` holds golden vectors for it.

Layers, bottom up: :mod:`~protocol.frame` (the envelope), the messages
(:mod:`~protocol.messages`, :mod:`~protocol.receipt`, :mod:`~protocol.audit`,
:mod:`~protocol.cloud_messages`, :mod:`~protocol.bundle`), the credential list
and deltas (:mod:`~protocol.credential_list`, :mod:`~protocol.delta`), the
crypto (:mod:`~protocol.crypto`, :mod:`~protocol.keycard`,
:mod:`~protocol.doorcode`, :mod:`~protocol.mobile_credential`) and BLE
segmentation (:mod:`~protocol.segmentation`). Every error is a
:class:`ProtocolError`.
"""

from ._message import REGISTRY, Message, SignedMessage, decode_message
from .audit import AuditAck, AuditBatch, AuditEvent, AuditLedger
from .bundle import Remove, SealedBundle, Upsert, decrypt_changes, seal_bundle, verify_bundle
from .cloud_messages import NO_CHALLENGE, CloudKeyState, KeyRotation, TimeSync
from .codes import (
    AuditEventKind,
    CredentialKind,
    CredentialStatus,
    ErrorCode,
    Intent,
    MessageType,
    Reason,
    ReceiptStatus,
    ScopeKind,
)
from .credential_list import FOREVER, Credential, CredentialList, Window
from .delta import ApplyOutcome, CredentialHistory, apply_bundle, compute_delta
from .errors import (
    AuditGapError,
    AuthenticationError,
    BaseVersionError,
    CapacityError,
    DecodeError,
    DigestMismatchError,
    KeyRotationOrderError,
    PolicyError,
    ProtocolError,
    RollbackError,
    TooLargeError,
    UsageError,
    WrongDoorError,
)
from .frame import MAGIC, PROTOCOL_VERSION, SUPPORTED_VERSIONS, Frame
from .limits import DEFAULT_LIMITS, Limits
from .messages import CHALLENGE_SIZE, Auth, ErrorMessage, Hello, UnlockResult
from .mobile_credential import DEFAULT_MOBILE_CREDENTIAL_LIFETIME_S, MobileCredential
from .receipt import Receipt, make_receipt

__all__ = [
    "CHALLENGE_SIZE",
    "DEFAULT_LIMITS",
    "DEFAULT_MOBILE_CREDENTIAL_LIFETIME_S",
    "FOREVER",
    "MAGIC",
    "NO_CHALLENGE",
    "PROTOCOL_VERSION",
    "REGISTRY",
    "SUPPORTED_VERSIONS",
    "ApplyOutcome",
    "AuditAck",
    "AuditBatch",
    "AuditEvent",
    "AuditEventKind",
    "AuditGapError",
    "AuditLedger",
    "Auth",
    "AuthenticationError",
    "BaseVersionError",
    "CapacityError",
    "CloudKeyState",
    "Credential",
    "CredentialHistory",
    "CredentialKind",
    "CredentialList",
    "CredentialStatus",
    "DecodeError",
    "DigestMismatchError",
    "ErrorCode",
    "ErrorMessage",
    "Frame",
    "Hello",
    "Intent",
    "KeyRotation",
    "KeyRotationOrderError",
    "Limits",
    "Message",
    "MessageType",
    "MobileCredential",
    "PolicyError",
    "ProtocolError",
    "Reason",
    "Receipt",
    "ReceiptStatus",
    "Remove",
    "RollbackError",
    "ScopeKind",
    "SealedBundle",
    "SignedMessage",
    "TimeSync",
    "TooLargeError",
    "UnlockResult",
    "Upsert",
    "UsageError",
    "Window",
    "WrongDoorError",
    "apply_bundle",
    "compute_delta",
    "decode_message",
    "decrypt_changes",
    "make_receipt",
    "seal_bundle",
    "verify_bundle",
]
