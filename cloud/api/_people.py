"""Routes for people and their keycards: a manager's console, and a resident's own.

Theory of operation: a manager sees and acts on the people of their portfolios
(activate or deactivate on behalf, report a card lost); a resident acts on
themself under ``/me`` (self-activate with the code printed on the card,
self-deactivate, report lost with an optional replacement and its code). The
rules — the portfolio rule, the self-activation rate limit — are the service's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..auth import CurrentService
from ..errors import NotFoundError
from ..sync import doors_of_person
from ._schemas import (
    CardUid,
    CodeIn,
    KeycardOut,
    LostIn,
    LostOut,
    ManagerCaller,
    ManagerLostIn,
    ManagerOrResident,
    MeOut,
    PeopleOut,
    PersonId,
    PersonOut,
    ResidentCaller,
)
from ._views import Names, keycard_out, lost_out, person_out

__all__ = ["router"]

router = APIRouter(prefix="/v1")


@router.get("/people", tags=["people"], summary="People of your portfolios and their keycards")
def list_people(
    service: CurrentService,
    caller: ManagerCaller,
    q: Annotated[str, Query(max_length=100, description="part of a name or email")] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> PeopleOut:
    people = service.people_in_portfolios(caller.subject_id, q, limit=limit, offset=offset)
    return PeopleOut(people=[person_out(service, p) for p in people], limit=limit, offset=offset)


@router.get("/people/{person_id}", tags=["people"], summary="One person and their keycards")
def get_person(
    person_id: PersonId, service: CurrentService, caller: ManagerOrResident
) -> PersonOut:
    if caller.role == "manager":
        return person_out(service, service.visible_person(caller.subject_id, person_id))
    if person_id != caller.person:
        raise NotFoundError(f"no person {person_id!r}; as a resident you see yourself at /v1/me")
    return person_out(service, service.person(person_id))


@router.post(
    "/people/{person_id}/keycards/{uid}/activate", tags=["keycards"], summary="Activate on behalf"
)
def activate(
    person_id: PersonId, uid: CardUid, service: CurrentService, caller: ManagerCaller
) -> KeycardOut:
    changes = service.activate_on_behalf(caller.subject_id, person_id, uid)
    return keycard_out(service, person_id, changes)


@router.post(
    "/people/{person_id}/keycards/{uid}/deactivate",
    tags=["keycards"],
    summary="Deactivate on behalf",
)
def deactivate(
    person_id: PersonId, uid: CardUid, service: CurrentService, caller: ManagerCaller
) -> KeycardOut:
    changes = service.deactivate_on_behalf(caller.subject_id, person_id, uid)
    return keycard_out(service, person_id, changes)


@router.post(
    "/people/{person_id}/keycards/{uid}/lost", tags=["keycards"], summary="Report a card lost"
)
def report_lost(
    person_id: PersonId,
    uid: CardUid,
    service: CurrentService,
    caller: ManagerCaller,
    body: ManagerLostIn | None = None,
) -> LostOut:
    replacement = body.replacement if body else None
    changes, accepting = service.report_lost(
        person_id, uid, replacement=replacement, manager_id=caller.subject_id
    )
    return lost_out(service, person_id, uid, replacement, changes, accepting)


@router.get("/me", tags=["me"], summary="Yourself, your keycards and your doors")
def me(service: CurrentService, caller: ResidentCaller) -> MeOut:
    person = person_out(service, service.person(caller.person))
    doors = Names(service).refs(sorted(doors_of_person(service.session, caller.person)))
    return MeOut(**person.model_dump(), doors=doors)


@router.post("/me/keycards/{uid}/activate", tags=["me"], summary="Self-activate with the code")
def self_activate(
    uid: CardUid, body: CodeIn, service: CurrentService, caller: ResidentCaller
) -> KeycardOut:
    changes = service.self_activate(caller.person, uid, body.code)
    return keycard_out(service, caller.person, changes)


@router.post("/me/keycards/{uid}/deactivate", tags=["me"], summary="Self-deactivate")
def self_deactivate(uid: CardUid, service: CurrentService, caller: ResidentCaller) -> KeycardOut:
    changes = service.self_deactivate(caller.person, uid)
    return keycard_out(service, caller.person, changes)


@router.post("/me/keycards/{uid}/lost", tags=["me"], summary="Report your card lost")
def self_report_lost(
    uid: CardUid,
    service: CurrentService,
    caller: ResidentCaller,
    body: LostIn | None = None,
) -> LostOut:
    replacement, code = (body.replacement, body.replacement_code) if body else (None, None)
    changes, accepting = service.report_lost(
        caller.person, uid, replacement=replacement, replacement_code=code
    )
    return lost_out(service, caller.person, uid, replacement, changes, accepting)
