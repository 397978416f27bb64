"""Routes for app guests and keypad doorcodes.

Theory of operation: a resident invites a guest to doors they can open, for no
longer than their own access; a manager invites one to doors of their portfolios.
The answer carries the guest's resident token, shown once. Doorcodes are issued
for a door a manager manages or a resident may open, valid now for a day or a
quarter of an hour.
"""

from __future__ import annotations

from fastapi import APIRouter

from protocol.doorcode import DoorcodeKind

from ..auth import CurrentService, issue_token
from ..service import CloudService
from ._schemas import (
    DoorcodeIn,
    DoorcodeOut,
    DoorId,
    GuestIn,
    GuestOut,
    ManagerCaller,
    ManagerOrResident,
    ResidentCaller,
)
from ._views import Names, changes_out, person_out

__all__ = ["router"]

router = APIRouter(prefix="/v1")


@router.post("/me/guests", tags=["guests"], status_code=201, summary="Invite an app guest")
def invite_guest(body: GuestIn, service: CurrentService, caller: ResidentCaller) -> GuestOut:
    return _guest(service, body, host_id=caller.person)


@router.post("/guests", tags=["guests"], status_code=201, summary="Invite an app guest")
def manager_invite_guest(body: GuestIn, service: CurrentService, caller: ManagerCaller) -> GuestOut:
    return _guest(service, body, manager_id=caller.subject_id)


def _guest(
    service: CloudService,
    body: GuestIn,
    *,
    host_id: str | None = None,
    manager_id: str | None = None,
) -> GuestOut:
    guest, changes = service.create_guest(
        name=body.name,
        email=body.email,
        door_ids=body.door_ids,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        host_id=host_id,
        manager_id=manager_id,
    )
    return GuestOut(
        person=person_out(service, guest),
        token=issue_token(service, "resident", guest.id, expires_at=body.valid_until),
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        doors=Names(service).refs(sorted(set(body.door_ids))),
        changes=changes_out(changes),
    )


_KINDS = {"daily": DoorcodeKind.DAILY, "quarter_hour": DoorcodeKind.QUARTER_HOUR}


@router.post("/doors/{door_id}/doorcodes", tags=["doors"], summary="Issue a keypad doorcode")
def doorcode(
    door_id: DoorId, body: DoorcodeIn, service: CurrentService, caller: ManagerOrResident
) -> DoorcodeOut:
    who = {"manager_id" if caller.role == "manager" else "person_id": caller.subject_id}
    code, match = service.doorcode(door_id, _KINDS[body.kind], body.slot, **who)
    return DoorcodeOut(
        door_id=door_id,
        code=code,
        kind=body.kind,
        slot=body.slot,
        valid_from=match.window_start,
        valid_until=match.valid_until,
    )
