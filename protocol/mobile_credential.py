"""The mobile credential: the cloud's signed binding of a phone key to a person
(``docs/protocol.md`` §4.2).

Theory of operation: when a resident logs in, the cloud signs a credential naming
the person, the phone's Ed25519 public key, a validity window (7 days by default)
and what it opens — a list of doors or a whole property. The lock checks the cloud
signature, the window against its own clock, the scope against its own door and
property id, and then the phone's signature over the session challenge (AUTH).
The encoding is canonical: every field has a fixed size except the scope, a counted
array of fixed-size ids, so a payload that parses has exactly one byte form, and
"verify the exact bytes" and "verify the re-encoded body" are the same thing. The
encoding is computed once and cached on the (frozen) credential (a parsed one caches
the received bytes): a phone presents the same credential for days, and every AUTH
carries and signs it.

Codec: ``_FORMAT`` (construct) is the normative declaration; a lock parses the
credential of every AUTH whose credential it has not verified before, so the decoder
is hand-written :mod:`struct` code raising the same errors in the same order, and
``tests/test_unlock_speed.py`` proves the two agree (and that the received bytes are
what the declaration builds back).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from construct import Bytes, PrefixedArray, Struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._codec import DOOR_ID_SIZE, KEY_SIZE, SIGNATURE_SIZE, U8, U32, DoorId, Key32, check_extent
from ._message import SignedMessage
from ._validate import check_bytes, check_uint, to_enum
from .codes import MessageType, ScopeKind
from .crypto import SignContext, ed25519_public_from_bytes, verify
from .errors import (
    MalformedMessageError,
    TooLargeError,
    UsageError,
)
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["DEFAULT_MOBILE_CREDENTIAL_LIFETIME_S", "MobileCredential"]

DEFAULT_MOBILE_CREDENTIAL_LIFETIME_S = 7 * 24 * 3600
ID_SIZE = 16
_HEAD = struct.Struct(">I16s16s32sIIBB")
"""§4.2 credential body up to the scope ids: epoch, ids, phone key, window, scope, count."""
_SCOPE_KINDS: dict[int, ScopeKind] = {kind.value: kind for kind in ScopeKind}


@dataclass(frozen=True, kw_only=True)
class MobileCredential(SignedMessage):
    """Cloud-signed: ``phone_public_key`` acts for ``person_id`` within ``scope``."""

    TYPE: ClassVar[MessageType] = MessageType.AUTH  # carried inside AUTH
    CONTEXT: ClassVar[SignContext] = SignContext.MOBILE_CREDENTIAL
    _FORMAT: ClassVar[Any] = Struct(
        "key_epoch" / U32,
        "credential_id" / Bytes(ID_SIZE),
        "person_id" / Bytes(ID_SIZE),
        "phone_public_key" / Key32,
        "valid_from" / U32,
        "valid_until" / U32,
        "scope_kind" / U8,
        "scope_ids" / PrefixedArray(U8, DoorId),
    ).compile()

    key_epoch: int
    credential_id: bytes
    person_id: bytes
    phone_public_key: bytes
    valid_from: int
    valid_until: int
    scope_kind: ScopeKind
    scope_ids: tuple[bytes, ...]
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_uint("key_epoch", self.key_epoch, 32)
        check_bytes("credential_id", self.credential_id, size=ID_SIZE)
        check_bytes("person_id", self.person_id, size=ID_SIZE)
        check_bytes("phone_public_key", self.phone_public_key, size=KEY_SIZE)
        check_uint("valid_from", self.valid_from, 32)
        check_uint("valid_until", self.valid_until, 32)
        if self.valid_until <= self.valid_from:
            raise UsageError("valid_until must be after valid_from")
        object.__setattr__(self, "scope_kind", to_enum(ScopeKind, "scope_kind", self.scope_kind))
        self._check_scope()
        if self.signature:
            check_bytes("signature", self.signature, size=SIGNATURE_SIZE)

    def _check_scope(self) -> None:
        ids = tuple(self.scope_ids)
        object.__setattr__(self, "scope_ids", ids)
        if set(map(type, ids)) != {bytes} or set(map(len, ids)) != {DOOR_ID_SIZE}:
            for scope_id in ids:  # not all exactly 16-byte bytes: name the first culprit
                check_bytes("scope id", scope_id, size=DOOR_ID_SIZE)
        if self.scope_kind is ScopeKind.PROPERTY and len(ids) != 1:
            raise UsageError("a PROPERTY scope names exactly one property id")
        if not ids or len(set(ids)) != len(ids):
            raise UsageError("scope_ids must be a non-empty list without repeats")

    def check_limits(self, limits: Limits) -> None:
        if len(self.scope_ids) > limits.max_scope_doors:
            raise TooLargeError(f"mobile credential names over {limits.max_scope_doors} doors")

    def to_bytes(self) -> bytes:
        """The payload (body and signature), encoded once and cached.

        The cache is an attribute outside the dataclass fields (no part in equality,
        ``repr`` or :func:`dataclasses.replace`); the credential is frozen, so it
        cannot go stale.
        """
        wire: bytes = self.__dict__.get("_wire", b"")
        if not wire:
            wire = super().to_bytes()
            object.__setattr__(self, "_wire", wire)
        return wire

    def verify(self, key: Ed25519PublicKey) -> None:
        """Check the cloud signature over the exact encoding; raise AuthenticationError.

        A parsed credential's encoding is the received bytes (the encoding is canonical),
        so this verifies what was received without building or parsing anything again.
        """
        if not self.signature:  # unsigned: the one opaque AuthenticationError, as the base
            super().verify(key)
        verify(key, self.CONTEXT, self.to_bytes()[:-SIGNATURE_SIZE], self.signature)

    @classmethod
    def from_bytes(cls, payload: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Self:
        """Parse a payload; its bytes are the credential's one encoding (module docstring),
        so they become the encoding cache."""
        message = super().from_bytes(payload, limits=limits)
        object.__setattr__(message, "_wire", bytes(payload))
        return message

    @classmethod
    def _parse_body(cls, body: bytes, signature: bytes, limits: Limits) -> Self:
        """:meth:`SignedMessage._parse_body` without construct: same result, same errors
        (truncation or trailing bytes first, then the constructor's checks, then ``limits``)."""
        end = _HEAD.size + DOOR_ID_SIZE * body[_HEAD.size - 1] if len(body) >= _HEAD.size else 0
        check_extent(body, _HEAD.size, end, cls.TYPE.name)
        epoch, credential_id, person_id, phone_key, valid_from, valid_until, kind, _ = (
            _HEAD.unpack_from(body)
        )
        scope_ids = tuple([body[at : at + DOOR_ID_SIZE] for at in range(_HEAD.size, end, ID_SIZE)])
        return cls._from_fields(
            limits,
            key_epoch=epoch,
            credential_id=credential_id,
            person_id=person_id,
            phone_public_key=phone_key,
            valid_from=valid_from,
            valid_until=valid_until,
            scope_kind=_SCOPE_KINDS.get(kind, kind),
            scope_ids=scope_ids,
            signature=signature,
        )

    def phone_key(self) -> Ed25519PublicKey:
        """The phone's public key; a malformed key is a :class:`MalformedMessageError`."""
        try:
            return ed25519_public_from_bytes(self.phone_public_key)
        except UsageError as exc:
            raise MalformedMessageError(str(exc)) from None

    def is_valid_at(self, now: int) -> bool:
        """True when ``valid_from <= now < valid_until``."""
        return self.valid_from <= now < self.valid_until

    def opens(self, *, door_id: bytes, property_id: bytes) -> bool:
        """True when the scope covers this door (by id, or by its property)."""
        wanted = property_id if self.scope_kind is ScopeKind.PROPERTY else door_id
        return wanted in self.scope_ids
