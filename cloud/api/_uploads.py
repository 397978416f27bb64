"""Routes for what phones carry back from locks: receipts and audit batches.

Theory of operation: a lock signs its receipts and audit batches; a phone (or a
manager's tool) uploads them as the whole frame or only its payload, as hex. The
service verifies the signature with the door's key before anything is recorded;
bytes that do not verify or do not parse are a 422 that says which it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter

from protocol import AuthenticationError, DecodeError, MessageType, ProtocolError
from protocol.frame import decode_frame

from ..auth import Caller, CurrentService
from ..errors import InvalidInputError
from ..models import Door
from ..service import CloudService
from ._schemas import AuditOut, DoorId, ManagerOrPhone, ReceiptOut, UploadIn

__all__ = ["router"]

router = APIRouter(prefix="/v1")


def _upload_door(service: CloudService, caller: Caller, door_id: str) -> Door:
    """A manager's door, or a door the phone's person can open."""
    if caller.role == "manager":
        return service.managed_door(caller.subject_id, door_id)
    return service.openable_door(caller.person, door_id)[0]


@contextmanager
def _lock_signed(what: str) -> Iterator[None]:
    """Turn a refusal of lock-signed bytes into a 422 that says what was wrong."""
    try:
        yield
    except AuthenticationError:
        raise InvalidInputError(
            f"the {what}'s signature does not verify with this door's key: the lock did not "
            "make it or it was changed on the way; discard it and sync the door again"
        ) from None
    except DecodeError as exc:
        raise InvalidInputError(
            f"the {what} is damaged or incomplete ({exc}); upload it again as the lock sent it"
        ) from None
    except ProtocolError as exc:
        raise InvalidInputError(f"the {what} was refused: {exc}") from None


def _payload(body: UploadIn, expected: MessageType) -> bytes:
    if body.payload is not None:
        return bytes.fromhex(body.payload)
    assert body.frame is not None
    _, kind, payload = decode_frame(bytes.fromhex(body.frame))
    if kind != expected:
        raise InvalidInputError(f"the frame is a {MessageType(kind).name}, not a {expected.name}")
    return payload


@router.post("/doors/{door_id}/receipts", tags=["sync"], summary="Upload a lock's receipt")
def upload_receipt(
    door_id: DoorId, body: UploadIn, service: CurrentService, caller: ManagerOrPhone
) -> ReceiptOut:
    door = _upload_door(service, caller, door_id)
    with _lock_signed("receipt"):
        service.receipt(door.id, _payload(body, MessageType.RECEIPT))
    return ReceiptOut(
        door_id=door.id,
        list_version=door.list_version,
        synced_version=door.synced_version,
        pending=door.list_version > door.synced_version,
        capacity_error=door.capacity_error,
    )


@router.post("/doors/{door_id}/audit", tags=["sync"], summary="Upload a lock's audit batch")
def upload_audit(
    door_id: DoorId, body: UploadIn, service: CurrentService, caller: ManagerOrPhone
) -> AuditOut:
    door = _upload_door(service, caller, door_id)
    with _lock_signed("audit batch"):
        ack = service.upload_audit(door.id, _payload(body, MessageType.AUDIT_BATCH))
    return AuditOut(door_id=door.id, up_to_seq=ack.up_to_seq, ack=ack.to_frame().hex())
