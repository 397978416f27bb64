"""The cloud's tables (SQLAlchemy 2): the system of record.

Theory of operation: ids are lowercase hex strings (16-byte ids as 32 digits), so
the same schema runs on SQLite and PostgreSQL. The sync engine's bookkeeping is
:class:`DoorEntry` — the materialised credential list of each door, one row per
credential key with the version at which it last changed (a removed credential
keeps a tombstone row with ``encoded`` NULL) — and :class:`Door`'s
``list_version`` / ``synced_version``. Pending states are never stored: they are
derived by comparing an entry's ``changed_version`` with the door's
``synced_version`` (what its last verified receipt proved).

Outboxes (:class:`MqttOutbox`, :class:`EmailOutbox`) are written in the same
transaction as the change that causes them and drained by senders afterwards, so
a crash between commit and send loses nothing.

Wrong self-activation codes are rows too (:class:`CodeAttempt`), so their rate
limit holds across restarts and across several server processes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AuditRecord",
    "Base",
    "CloudKey",
    "CodeAttempt",
    "Door",
    "DoorEntry",
    "DoorVersion",
    "EmailOutbox",
    "Grant",
    "Keycard",
    "Manager",
    "ManagerPortfolio",
    "MqttOutbox",
    "Person",
    "Phone",
    "Portfolio",
    "Property",
    "Token",
]

Id = String(32)
U32 = BigInteger
"""A protocol u32 (times, validity bounds): PostgreSQL's INTEGER stops at 2**31 - 1."""


class Base(DeclarativeBase):
    """Declarative base of every cloud table."""


class Portfolio(Base):
    __tablename__ = "portfolio"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class Property(Base):
    """A building."""

    __tablename__ = "property"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    portfolio_id: Mapped[str] = mapped_column(ForeignKey("portfolio.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    utc_offset_minutes: Mapped[int] = mapped_column(Integer, default=0)


class Door(Base):
    """A lock as the cloud knows it: keys, versions and health."""

    __tablename__ = "door"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    property_id: Mapped[str] = mapped_column(ForeignKey("property.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    identity_public: Mapped[bytes] = mapped_column(LargeBinary(32))
    sealing_public: Mapped[bytes] = mapped_column(LargeBinary(32))
    doorcode_secret: Mapped[bytes] = mapped_column(LargeBinary(32))
    list_version: Mapped[int] = mapped_column(Integer, default=0)
    synced_version: Mapped[int] = mapped_column(Integer, default=0)
    key_epoch: Mapped[int] = mapped_column(Integer, default=0)
    """The cloud key epoch the lock last reported (an MQTT door's HELLO; a KEY_ROTATED event
    in a verified audit batch, for any door) or was registered with."""
    audit_next_seq: Mapped[int] = mapped_column(Integer, default=1)
    audit_gaps: Mapped[int] = mapped_column(Integer, default=0)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    battery_pct: Mapped[int | None] = mapped_column(Integer, nullable=True)
    list_age_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    capacity_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    time_sync_seq: Mapped[int] = mapped_column(U32, default=0, server_default="0")
    """The sequence of the last TIME_SYNC signed for this lock (§6.6; 0: none yet)."""


class DoorEntry(Base):
    """One credential of one door's list, and when it last changed there."""

    __tablename__ = "door_entry"
    door_id: Mapped[str] = mapped_column(ForeignKey("door.id"), primary_key=True)
    kind: Mapped[int] = mapped_column(Integer, primary_key=True)
    credential_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    encoded: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """The canonical entry encoding; NULL once removed (a tombstone)."""
    changed_version: Mapped[int] = mapped_column(Integer, index=True)


class DoorVersion(Base):
    """The digest of each list version a door has had (to check receipts)."""

    __tablename__ = "door_version"
    door_id: Mapped[str] = mapped_column(ForeignKey("door.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))


class Person(Base):
    __tablename__ = "person"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    used_app: Mapped[bool] = mapped_column(Boolean, default=False)
    """True once the person has opened a door with the app (the first-use rule)."""


class CodeAttempt(Base):
    """A wrong self-activation code for a person, and when (the rate limit's memory).

    Rows older than the rate-limit window are deleted when the person's next code is
    checked (:meth:`cloud.service.CloudService.self_activate`).
    """

    __tablename__ = "code_attempt"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("person.id"), index=True)
    at: Mapped[int] = mapped_column(U32)
    """Unix seconds."""


class Manager(Base):
    __tablename__ = "manager"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))


class ManagerPortfolio(Base):
    __tablename__ = "manager_portfolio"
    manager_id: Mapped[str] = mapped_column(ForeignKey("manager.id"), primary_key=True)
    portfolio_id: Mapped[str] = mapped_column(ForeignKey("portfolio.id"), primary_key=True)


class Grant(Base):
    """A person may open one door, or every door of a property."""

    __tablename__ = "access_grant"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("person.id"), index=True)
    door_id: Mapped[str | None] = mapped_column(ForeignKey("door.id"), nullable=True)
    property_id: Mapped[str | None] = mapped_column(ForeignKey("property.id"), nullable=True)
    valid_from: Mapped[int] = mapped_column(U32, default=0)
    valid_until: Mapped[int] = mapped_column(U32, default=0xFFFFFFFF)
    schedule: Mapped[list[list[int]]] = mapped_column(JSON, default=list)
    """Weekly windows as ``[days, start_minute, end_minute]`` triples (empty: always)."""
    guest: Mapped[bool] = mapped_column(Boolean, default=False)


class Keycard(Base):
    """A card from inventory: its UID, its key, the code printed on it, its holder."""

    __tablename__ = "keycard"
    uid: Mapped[str] = mapped_column(String(20), primary_key=True)
    card_key: Mapped[bytes] = mapped_column(LargeBinary(16))
    activation_code_hash: Mapped[str] = mapped_column(String(64))
    person_id: Mapped[str | None] = mapped_column(
        ForeignKey("person.id"), nullable=True, index=True
    )
    state: Mapped[str] = mapped_column(String(16), default="inventory")
    """``inventory``, ``active``, ``deactivated`` or ``lost``."""


class Phone(Base):
    """An app login: the phone's key and the mobile credential issued to it."""

    __tablename__ = "phone"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("person.id"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    credential: Mapped[bytes] = mapped_column(LargeBinary)
    valid_until: Mapped[int] = mapped_column(U32)


class Token(Base):
    """A bearer token, stored as its SHA-256; ``role`` is manager, resident or phone."""

    __tablename__ = "token"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(Id, index=True)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Unix seconds from which the token signs no one in; None: until it is deleted."""


class CloudKey(Base):
    """The cloud's signing keys by epoch (the newest is current)."""

    __tablename__ = "cloud_key"
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    seed: Mapped[bytes] = mapped_column(LargeBinary(32))
    rotation: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """The KEY_ROTATION frame announcing this epoch (None for epoch 0)."""


class AuditRecord(Base):
    __tablename__ = "audit_record"
    door_id: Mapped[str] = mapped_column(ForeignKey("door.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[int] = mapped_column(U32)
    kind: Mapped[int] = mapped_column(Integer)
    reason: Mapped[int] = mapped_column(Integer)
    credential_id: Mapped[str] = mapped_column(String(32))
    detail: Mapped[int] = mapped_column(U32)


class MqttOutbox(Base):
    """A frame to publish, written with the change that caused it."""

    __tablename__ = "mqtt_outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    retain: Mapped[bool] = mapped_column(Boolean, default=False)
    sent: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


class EmailOutbox(Base):
    """An email to send, written with the change it reports; ``message_id`` is stable."""

    __tablename__ = "email_outbox"
    __table_args__ = (UniqueConstraint("message_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(200))
    recipient: Mapped[str] = mapped_column(String(320))
    person_id: Mapped[str | None] = mapped_column(ForeignKey("person.id"), index=True)
    """Whom it tells of a change (None: an email about no one in particular)."""
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
