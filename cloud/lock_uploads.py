"""What locks send the cloud: receipts and audit batches, and the acks and frames back.

Theory of operation: :class:`LockUploads` is the part of
:class:`~cloud.service.CloudService` that takes what a lock signed, whoever carried it (a
phone over HTTP, or the MQTT bridge). A receipt advances the door's synced version
(:func:`cloud.sync.accept_receipt`, §6.3). An audit batch is verified with the door's
identity key, then stored by the ledger rule (§6.5): a batch beyond a gap is counted and
nothing of it stored, every ack covers exactly what is stored. A verified batch also tells
the cloud the lock's key epoch (KEY_ROTATED events), when it was last seen, and, for
phone uploads, who has opened a door with the app (the first-use rule). Lock order: people
before the door's row, as a resync takes them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, NamedTuple

from sqlalchemy.orm import Session

from protocol import AuditAck, AuditBatch, AuditEventKind, Reason
from protocol.audit import AuditRow

from .errors import InvalidInputError, NotFoundError
from .keys import key_of
from .models import MqttOutbox
from .sql import Sql, marks
from .sync import identity_key, note_outbox, receipt_on

__all__ = ["AuditStored", "LockUploads"]


class LockUploads:
    """Receipts and audit batches (a mixin of :class:`~cloud.service.CloudService`)."""

    if TYPE_CHECKING:
        session: Session
        now: int

        def _sql(self, *, writes: bool = True) -> AbstractContextManager[Sql]: ...

    def receipt(self, door_id: str, payload: bytes) -> int:
        """Verify and record a receipt; return the door's synced version."""
        with self._sql() as sql:
            return receipt_on(sql, door_id, payload).synced_version

    def audit(self, door_id: str, payload: bytes) -> AuditAck:
        """Verify, store and acknowledge an audit batch (§6.5 ledger rule).

        A batch that starts beyond what is stored is a gap: it is counted on the door for
        the console and nothing of it is stored; the ack covers what is. Any verified
        batch, a gap or a duplicate too, may raise the door's key epoch
        (:func:`_learned_epoch`).
        """
        return self.store_audit(door_id, payload, app_users=False, seen=False).ack

    def upload_audit(self, door_id: str, payload: bytes, *, app_users: bool = True) -> AuditAck:
        """:meth:`audit`, then what the verified batch proves: when the lock was last seen
        (its newest event time) and, with ``app_users``, who has opened a door with the app
        (the first-use rule). The MQTT bridge passes ``app_users=False`` (phone decisions
        reach the cloud in the batches phones upload)."""
        return self.store_audit(door_id, payload, app_users=app_users).ack

    def store_audit(
        self, door_id: str, payload: bytes, *, app_users: bool, seen: bool = True
    ) -> AuditStored:
        """The whole of :meth:`upload_audit` (``seen``: also move the door's last seen),
        saying whether the batch showed a gap.

        On raw statements (:mod:`cloud.sql`): a door row read and written once, the events
        in one executemany. Lock order, as a resync takes them: with ``app_users`` the
        people are marked before the door's row is locked and read again (PostgreSQL);
        without, the door's row is locked first, so two clouds given the same batch store
        it once. (A SQLite transaction holds the write lock from its start.)
        """
        with self._sql() as sql:
            first_lock = "" if app_users else sql.lock()
            row = sql.row(_DOOR_AUDIT + first_lock, [door_id])
            if row is None:
                raise NotFoundError(f"no door {door_id!r}")
            batch_door, events = AuditBatch.verified_rows(payload, identity_key(bytes(row[0])))
            if batch_door.hex() != door_id:
                raise InvalidInputError("the audit batch is from another door")
            if app_users:
                _mark_app_users(sql, events)
                if sql.postgres:
                    row = sql.row(_DOOR_AUDIT + sql.lock(), [door_id])
                    assert row is not None, "a door row cannot go while people are locked"
            _, next_seq, gaps, key_epoch, last_seen = row
            key = key_of(sql)
            key_epoch = _learned_epoch(key_epoch, events, key.epoch)
            first_seq, last_seq = events[0][0], events[-1][0]
            gap = first_seq > next_seq
            if gap:
                # §6.5 step 3: nothing stored. The lock still holds the missing events (it
                # frees them only on an ack) and sends them from its oldest unacked one.
                gaps += 1
            else:
                fresh = events[max(0, next_seq - first_seq) :]
                sql.insert(_AUDIT_RECORD, _records(door_id, fresh))
                next_seq = max(next_seq, last_seq + 1)
            if seen:
                newest = min(max([time for _, time, *_ in events]), self.now)
                before = sql.moment(last_seen)
                if before is None or before < datetime.fromtimestamp(newest, UTC):
                    last_seen = sql.stamp_at(newest)
            sql.run(
                "UPDATE door SET audit_next_seq = ?, audit_gaps = ?, key_epoch = ?, last_seen = ?"
                " WHERE id = ?",
                [next_seq, gaps, key_epoch, last_seen, door_id],
            )
        ack = AuditAck(door_id=batch_door, key_epoch=key.epoch, up_to_seq=next_seq - 1)
        return AuditStored(ack.signed(key.private), gap)

    def queue(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Add a frame to the MQTT outbox (sent after commit)."""
        self.session.add(MqttOutbox(topic=topic, payload=payload, retain=retain))
        note_outbox(self.session)


class AuditStored(NamedTuple):
    """What :meth:`LockUploads.store_audit` did: the signed ack, and whether a gap showed."""

    ack: AuditAck
    gap: bool


_DOOR_AUDIT: Final = (
    "SELECT identity_public, audit_next_seq, audit_gaps, key_epoch, last_seen FROM door"
    " WHERE id = ?"
)


_AUDIT_RECORD: Final = "audit_record (door_id, seq, time, kind, reason, credential_id, detail)"


def _records(door_id: str, events: list[AuditRow]) -> list[tuple[object, ...]]:
    """The ``audit_record`` rows of these verified wire rows."""
    return [
        (door_id, seq, time, kind, reason, credential_id.hex(), detail)
        for seq, time, kind, reason, credential_id, detail, _ in events
    ]


def _learned_epoch(door_epoch: int, events: list[AuditRow], cloud_epoch: int) -> int:
    """The door's key epoch raised to the newest one a verified batch reports rotating to.

    The lock signed the batch, so its KEY_ROTATED events (§6.4: ``detail`` is the new
    epoch) are how the cloud learns the epoch of a lock whose HELLO never reaches it, a
    BLE-only lock a phone rotated (§6.7). Nothing else the lock signs names its epoch
    (a RECEIPT does not, §6.3). The epoch never goes down (an old batch replayed
    changes nothing), and an epoch above the cloud's own newest one cannot come from a
    rotation the cloud signed, so it is ignored.
    """
    rotated = AuditEventKind.KEY_ROTATED
    reported = [detail for _, _, kind, _, _, detail, _ in events if kind == rotated]
    if not reported or max(reported) <= door_epoch:
        return door_epoch
    newest = max((epoch for epoch in reported if epoch <= cloud_epoch), default=0)
    return max(door_epoch, newest)


def _mark_app_users(sql: Sql, events: list[AuditRow]) -> None:
    """Everyone a verified batch shows granted by phone has now used the app."""
    phone, granted = AuditEventKind.PHONE_DECISION, Reason.GRANTED
    ids = {who for _, _, kind, reason, who, _, _ in events if kind == phone and reason == granted}
    people = sorted(person.hex() for person in ids)
    if people:
        sql.run(
            f"UPDATE person SET used_app = ? WHERE id IN {marks(len(people))} AND used_app = ?",
            [True, *people, False],
        )
