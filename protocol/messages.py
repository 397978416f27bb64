"""The session messages: HELLO, AUTH, UNLOCK_RESULT, ERROR (``docs/protocol.md`` §4).

Theory of operation: these are the messages of one BLE (or MQTT) session between a
lock and a phone. HELLO and UNLOCK_RESULT are not signed: the phone trusts nothing
the lock says except what the lock signs (receipts, audit batches). AUTH proves
possession of the phone key named in a cloud-signed :class:`MobileCredential` by
signing this session's fresh challenge together with the door id and the intent.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from construct import Bytes, PrefixedArray, Struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._codec import (
    DOOR_ID_SIZE,
    SIGNATURE_SIZE,
    U8,
    U16,
    U32,
    Bytes16,
    DoorId,
    Utf8Short,
    check_extent,
)
from ._message import Message, register
from ._validate import check_bytes, check_uint, to_enum
from .codes import ErrorCode, Intent, MessageType, Reason
from .crypto import SignContext, sign, verify
from .errors import (
    AuthenticationError,
    MalformedMessageError,
    TooLargeError,
    UsageError,
)
from .limits import DEFAULT_LIMITS, Limits
from .mobile_credential import MobileCredential

__all__ = ["CHALLENGE_SIZE", "Auth", "ErrorMessage", "Hello", "UnlockResult"]

CHALLENGE_SIZE = 16
_AUTH_HEAD = struct.Struct(">BH")  # §4.2 AUTH offsets 0-2: intent, credential length
_INTENTS: dict[int, Intent] = {intent.value: intent for intent in Intent}
_HELLO_HEAD = struct.Struct(">16sIIBIII16sB")  # §4.1 up to the versions, and their count
_UNLOCK_RESULT = struct.Struct(">16sBBI")  # §4.3: door_id, reason, open_seconds, audit_seq


@register
@dataclass(frozen=True, kw_only=True)
class Hello(Message):
    """Lock → phone, first message of a session (§4.1)."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    _FORMAT: ClassVar[Any] = Struct(
        "door_id" / DoorId,
        "list_version" / U32,
        "list_age_s" / U32,
        "battery_pct" / U8,
        "audit_head_seq" / U32,
        "key_epoch" / U32,
        "lock_time" / U32,
        "challenge" / Bytes(CHALLENGE_SIZE),
        "supported_versions" / PrefixedArray(U8, U8),
    ).compile()

    door_id: bytes
    list_version: int
    list_age_s: int
    battery_pct: int
    audit_head_seq: int
    key_epoch: int
    lock_time: int
    challenge: bytes
    supported_versions: tuple[int, ...]

    def __post_init__(self) -> None:
        check_bytes("door_id", self.door_id, size=DOOR_ID_SIZE)
        for name in ("list_version", "list_age_s", "audit_head_seq", "key_epoch", "lock_time"):
            check_uint(name, getattr(self, name), 32)
        if not 0 <= self.battery_pct <= 100:
            raise UsageError(f"battery_pct must be 0..100; got {self.battery_pct}")
        check_bytes("challenge", self.challenge, size=CHALLENGE_SIZE)
        object.__setattr__(self, "supported_versions", tuple(self.supported_versions))
        if not 1 <= len(self.supported_versions) <= 8:
            raise UsageError("supported_versions must list 1 to 8 versions")
        for version in self.supported_versions:
            check_uint("supported version", version, 8)

    def to_bytes(self) -> bytes:
        """The §4.1 payload, packed with ``struct`` (one per session); the fields are in
        range by ``__post_init__``, and ``tests/test_unlock_speed.py`` checks the bytes
        equal ``_FORMAT.build``'s."""
        versions = self.supported_versions
        head = _HELLO_HEAD.pack(
            self.door_id,
            self.list_version,
            self.list_age_s,
            self.battery_pct,
            self.audit_head_seq,
            self.key_epoch,
            self.lock_time,
            self.challenge,
            len(versions),
        )
        return head + bytes(versions)

    @classmethod
    def from_bytes(cls, payload: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Self:
        """:meth:`Message.from_bytes` without construct (a phone reads one per session):
        same result, same errors (truncation or trailing bytes, then the constructor's
        checks), as ``tests/test_unlock_speed.py`` checks."""
        size = _HELLO_HEAD.size
        end = size + payload[size - 1] if len(payload) >= size else 0
        check_extent(payload, size, end, cls.TYPE.name)
        door_id, version, age, battery, head, epoch, time, challenge, _ = _HELLO_HEAD.unpack_from(
            payload
        )
        return cls._from_fields(
            limits,
            door_id=door_id,
            list_version=version,
            list_age_s=age,
            battery_pct=battery,
            audit_head_seq=head,
            key_epoch=epoch,
            lock_time=time,
            challenge=challenge,
            supported_versions=tuple(payload[size:end]),
        )


@register
@dataclass(frozen=True, kw_only=True)
class Auth(Message):
    """Phone → lock: a mobile credential and the phone's signature (§4.2).

    The phone signs ``door_id || challenge || intent || credential`` with the key
    the credential names, so the proof is bound to this door and this session.
    """

    TYPE: ClassVar[MessageType] = MessageType.AUTH
    _FORMAT: ClassVar[Any] = Struct(
        "intent" / U8, "credential" / Bytes16, "signature" / Bytes(SIGNATURE_SIZE)
    ).compile()

    intent: Intent
    credential: MobileCredential
    signature: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "intent", to_enum(Intent, "intent", self.intent))
        if not isinstance(self.credential, MobileCredential):
            raise UsageError("credential must be a MobileCredential")
        check_bytes("signature", self.signature, size=SIGNATURE_SIZE)

    @classmethod
    def create(
        cls,
        *,
        credential: MobileCredential,
        phone_key: Ed25519PrivateKey,
        door_id: bytes,
        challenge: bytes,
        intent: Intent = Intent.UNLOCK,
    ) -> Auth:
        """Sign this session's challenge with the phone key."""
        signed = _auth_signed_bytes(door_id, challenge, intent, credential.to_bytes())
        return cls(
            intent=intent,
            credential=credential,
            signature=sign(phone_key, SignContext.AUTH, signed),
        )

    def check_limits(self, limits: Limits) -> None:
        self.credential.check_limits(limits)

    @classmethod
    def from_bytes_known(
        cls,
        payload: bytes,
        known: Callable[[bytes], MobileCredential | None],
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Self:
        """:meth:`from_bytes`, taking the credential from ``known`` instead of parsing it.

        ``known(credential_bytes)`` returns a credential parsed earlier from exactly
        those bytes, or None. The fast path is taken only for a payload of exactly
        AUTH's layout with a valid intent, where a full parse would yield an equal
        message: the credential is the known one, or else parsed from its bytes as
        :meth:`from_bytes` parses it (without the envelope's construct parse); any other
        payload goes to :meth:`from_bytes`, so the result and every error are those of
        :meth:`from_bytes`.
        """
        head = _AUTH_HEAD.size
        if len(payload) >= head + SIGNATURE_SIZE:
            intent, size = _AUTH_HEAD.unpack_from(payload)
            end = head + size
            member = _INTENTS.get(intent)
            if member is not None and len(payload) == end + SIGNATURE_SIZE:
                data = bytes(payload[head:end])
                credential = known(data) or MobileCredential.from_bytes(data)
                auth = cls(intent=member, credential=credential, signature=bytes(payload[end:]))
                auth.check_limits(limits)
                return auth
        return cls.from_bytes(payload, limits=limits)

    def verify(
        self, *, door_id: bytes, challenge: bytes, phone_key: Ed25519PublicKey | None = None
    ) -> Ed25519PublicKey:
        """Check the phone's signature for this door and challenge; return the phone key.

        The caller must separately verify ``credential`` against the cloud key and
        check its validity window and scope. ``phone_key`` is the key returned by an
        earlier call for this same credential (a lock's cache), saving its decoding.
        """
        key = phone_key
        if key is None:
            try:
                key = self.credential.phone_key()
            except MalformedMessageError:
                raise AuthenticationError() from None
        signed = _auth_signed_bytes(door_id, challenge, self.intent, self.credential.to_bytes())
        verify(key, SignContext.AUTH, signed, self.signature)
        return key

    def _to_container(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "credential": self.credential.to_bytes(),
            "signature": self.signature,
        }

    @classmethod
    def _from_container(cls, c: Any) -> Self:
        credential = MobileCredential.from_bytes(c["credential"])
        return cls(intent=c["intent"], credential=credential, signature=c["signature"])


def _auth_signed_bytes(door_id: bytes, challenge: bytes, intent: int, credential: bytes) -> bytes:
    check_bytes("door_id", door_id, size=DOOR_ID_SIZE)
    check_bytes("challenge", challenge, size=CHALLENGE_SIZE)
    return door_id + challenge + bytes([intent]) + credential


@register
@dataclass(frozen=True, kw_only=True)
class UnlockResult(Message):
    """Lock → phone: the access decision for this session's AUTH (§4.3)."""

    TYPE: ClassVar[MessageType] = MessageType.UNLOCK_RESULT
    _FORMAT: ClassVar[Any] = Struct(
        "door_id" / DoorId, "reason" / U8, "open_seconds" / U8, "audit_seq" / U32
    ).compile()

    door_id: bytes
    reason: Reason
    open_seconds: int
    audit_seq: int

    def __post_init__(self) -> None:
        check_bytes("door_id", self.door_id, size=DOOR_ID_SIZE)
        object.__setattr__(self, "reason", to_enum(Reason, "reason", self.reason))
        check_uint("open_seconds", self.open_seconds, 8)
        check_uint("audit_seq", self.audit_seq, 32)
        if self.open_seconds and self.reason is not Reason.GRANTED:
            raise UsageError("open_seconds must be 0 when access is refused")

    def to_bytes(self) -> bytes:
        """The §4.3 payload, packed with ``struct`` (one per phone unlock); the fields are
        in range by ``__post_init__``, and ``tests/test_unlock_speed.py`` checks the bytes
        equal ``_FORMAT.build``'s."""
        return _UNLOCK_RESULT.pack(self.door_id, self.reason, self.open_seconds, self.audit_seq)

    @property
    def granted(self) -> bool:
        """True when the phone was authenticated and authorised (SYNC_ONLY: not opened)."""
        return self.reason is Reason.GRANTED

    @property
    def opened(self) -> bool:
        """True when the lock released the door."""
        return self.open_seconds > 0


@register
@dataclass(frozen=True, kw_only=True)
class ErrorMessage(Message):
    """Either side: a request was refused, with a code and a short text (§4.4)."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR
    _FORMAT: ClassVar[Any] = Struct("code" / U16, "about_type" / U8, "detail" / Utf8Short).compile()

    code: ErrorCode
    about_type: int = 0
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", to_enum(ErrorCode, "code", self.code))
        check_uint("about_type", self.about_type, 8)
        if not isinstance(self.detail, str) or len(self.detail.encode()) > 255:
            raise UsageError("detail must be text of at most 255 UTF-8 bytes")

    def check_limits(self, limits: Limits) -> None:
        if len(self.detail.encode()) > limits.max_error_detail:
            raise TooLargeError(f"ERROR detail exceeds {limits.max_error_detail} bytes")
