"""RECEIPT: the lock's signed statement of its list state (``docs/protocol.md`` §6.3).

Theory of operation: after a bundle, the lock signs ``door_id``, the version the
bundle asked for, the version and digest it now holds, and a status. Only the
lock's identity key can make one, so a relay cannot forge a receipt to clear a
*pending* state in the cloud. Ed25519 is deterministic and the receipt holds no
time, so a duplicate bundle yields a byte-identical receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from construct import Struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._codec import DIGEST_SIZE, DOOR_ID_SIZE, SIGNATURE_SIZE, U8, U32, Digest, DoorId
from ._message import SignedMessage, register
from ._validate import check_bytes, check_uint, to_enum
from .codes import MessageType, ReceiptStatus
from .credential_list import CredentialList
from .crypto import SignContext

__all__ = ["Receipt", "make_receipt"]


@register
@dataclass(frozen=True, kw_only=True)
class Receipt(SignedMessage):
    """Lock-signed: "door ``door_id`` now holds ``list_version`` with ``list_digest``"."""

    TYPE: ClassVar[MessageType] = MessageType.RECEIPT
    CONTEXT: ClassVar[SignContext] = SignContext.RECEIPT
    _FORMAT: ClassVar[Any] = Struct(
        "door_id" / DoorId,
        "requested_version" / U32,
        "list_version" / U32,
        "list_digest" / Digest,
        "status" / U8,
    ).compile()

    door_id: bytes
    requested_version: int
    list_version: int
    list_digest: bytes
    status: ReceiptStatus = ReceiptStatus.OK
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_bytes("door_id", self.door_id, size=DOOR_ID_SIZE)
        check_uint("requested_version", self.requested_version, 32)
        check_uint("list_version", self.list_version, 32)
        check_bytes("list_digest", self.list_digest, size=DIGEST_SIZE)
        object.__setattr__(self, "status", to_enum(ReceiptStatus, "status", self.status))
        if self.signature:
            check_bytes("signature", self.signature, size=SIGNATURE_SIZE)


def make_receipt(
    lock_key: Ed25519PrivateKey,
    held: CredentialList,
    *,
    requested_version: int,
    status: ReceiptStatus = ReceiptStatus.OK,
) -> Receipt:
    """Sign a receipt for the list the lock holds now."""
    return Receipt(
        door_id=held.door_id,
        requested_version=requested_version,
        list_version=held.version,
        list_digest=held.digest,
        status=status,
    ).signed(lock_key)
