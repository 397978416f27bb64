"""What requests may carry and what responses hold: bounded fields and pydantic models.

Theory of operation: every string and number a client sends is bounded here — by
a pattern from :data:`PATTERNS` (which also says, in words, what a refusal
expects), a length or a range — and request bodies are strict and refuse unknown
fields, so a route receives only values it can use as they are. Binary frames
travel as hex of at most :data:`MAX_FRAME_BYTES` bytes. The caller annotations
(:data:`ManagerCaller` …) put :func:`cloud.auth.require`'s role checks into route
signatures. Response models are plain data: the routes build them
(:mod:`cloud.api._views`); FastAPI derives the OpenAPI spec from both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from fastapi import Depends, Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..auth import Caller, require

__all__ = [
    "MAX_FRAME_BYTES",
    "PATTERNS",
    "AuditOut",
    "BundlesOut",
    "CardOut",
    "CardUid",
    "ChangeOut",
    "Code",
    "CodeIn",
    "DoorId",
    "DoorIn",
    "DoorOut",
    "DoorcodeIn",
    "DoorcodeOut",
    "DoorsOut",
    "Email",
    "FrameHex",
    "GuestIn",
    "GuestOut",
    "Id",
    "Key32",
    "KeycardOut",
    "LostIn",
    "LostOut",
    "ManagerCaller",
    "ManagerLostIn",
    "ManagerOrPhone",
    "ManagerOrResident",
    "MeOut",
    "Name",
    "PeopleOut",
    "PersonId",
    "PersonOut",
    "PhoneCaller",
    "PhoneLoginIn",
    "PhoneLoginOut",
    "Problem",
    "ReceiptOut",
    "Ref",
    "RegisteredOut",
    "ResidentCaller",
    "Time",
    "Uid",
    "UploadIn",
]

MAX_FRAME_BYTES = 96 * 1024
"""Largest receipt or audit frame accepted, in bytes (before hex encoding)."""

PATTERNS = {
    r"^[0-9a-f]{32}$": "32 lowercase hex digits",
    r"^[0-9a-fA-F]{2,20}$": "a card UID of 2 to 20 hex digits",
    r"^[\x20-\x7e]{1,64}$": "1 to 64 printable ASCII characters",
    r"^[^\x00-\x1f\x7f]{1,200}$": "1 to 200 characters, no control characters",
    r"^[^@\s\x00-\x1f\x7f]{1,200}@[^@\s\x00-\x1f\x7f]{1,119}$": "an email address",
    r"^[0-9a-fA-F]{64}$": "64 hex digits (32 bytes)",
    r"^(?:[0-9a-fA-F]{2})+$": "bytes as hex: an even number of hex digits",
}
"""Every pattern a field must match, and how a refusal describes it."""
ID_RE, UID_RE, CODE_RE, NAME_RE, EMAIL_RE, KEY_RE, HEX_RE = PATTERNS

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
