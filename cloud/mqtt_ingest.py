"""What each MQTT message from a door does to the cloud's database, and the outbox claim.

Theory of operation: the MQTT bridge (:mod:`cloud.mqtt_bridge`) decodes a message and
runs one of these on a :class:`~cloud.service.CloudService`, in a transaction it owns;
nothing here touches the broker. :func:`ingest_receipt` advances a door's synced version
(§6.3), :func:`ingest_audit` stores an audit batch and signs its ack (§6.5), and
:func:`record_hello` records a door's health and queues what it lacks: a catch-up bundle,
the key rotations, a TIME_SYNC bound to the HELLO's challenge (§4.1, §6.6, §6.7). The
outbox half, :func:`claim_unsent` and :func:`mark_sent`, is how a drain takes the rows to
publish (one cloud at a time on PostgreSQL: an advisory lock) and records them sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from sqlalchemy import delete, false, select, text, true, update
from sqlalchemy.orm import Session

from protocol import AuditAck, Hello, Receipt, ReceiptStatus, WrongDoorError
from protocol.cloud_messages import NO_CHALLENGE
from protocol.transport import KEY_ROTATION_TOPIC, door_topic

from .errors import NotFoundError
from .keys import key_of
from .models import MqttOutbox
from .service import CloudService
from .sql import Sql
from .sync import (
    queue_bundle_on,
    queue_frames,
    queue_rotations_on,
    receipt_on,
    rotation_frames,
)
from .time_sync import MIN_CORRECTION_S, needs_time_sync, time_sync_on

__all__ = [
    "HelloOutcome",
    "OutboxRow",
    "claim_unsent",
    "ingest_audit",
    "ingest_receipt",
    "make_durable",
    "mark_sent",
    "queue_key_rotation",
    "record_hello",
]

_OUTBOX_LOCK: Final = 0x6C6B_0010
"""PostgreSQL advisory-lock key under which one cloud at a time drains the outbox."""


# --- ingestion: one CloudService (one transaction) each ---------------------------------


@dataclass(frozen=True)
class HelloOutcome:
    """What a HELLO caused: the catch-up bundle's base (if one was queued), the rotations
    queued, and the sequence of the TIME_SYNC queued (None: the clock is right, or the
    HELLO was retained)."""

    hello: Hello
    catch_up_base: int | None
    rotations: int
    time_sync_seq: int | None = None


def ingest_receipt(cloud: CloudService, door_id: str, payload: bytes) -> Receipt:
    """Verify a RECEIPT with the lock's key and advance the door's synced version (§6.3).

    A forged receipt raises :class:`protocol.AuthenticationError` and changes nothing.
    A BASE_VERSION receipt queues a bundle from the version the lock holds.
    """
    with cloud.statements() as sql:
        receipt = receipt_on(sql, door_id, payload).receipt
        if receipt.status is ReceiptStatus.BASE_VERSION:
            _queue_bundle(cloud, sql, door_id, receipt.list_version)
    return receipt


def ingest_audit(cloud: CloudService, door_id: str, payload: bytes) -> tuple[AuditAck, bool]:
    """Verify and store an AUDIT_BATCH (§6.5); return the signed ack and whether a gap showed.

    The door's row is locked first, so two clouds given the same batch store it once.
    """
    return cloud.store_audit(door_id, payload, app_users=False)  # + last seen (see there)


def record_hello(
    cloud: CloudService,
    door_id: str,
    payload: bytes,
    *,
    live: bool = True,
    rotation_topic: str = KEY_ROTATION_TOPIC,
    time_sync_tolerance_s: int | None = MIN_CORRECTION_S,
) -> HelloOutcome:
    """Record a door's health from its HELLO (§4.1) and queue what the door lacks.

    ``live=False`` is a retained HELLO, possibly old: it cannot make a door look older.
    A live HELLO whose clock is off by more than ``time_sync_tolerance_s`` (None: never)
    gets a TIME_SYNC bound to its challenge (:func:`_queue_time_sync`).
    """
    with cloud.statements() as sql:
        row = sql.row(_DOOR_HELLO + sql.lock(), [door_id])
        if row is None:
            raise NotFoundError(f"no door {door_id!r}")
        door = _HelloDoor(*row)
        hello = Hello.from_bytes(payload)
        if hello.door_id.hex() != door_id:
            raise WrongDoorError("the HELLO is from another door")
        battery, age, seen = door.battery_pct, door.list_age_s, door.last_seen
        if live or seen is None:  # a retained HELLO only fills in a door never seen
            battery, age = hello.battery_pct, hello.list_age_s
            if live:
                seen = sql.stamp_at(cloud.now)
        # HELLO is unsigned: anyone on the broker could claim a door rotated. It may only
        # show a door *behind* (its rotations are queued again: harmless if it is not);
        # that a door rotated is learnt from its signed audit events (cloud.lock_uploads).
        epoch = min(hello.key_epoch, door.key_epoch) if live else door.key_epoch
        sql.run(
            "UPDATE door SET battery_pct = ?, list_age_s = ?, last_seen = ?, key_epoch = ?"
            " WHERE id = ?",
            [battery, age, seen, epoch, door_id],
        )
        rotations = queue_rotations_on(sql, after=epoch, topic=rotation_topic)
        held = hello.list_version if live else max(hello.list_version, door.synced_version)
        base = _catch_up_base(door.list_version, door.synced_version, held)
        if base is not None:
            _queue_bundle(cloud, sql, door_id, base)
        sequence = None
        if live and time_sync_tolerance_s is not None:
            sequence = _queue_time_sync(cloud, sql, hello, time_sync_tolerance_s)
    return HelloOutcome(hello, base, rotations, sequence)


_DOOR_HELLO: Final = (
    "SELECT battery_pct, list_age_s, last_seen, key_epoch, list_version, synced_version"
    " FROM door WHERE id = ?"
)


class _HelloDoor(NamedTuple):
    """What :func:`record_hello` reads of the door's row."""

    battery_pct: int | None
    list_age_s: int | None
    last_seen: object
    key_epoch: int
    list_version: int
    synced_version: int


def _queue_time_sync(cloud: CloudService, sql: Sql, hello: Hello, tolerance_s: int) -> int | None:
    """Queue a TIME_SYNC bound to ``hello``'s challenge if the lock's clock is off (§6.6).

    It goes to the door's ``time`` topic, where the lock listens (§10), not retained: a
    bound sync is good for this one challenge. Returns its sequence, or None when the
    clock is within ``tolerance_s`` of the cloud's (nothing changes then) or the HELLO
    carries no challenge to bind to.
    """
    if hello.challenge == NO_CHALLENGE:
        return None  # an all-zero challenge binds nothing (§6.6); no unbound syncs here
    if not needs_time_sync(hello.lock_time, cloud.now, tolerance_s=tolerance_s):
        return None  # checked first: no signature for the common case of a right clock
    issued = time_sync_on(
        sql,
        hello.door_id.hex(),
        challenge=hello.challenge,
        lock_time=hello.lock_time,
        now=cloud.now,
        key=key_of(sql),
        tolerance_s=tolerance_s,
    )
    if issued.frame is None:
        return None
    queue_frames(sql, [(door_topic(hello.door_id, "time"), issued.frame, False)])
    return issued.sequence


def _catch_up_base(list_version: int, synced_version: int, held: int) -> int | None:
    """The base of the bundle a door holding ``held`` needs, or None when it is current.

    A lock behind the cloud gets a bundle from what it holds. A lock that holds the newest
    version although no receipt proved it (a receipt was lost) gets the bundle again: a
    duplicate yields the same receipt (§6.3), which clears *pending*.
    """
    if held < list_version:
        return held
    if synced_version < list_version:
        return synced_version
    return None


def queue_key_rotation(cloud: CloudService, *, topic: str = KEY_ROTATION_TOPIC) -> bool:
    """Queue the newest KEY_ROTATION, retained on ``topic``; False when there is none.

    Call it in the transaction that ran :func:`cloud.keys.rotate`, then notify the bridge.
    """
    frames = rotation_frames(cloud.session, after=cloud.key.epoch - 1)
    if frames:
        cloud.queue(topic, frames[-1], retain=True)
    return bool(frames)


def _queue_bundle(cloud: CloudService, sql: Sql, door_id: str, base: int) -> None:
    queue_bundle_on(sql, door_id, base, key=key_of(sql), random=cloud.random, cache=cloud.cache)


# --- the outbox ------------------------------------------------------------------------


class OutboxRow(NamedTuple):
    """One frame to publish, detached from the session."""

    id: int
    topic: str
    payload: bytes
    retain: bool


def claim_unsent(session: Session, limit: int) -> list[OutboxRow] | None:
    """The oldest unsent rows in id order; None while another cloud drains (PostgreSQL).

    On PostgreSQL the transaction stays open, holding the drain's advisory lock until
    :func:`mark_sent` commits. On SQLite it ends here: every SQLite transaction holds the
    database's write lock (:func:`cloud.db.make_engine`), which must not wait on the broker.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        query = text("SELECT pg_try_advisory_xact_lock(:key)")
        if not session.execute(query, {"key": _OUTBOX_LOCK}).scalar_one():
            return None
    rows = session.execute(
        select(MqttOutbox).where(MqttOutbox.sent == false()).order_by(MqttOutbox.id).limit(limit)
    ).scalars()
    claimed = [OutboxRow(r.id, r.topic, bytes(r.payload), r.retain) for r in rows]
    if not postgres:
        session.commit()
    return claimed


def make_durable(session: Session) -> None:
    """Make every committed transaction durable before its frames leave (SQLite only).

    SQLite runs with ``synchronous=NORMAL`` (:func:`cloud.db.make_engine`): a commit reaches
    the disk at the next checkpoint. Were a bundle published and the power then lost, the
    cloud would come back without that version and give its number to other content, and
    the lock that applied it would never match again. A passive checkpoint (on its own
    connection: not inside the claim's transaction) syncs the write-ahead log first, so
    the claimed rows, committed before the claim, are on disk before they are published.
    Were another checkpoint running (:mod:`cloud.wal_checkpoint`'s thread, another
    process), SQLite answers busy and syncs nothing: the log file is synced here then.
    PostgreSQL commits durably already.
    """
    engine = session.get_bind()
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()  # type: ignore[union-attr]
    try:
        driver = raw.driver_connection
        assert driver is not None
        busy, _, _ = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        raw.close()
    database = engine.url.database  # type: ignore[union-attr]
    if busy and database:
        _sync_file(Path(f"{database}-wal"))


def _sync_file(path: Path) -> None:
    """Wait until ``path``'s content is on the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def mark_sent(session: Session, ids: list[int], keep: int) -> None:
    """Mark published rows sent, keeping only the newest ``keep`` sent rows for inspection,
    and end the drain's transaction (releasing its lock)."""
    try:
        session.execute(update(MqttOutbox).where(MqttOutbox.id.in_(ids)).values(sent=True))
        old = MqttOutbox.id <= max(ids) - keep
        session.execute(delete(MqttOutbox).where(MqttOutbox.sent == true(), old))
        session.commit()
    finally:
        session.close()
