"""The cloud's HTTP API: an ASGI app (FastAPI) with an OpenAPI spec at ``/openapi.json``.

Theory of operation: each route is a thin adapter. It takes validated JSON
(bounded strings, bounded integers, binary frames as hex), lets :mod:`cloud.auth`
authenticate the bearer token and check the role, calls one or two operations of
:class:`~cloud.service.CloudService` — which check every object against the
caller's portfolios or identity and enforce the rules — and turns the result into
JSON. One request is one transaction (:func:`cloud.auth.open_service`): an
operation is applied whole or not at all. Nothing here reads a clock or a random
source except through :class:`~cloud.settings.CloudSettings`.

Every refusal is ``application/problem+json`` (RFC 9457) ``{type, title, status,
detail}`` with a ``detail`` a person can act on: a :class:`~cloud.errors.CloudError`
keeps its status and reason; bytes a lock did not sign (a forged or damaged
receipt or audit batch) are 422; invalid JSON or fields are 422; unknown routes
404; oversized bodies 413. Nothing a client sends should ever produce a 5xx.

Routes, all under ``/v1`` (M: manager, R: resident, P: phone token):

| method | path | who | what |
|---|---|---|---|
| GET | /people?q= | M | people of my portfolios, keycard status |
| GET | /people/{id} | M, R | one person (a resident: only themself) |
| POST | /people/{id}/keycards/{uid}/activate | M | activate on behalf |
| POST | /people/{id}/keycards/{uid}/deactivate | M | deactivate on behalf |
| POST | /people/{id}/keycards/{uid}/lost | M | report lost, optional replacement |
| POST | /guests | M | invite an app guest |
| GET | /me | R | myself and my doors |
| POST | /me/keycards/{uid}/activate | R | self-activate with the printed code |
| POST | /me/keycards/{uid}/deactivate | R | self-deactivate |
| POST | /me/keycards/{uid}/lost | R | report lost, optional replacement |
| POST | /me/guests | R | invite an app guest |
| GET | /doors | M | doors with sync status and health |
| GET | /doors/{id} | M | one door |
| POST | /doors | M | register a provisioned lock |
| POST | /doors/{id}/doorcodes | M, R | a daily or 15-minute keypad code |
| POST | /doors/{id}/receipts | M, P | upload a lock's receipt |
| POST | /doors/{id}/audit | M, P | upload an audit batch, get the ack |
| POST | /phones/login | R | register a phone key, get its credential |
| GET | /phones/bundles | P | pending bundles of my doors |
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol import AuthenticationError, DecodeError, MessageType, ProtocolError
from protocol.doorcode import DoorcodeKind
from protocol.frame import decode_frame

from .auth import ApiState, Caller, CurrentService, SharedState, issue_token, require
from .db import create_schema, make_engine, session_factory
from .errors import CloudError, InvalidInputError, NotFoundError
from .models import Door, Person
from .service import SELF_ACTIVATION_WINDOW_S, CloudService
from .settings import CloudSettings
from .sync import DoorChange, doors_of_person

__all__ = ["MAX_BODY_BYTES", "PROBLEM_JSON", "app_from_environment", "create_app"]

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 256 * 1024
"""Largest request body accepted (an audit batch of 1,000 events is ~50 KB as hex)."""
MAX_FRAME_BYTES = 96 * 1024
"""Largest receipt or audit frame accepted, in bytes (before hex encoding)."""

# --- request fields: every string and number is bounded ---------------------------------

_PATTERNS = {
    r"^[0-9a-f]{32}$": "32 lowercase hex digits",
    r"^[0-9a-fA-F]{2,20}$": "a card UID of 2 to 20 hex digits",
    r"^[\x20-\x7e]{1,64}$": "1 to 64 printable ASCII characters",
    r"^[^\x00-\x1f\x7f]{1,200}$": "1 to 200 characters, no control characters",
    r"^[^@\s\x00-\x1f\x7f]{1,200}@[^@\s\x00-\x1f\x7f]{1,119}$": "an email address",
    r"^[0-9a-fA-F]{64}$": "64 hex digits (32 bytes)",
    r"^(?:[0-9a-fA-F]{2})+$": "bytes as hex: an even number of hex digits",
}
"""Every pattern a field must match, and how a refusal describes it."""
ID_RE, UID_RE, CODE_RE, NAME_RE, EMAIL_RE, KEY_RE, HEX_RE = _PATTERNS

Id = Annotated[str, StringConstraints(pattern=ID_RE)]
Uid = Annotated[str, StringConstraints(pattern=UID_RE)]
Code = Annotated[str, StringConstraints(pattern=CODE_RE)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, pattern=NAME_RE)]
Email = Annotated[str, StringConstraints(pattern=EMAIL_RE)]
Key32 = Annotated[str, StringConstraints(pattern=KEY_RE)]
FrameHex = Annotated[
    str, StringConstraints(min_length=2, max_length=2 * MAX_FRAME_BYTES, pattern=HEX_RE)
]
Time = Annotated[int, Field(ge=0, le=0xFFFF_FFFF, description="unix seconds")]
PersonId = Annotated[str, Path(pattern=ID_RE, description="32 lowercase hex digits")]
DoorId = Annotated[str, Path(pattern=ID_RE, description="32 lowercase hex digits")]
CardUid = Annotated[str, Path(pattern=UID_RE, description="the card's UID, hex")]

ManagerCaller = Annotated[Caller, Depends(require("manager"))]
ResidentCaller = Annotated[Caller, Depends(require("resident"))]
PhoneCaller = Annotated[Caller, Depends(require("phone"))]
ManagerOrResident = Annotated[Caller, Depends(require("manager", "resident"))]
ManagerOrPhone = Annotated[Caller, Depends(require("phone", "manager"))]


class _Body(BaseModel):
    """Request bodies: strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CodeIn(_Body):
    code: Code = Field(description="the activation code printed on the card")


class ManagerLostIn(_Body):
    replacement: Uid | None = Field(None, description="a new card to activate in its place")


class LostIn(_Body):
    replacement: Uid | None = Field(None, description="a new card to activate in its place")
    replacement_code: Code | None = Field(None, description="the code printed on the new card")


class GuestIn(_Body):
    name: Name
    email: Email
    door_ids: list[Id] = Field(min_length=1, max_length=64)
    valid_from: Time
    valid_until: Time = Field(description="unix seconds, at most one year from now")


class DoorIn(_Body):
    id: Id
    property_id: Id
    name: Name
    online: bool = False
    identity_public: Key32 = Field(description="the lock's Ed25519 identity key, hex")
    sealing_public: Key32 = Field(description="the lock's X25519 sealing key, hex")
    doorcode_secret: Key32 = Field(description="the lock's 32-byte keypad secret, hex")


class DoorcodeIn(_Body):
    kind: Literal["daily", "quarter_hour"]
    slot: int = Field(0, ge=0, le=99, description="different people get different slots")


class PhoneLoginIn(_Body):
    public_key: Key32 = Field(description="the phone's Ed25519 public key, hex")


class UploadIn(_Body):
    frame: FrameHex | None = Field(None, description="the whole frame the lock sent, hex")
    payload: FrameHex | None = Field(None, description="or only its payload, hex")

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.frame is None) == (self.payload is None):
            raise ValueError("send exactly one of 'frame' and 'payload' (hex)")
        return self


# --- responses ---------------------------------------------------------------------------


class Problem(BaseModel):
    """An ``application/problem+json`` body."""

    type: str
    title: str
    status: int
    detail: str


class Ref(BaseModel):
    id: str
    name: str


class ChangeOut(BaseModel):
    door_id: str
    version: int


class CardOut(BaseModel):
    uid: str
    status: str = Field(description="inactive, activation pending, active, deactivation pending")
    label: str = Field(description="as the console shows it, e.g. 'Activation Pending (3 doors)'")
    pending_doors: list[Ref]


class PersonOut(BaseModel):
    id: str
    name: str
    email: str
    guest: bool
    app_logged_in: bool
    keycards: list[CardOut]
    manual_sync_doors: list[Ref] = Field(description="offline doors to sync with the app")


class MeOut(PersonOut):
    doors: list[Ref]


class PeopleOut(BaseModel):
    people: list[PersonOut]
    limit: int
    offset: int


class KeycardOut(BaseModel):
    person: PersonOut
    changes: list[ChangeOut]


class LostOut(KeycardOut):
    lost: str
    replacement: str | None
    doors_still_accepting: list[Ref] = Field(description="until they sync, they accept it")


class DoorOut(BaseModel):
    id: str
    name: str
    property_id: str
    online: bool
    list_version: int
    synced_version: int = Field(description="the version the lock's last verified receipt proved")
    pending: bool
    last_seen: datetime | None
    battery_pct: int | None
    list_age_s: int | None
    capacity_error: str | None
    audit_gaps: int
    pending_people: list[Ref]


class DoorsOut(BaseModel):
    doors: list[DoorOut]


class RegisteredOut(BaseModel):
    door: DoorOut
    changes: list[ChangeOut]


class GuestOut(BaseModel):
    person: PersonOut
    token: str = Field(description="the guest's resident token; shown once")
    valid_from: int
    valid_until: int
    doors: list[Ref]
    changes: list[ChangeOut]


class DoorcodeOut(BaseModel):
    door_id: str
    code: str
    kind: str
    slot: int
    valid_from: int
    valid_until: int = Field(description="the lock accepts the code until then (exclusive)")


class PhoneLoginOut(BaseModel):
    phone_id: str
    token: str = Field(description="the phone's bearer token; shown once")
    credential: str = Field(description="the signed mobile credential, hex")
    valid_from: int
    valid_until: int
    doors: list[str]


class BundlesOut(BaseModel):
    bundles: dict[str, str] = Field(description="door id -> sealed BUNDLE frame, hex")


class ReceiptOut(BaseModel):
    door_id: str
    list_version: int
    synced_version: int
    pending: bool
    capacity_error: str | None


class AuditOut(BaseModel):
    door_id: str
    up_to_seq: int
    ack: str = Field(description="the cloud-signed AUDIT_ACK frame to give the lock, hex")


# --- building responses -------------------------------------------------------------------


class _Names:
    """Door names for one request (each door read once)."""

    def __init__(self, service: CloudService) -> None:
        self.service, self._names = service, dict[str, str]()

    def refs(self, door_ids: Iterator[str] | tuple[str, ...] | list[str]) -> list[Ref]:
        return [Ref(id=d, name=self._name(d)) for d in door_ids]

    def _name(self, door_id: str) -> str:
        if door_id not in self._names:
            self._names[door_id] = self.service.door(door_id).name
        return self._names[door_id]


def _label(status: str, pending: int) -> str:
    title = status.title()
    return f"{title} ({pending} door{'s' * (pending != 1)})" if pending else title


def _person_out(service: CloudService, person: Person) -> PersonOut:
    status, names = service.person_status(person.id), _Names(service)
    cards = [
        CardOut(
            uid=c.uid,
            status=c.status,
            label=_label(c.status, len(c.pending_doors)),
            pending_doors=names.refs(c.pending_doors),
        )
        for c in status.keycards
    ]
    return PersonOut(
        id=person.id,
        name=person.name,
        email=person.email,
        guest=service.is_guest(person.id),
        app_logged_in=status.app_logged_in,
        keycards=cards,
        manual_sync_doors=names.refs(status.manual_sync_doors),
    )


def _changes(changes: list[DoorChange]) -> list[ChangeOut]:
    return [ChangeOut(door_id=c.door_id, version=c.version) for c in changes]


def _keycard_out(service: CloudService, person_id: str, changes: list[DoorChange]) -> KeycardOut:
    return KeycardOut(
        person=_person_out(service, service.person(person_id)), changes=_changes(changes)
    )


def _door_out(service: CloudService, door: Door) -> DoorOut:
    last_seen = door.last_seen
    if last_seen is not None and last_seen.tzinfo is None:
        last_seen = last_seen.replace(tzinfo=UTC)  # SQLite keeps no zone; we store UTC
    return DoorOut(
        id=door.id,
        name=door.name,
        property_id=door.property_id,
        online=door.online,
        list_version=door.list_version,
        synced_version=door.synced_version,
        pending=door.list_version > door.synced_version,
        last_seen=last_seen,
        battery_pct=door.battery_pct,
        list_age_s=door.list_age_s,
        capacity_error=door.capacity_error,
        audit_gaps=door.audit_gaps,
        pending_people=[Ref(id=p.id, name=p.name) for p in service.pending_people(door)],
    )


# --- routes: people and keycards -----------------------------------------------------------

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
    return PeopleOut(people=[_person_out(service, p) for p in people], limit=limit, offset=offset)


@router.get("/people/{person_id}", tags=["people"], summary="One person and their keycards")
def get_person(
    person_id: PersonId, service: CurrentService, caller: ManagerOrResident
) -> PersonOut:
    if caller.role == "manager":
        return _person_out(service, service.visible_person(caller.subject_id, person_id))
    if person_id != caller.person:
        raise NotFoundError(f"no person {person_id!r}; as a resident you see yourself at /v1/me")
    return _person_out(service, service.person(person_id))


@router.post(
    "/people/{person_id}/keycards/{uid}/activate", tags=["keycards"], summary="Activate on behalf"
)
def activate(
    person_id: PersonId, uid: CardUid, service: CurrentService, caller: ManagerCaller
) -> KeycardOut:
    changes = service.activate_on_behalf(caller.subject_id, person_id, uid)
    return _keycard_out(service, person_id, changes)


@router.post(
    "/people/{person_id}/keycards/{uid}/deactivate",
    tags=["keycards"],
    summary="Deactivate on behalf",
)
def deactivate(
    person_id: PersonId, uid: CardUid, service: CurrentService, caller: ManagerCaller
) -> KeycardOut:
    changes = service.deactivate_on_behalf(caller.subject_id, person_id, uid)
    return _keycard_out(service, person_id, changes)


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
    return _lost_out(service, person_id, uid, replacement, changes, accepting)


def _lost_out(
    service: CloudService,
    person_id: str,
    uid: str,
    replacement: str | None,
    changes: list[DoorChange],
    accepting: list[str],
) -> LostOut:
    return LostOut(
        person=_person_out(service, service.person(person_id)),
        changes=_changes(changes),
        lost=uid.lower(),
        replacement=replacement.lower() if replacement else None,
        doors_still_accepting=_Names(service).refs(accepting),
    )


@router.get("/me", tags=["me"], summary="Yourself, your keycards and your doors")
def me(service: CurrentService, caller: ResidentCaller) -> MeOut:
    person = _person_out(service, service.person(caller.person))
    doors = _Names(service).refs(sorted(doors_of_person(service.session, caller.person)))
    return MeOut(**person.model_dump(), doors=doors)


@router.post("/me/keycards/{uid}/activate", tags=["me"], summary="Self-activate with the code")
def self_activate(
    uid: CardUid, body: CodeIn, service: CurrentService, caller: ResidentCaller, shared: SharedState
) -> KeycardOut:
    with shared.code_checks:
        changes = service.self_activate(caller.person, uid, body.code)
    return _keycard_out(service, caller.person, changes)


@router.post("/me/keycards/{uid}/deactivate", tags=["me"], summary="Self-deactivate")
def self_deactivate(uid: CardUid, service: CurrentService, caller: ResidentCaller) -> KeycardOut:
    changes = service.self_deactivate(caller.person, uid)
    return _keycard_out(service, caller.person, changes)


@router.post("/me/keycards/{uid}/lost", tags=["me"], summary="Report your card lost")
def self_report_lost(
    uid: CardUid,
    service: CurrentService,
    caller: ResidentCaller,
    shared: SharedState,
    body: LostIn | None = None,
) -> LostOut:
    replacement, code = (body.replacement, body.replacement_code) if body else (None, None)
    with shared.code_checks:
        changes, accepting = service.report_lost(
            caller.person, uid, replacement=replacement, replacement_code=code
        )
    return _lost_out(service, caller.person, uid, replacement, changes, accepting)


# --- routes: guests and doorcodes ---------------------------------------------------------


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
        person=_person_out(service, guest),
        token=issue_token(service, "resident", guest.id),
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        doors=_Names(service).refs(sorted(set(body.door_ids))),
        changes=_changes(changes),
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


# --- routes: doors --------------------------------------------------------------------------


@router.get("/doors", tags=["doors"], summary="Your portfolios' doors, sync status and health")
def list_doors(service: CurrentService, caller: ManagerCaller) -> DoorsOut:
    doors = service.doors_in_portfolios(caller.subject_id)
    return DoorsOut(doors=[_door_out(service, d) for d in doors])


@router.get("/doors/{door_id}", tags=["doors"], summary="One door, its sync status and health")
def get_door(door_id: DoorId, service: CurrentService, caller: ManagerCaller) -> DoorOut:
    return _door_out(service, service.managed_door(caller.subject_id, door_id))


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
    return RegisteredOut(door=_door_out(service, service.door(body.id)), changes=_changes(changes))


# --- routes: what phones carry back from locks --------------------------------------------


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


# --- routes: phones ------------------------------------------------------------------------


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


# --- problems -------------------------------------------------------------------------------


def problem(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An ``application/problem+json`` response."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    body = {"type": f"urn:latchsim:problem:{slug}", "title": title, "status": status}
    return JSONResponse(
        {**body, "detail": detail}, status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


async def _cloud_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CloudError)
    headers = {
        401: {"WWW-Authenticate": "Bearer"},
        429: {"Retry-After": str(SELF_ACTIVATION_WINDOW_S)},
    }.get(exc.status)
    return problem(exc.status, exc.title, exc.reason, headers)


async def _protocol_problem(_request: Request, exc: Exception) -> JSONResponse:
    return problem(422, "Invalid input", f"the bytes were refused: {exc}")


async def _validation_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = [_describe(error) for error in exc.errors()[:5]]
    return problem(422, "Invalid input", "; ".join(parts)[:1000])


def _describe(error: Any) -> str:
    """One validation error as a person reads it: where, and what is expected."""
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    kind, ctx = error.get("type"), error.get("ctx", {})
    if kind == "json_invalid":
        where = f"at character {loc[-1]}" if loc else "at the start"
        return f"the body is not valid JSON: {ctx.get('error', 'invalid')} ({where})"
    if not loc and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "the body must be a JSON object, sent with Content-Type: application/json"
    message = str(error.get("msg", "invalid"))
    if kind == "string_pattern_mismatch":
        message = "must be " + _PATTERNS.get(ctx.get("pattern"), f"like {ctx.get('pattern')}")
    return f"{'.'.join(loc) or 'body'}: {message}"


async def _http_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    where = f"{request.method} {request.url.path[:200]}"
    detail = {
        404: f"there is no {where}; the routes are listed at /openapi.json",
        405: f"{where} is not allowed; the routes are listed at /openapi.json",
        400: "the body could not be read as JSON (a number in it may be too long)",
    }.get(exc.status_code, str(exc.detail))
    title = HTTPStatus(exc.status_code).phrase if exc.status_code in _STATUSES else "Error"
    return problem(exc.status_code, title, detail, exc.headers)


_STATUSES = {s.value for s in HTTPStatus}


async def _internal_problem(_request: Request, _exc: Exception) -> JSONResponse:
    return problem(500, "Internal error", "the request was not applied; try again later")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            await self._refuse()(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _refuse(self) -> JSONResponse:
        return problem(413, "Content Too Large", f"send at most {self.limit} bytes per request")

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"send at most {self.limit} bytes per request")
            return message

        return limited


# --- the app --------------------------------------------------------------------------------

_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": HTTPStatus(code).phrase}
    for code in (401, 403, 404, 409, 413, 422, 429)
}


def create_app(settings: CloudSettings, *, engine: Engine | None = None) -> FastAPI:
    """The cloud's ASGI app on ``engine`` (default: ``settings.database_url``, schema made)."""
    if engine is None:
        engine = make_engine(settings.database_url)
        create_schema(engine)
    app = FastAPI(
        title="Latchsim cloud",
        version="1",
        summary="Keycards, doors, guests and sync for a portfolio of smart locks.",
        description=__doc__,
    )
    app.state.cloud = ApiState(settings, session_factory(engine))
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_exception_handler(CloudError, _cloud_problem)
    app.add_exception_handler(ProtocolError, _protocol_problem)
    app.add_exception_handler(RequestValidationError, _validation_problem)
    app.add_exception_handler(StarletteHTTPException, _http_problem)
    app.add_exception_handler(Exception, _internal_problem)
    app.include_router(router, responses=_PROBLEM_RESPONSES)
    return app


def app_from_environment() -> FastAPI:
    """``uvicorn --factory cloud.api:app_from_environment``: settings from the environment."""
    return create_app(CloudSettings())
