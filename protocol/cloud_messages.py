"""Cloud-signed control messages: TIME_SYNC and KEY_ROTATION (``docs/protocol.md`` §6.6, §6.7).

Theory of operation: a lock's clock moves only by a TIME_SYNC the cloud signed for
that door, with a sequence number above the last one accepted and, when the lock
asked for it, the lock's own fresh challenge; the lock bounds the step (the
controller's policy). The cloud's signing key changes only by a KEY_ROTATION to
epoch ``n + 1``, signed by the key of epoch ``n`` and self-signed by the new key
(proof of possession), accepted strictly in order, as TUF rotates its root.
:class:`CloudKeyState` is that one ordered check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from construct import Bytes, Struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._codec import DOOR_ID_SIZE, KEY_SIZE, SIGNATURE_SIZE, U32, DoorId, Key32
from ._message import SignedMessage, register
from ._validate import check_bytes, check_uint
from .codes import MessageType
from .crypto import SignContext, ed25519_public_from_bytes, public_bytes, sign, verify
from .errors import AuthenticationError, KeyRotationOrderError, UsageError

__all__ = ["NO_CHALLENGE", "CloudKeyState", "KeyRotation", "TimeSync"]

NO_CHALLENGE = bytes(16)
"""The ``challenge`` of a TIME_SYNC not bound to one lock session."""


@register
@dataclass(frozen=True, kw_only=True)
class TimeSync(SignedMessage):
    """Cloud-signed: the time for ``door_id`` is ``cloud_time`` (unix seconds)."""

    TYPE: ClassVar[MessageType] = MessageType.TIME_SYNC
    CONTEXT: ClassVar[SignContext] = SignContext.TIME_SYNC
    _FORMAT: ClassVar[Any] = Struct(
        "door_id" / DoorId,
        "key_epoch" / U32,
        "sequence" / U32,
        "cloud_time" / U32,
        "challenge" / Bytes(16),
    ).compile()

    door_id: bytes
    key_epoch: int
    sequence: int
    cloud_time: int
    challenge: bytes = NO_CHALLENGE
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_bytes("door_id", self.door_id, size=DOOR_ID_SIZE)
        for name in ("key_epoch", "sequence", "cloud_time"):
            check_uint(name, getattr(self, name), 32)
        check_bytes("challenge", self.challenge, size=16)
        if self.signature:
            check_bytes("signature", self.signature, size=SIGNATURE_SIZE)


@register
@dataclass(frozen=True, kw_only=True)
class KeyRotation(SignedMessage):
    """Signed by the epoch ``new_epoch - 1`` key: the cloud key of ``new_epoch``."""

    TYPE: ClassVar[MessageType] = MessageType.KEY_ROTATION
    CONTEXT: ClassVar[SignContext] = SignContext.KEY_ROTATION
    _FORMAT: ClassVar[Any] = Struct(
        "new_epoch" / U32, "new_public_key" / Key32, "possession_signature" / Bytes(SIGNATURE_SIZE)
    ).compile()

    new_epoch: int
    new_public_key: bytes
    possession_signature: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_uint("new_epoch", self.new_epoch, 32)
        if self.new_epoch == 0:
            raise UsageError("epoch 0 is the provisioned key; rotations start at epoch 1")
        check_bytes("new_public_key", self.new_public_key, size=KEY_SIZE)
        check_bytes("possession_signature", self.possession_signature, size=SIGNATURE_SIZE)
        if self.signature:
            check_bytes("signature", self.signature, size=SIGNATURE_SIZE)

    @classmethod
    def create(
        cls, *, current_key: Ed25519PrivateKey, new_key: Ed25519PrivateKey, new_epoch: int
    ) -> KeyRotation:
        """Cloud side: announce ``new_key`` as epoch ``new_epoch``."""
        new_public = public_bytes(new_key)
        proof = sign(new_key, SignContext.KEY_POSSESSION, _possession_body(new_epoch, new_public))
        return cls(
            new_epoch=new_epoch, new_public_key=new_public, possession_signature=proof
        ).signed(current_key)


def _possession_body(epoch: int, public: bytes) -> bytes:
    return epoch.to_bytes(4, "big") + public


@dataclass(frozen=True, kw_only=True)
class CloudKeyState:
    """Lock side: the cloud signing key this lock trusts, and its epoch."""

    epoch: int
    public_key: bytes

    def __post_init__(self) -> None:
        check_uint("epoch", self.epoch, 32)
        check_bytes("public_key", self.public_key, size=KEY_SIZE)

    def key(self) -> Ed25519PublicKey:
        """The trusted key as a ``cryptography`` object."""
        return ed25519_public_from_bytes(self.public_key)

    def apply_rotation(self, payload: bytes) -> CloudKeyState:
        """Accept a KEY_ROTATION payload, in order; return the new state.

        Order of checks: a rotation to the current epoch with the current key is
        the idempotent no-op; any other epoch but ``epoch + 1`` is
        :class:`KeyRotationOrderError`; then the current key's signature over the
        exact bytes and the new key's proof of possession must verify.
        """
        claimed = KeyRotation.from_bytes(payload)
        if claimed.new_epoch == self.epoch and claimed.new_public_key == self.public_key:
            return self
        if claimed.new_epoch != self.epoch + 1:
            raise KeyRotationOrderError(self.epoch, claimed.new_epoch)
        rotation = KeyRotation.verified_from_bytes(payload, self.key())
        try:
            new_key = ed25519_public_from_bytes(rotation.new_public_key)
        except UsageError:
            raise AuthenticationError() from None
        body = _possession_body(rotation.new_epoch, rotation.new_public_key)
        verify(new_key, SignContext.KEY_POSSESSION, body, rotation.possession_signature)
        return CloudKeyState(epoch=rotation.new_epoch, public_key=rotation.new_public_key)
