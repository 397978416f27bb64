"""Routes for phones: logging in, and what phones carry to doors that are not online.

Theory of operation: a resident logs a phone in with its public key and gets a
signed mobile credential and a phone token, both shown once (the first-use rule
applies); with that token the phone fetches the sealed bundle of every door it
can open that is behind, the KEY_ROTATION frames a lock at an older key epoch
needs (``docs/protocol.md`` §6.7; they name no door and hold no secret), and, at
the door, a TIME_SYNC bound to the challenge of the lock's HELLO (§6.6, signed
by :func:`cloud.time_sync.issue_time_sync`) for a door the phone's person can open.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ..auth import CurrentService, issue_token
from ..sync import rotation_frames
from ..time_sync import issue_time_sync
from ._schemas import (
    BundlesOut,
    DoorId,
    Id,
    PhoneCaller,
    PhoneLoginIn,
    PhoneLoginOut,
    ResidentCaller,
    Time,
)

__all__ = ["RotationsOut", "TimeSyncIn", "TimeSyncOut", "router"]

router = APIRouter(prefix="/v1")


class TimeSyncIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    challenge: Id = Field(description="the challenge of the lock's HELLO (16 bytes), hex")
    lock_time: Time = Field(description="the lock's clock as its HELLO reported it")


class TimeSyncOut(BaseModel):
    door_id: str
    needed: bool = Field(description="false: the lock's clock is close enough; no frame")
    cloud_time: int
    lock_time: int
    sequence: int | None = None
    key_epoch: int | None = None
    frame: str | None = Field(None, description="the TIME_SYNC frame for the lock, hex")


class RotationsOut(BaseModel):
    epoch: int = Field(description="the cloud's current key epoch")
    rotations: list[str] = Field(
        description="KEY_ROTATION frames, hex, one per epoch above 'after', oldest first"
    )


@router.post("/phones/login", tags=["phones"], status_code=201, summary="Log a phone in")
def phone_login(
    body: PhoneLoginIn, service: CurrentService, caller: ResidentCaller
) -> PhoneLoginOut:
    credential = service.login_phone(caller.person, bytes.fromhex(body.public_key))
    phone_id = credential.credential_id.hex()
    return PhoneLoginOut(
        phone_id=phone_id,
        token=issue_token(service, "phone", phone_id),
        credential=credential.to_bytes().hex(),
        valid_from=credential.valid_from,
        valid_until=credential.valid_until,
        doors=[d.hex() for d in credential.scope_ids],
    )


@router.get("/phones/bundles", tags=["phones"], summary="Bundles to carry to your doors")
def phone_bundles(service: CurrentService, caller: PhoneCaller) -> BundlesOut:
    frames = service.pending_bundles(caller.person)
    return BundlesOut(bundles={door: frame.hex() for door, frame in sorted(frames.items())})


@router.get("/phones/rotations", tags=["phones"], summary="Key rotations to carry to locks")
def phone_rotations(
    service: CurrentService,
    caller: PhoneCaller,
    after: Annotated[int, Query(ge=0, le=0xFFFF_FFFF, description="the lock's key epoch")] = 0,
) -> RotationsOut:
    frames = rotation_frames(service.session, after=after)
    return RotationsOut(epoch=service.key.epoch, rotations=[frame.hex() for frame in frames])


@router.post("/phones/doors/{door_id}/time-sync", tags=["phones"], summary="A TIME_SYNC for a lock")
def phone_time_sync(
    door_id: DoorId, body: TimeSyncIn, service: CurrentService, caller: PhoneCaller
) -> TimeSyncOut:
    service.openable_door(caller.person, door_id)
    issued = issue_time_sync(
        service.session,
        door_id,
        challenge=bytes.fromhex(body.challenge),
        lock_time=body.lock_time,
        now=service.now,
        key=service.key,
    )
    return TimeSyncOut(
        door_id=issued.door_id,
        needed=issued.needed,
        cloud_time=issued.cloud_time,
        lock_time=issued.lock_time,
        sequence=issued.sequence,
        key_epoch=issued.key_epoch,
        frame=None if issued.frame is None else issued.frame.hex(),
    )
