"""Routes for a manager's doors: sync status and health, and registering a lock.

Theory of operation: a door's status is derived, never stored: it is pending while
its list version is ahead of the version its last verified receipt proved. A
registered lock's keys are checked by the service, and everyone already granted
its property is resynced so that the door's first bundle carries them.
"""

from __future__ import annotations

from fastapi import APIRouter

from ..auth import CurrentService
from ._schemas import DoorId, DoorIn, DoorOut, DoorsOut, ManagerCaller, RegisteredOut
from ._views import changes_out, door_out

__all__ = ["router"]

router = APIRouter(prefix="/v1")


@router.get("/doors", tags=["doors"], summary="Your portfolios' doors, sync status and health")
def list_doors(service: CurrentService, caller: ManagerCaller) -> DoorsOut:
    doors = service.doors_in_portfolios(caller.subject_id)
    return DoorsOut(doors=[door_out(service, d) for d in doors])


@router.get("/doors/{door_id}", tags=["doors"], summary="One door, its sync status and health")
def get_door(door_id: DoorId, service: CurrentService, caller: ManagerCaller) -> DoorOut:
    return door_out(service, service.managed_door(caller.subject_id, door_id))


@router.post("/doors", tags=["doors"], status_code=201, summary="Register a provisioned lock")
def register_door(body: DoorIn, service: CurrentService, caller: ManagerCaller) -> RegisteredOut:
    changes = service.register_door(
        caller.subject_id,
        door_id=body.id,
        property_id=body.property_id,
        name=body.name,
        online=body.online,
        identity_public=bytes.fromhex(body.identity_public),
        sealing_public=bytes.fromhex(body.sealing_public),
        doorcode_secret=bytes.fromhex(body.doorcode_secret),
    )
    return RegisteredOut(
        door=door_out(service, service.door(body.id)), changes=changes_out(changes)
    )
