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

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, insert, update
from sqlalchemy.orm import Session

from protocol import AuditAck, AuditBatch, AuditEvent, AuditEventKind, Reason
from protocol.crypto import ed25519_public_from_bytes

from .errors import InvalidInputError
from .models import AuditRecord, Door, MqttOutbox, Person
from .sync import accept_receipt, note_outbox

if TYPE_CHECKING:
    from .keys import SigningKey

__all__ = ["LockUploads"]

_AUDIT_RECORD = cast(Table, AuditRecord.__table__)


class LockUploads:
    """Receipts and audit batches (a mixin of :class:`~cloud.service.CloudService`)."""

    if TYPE_CHECKING:
        session: Session
        now: int

        @property
        def key(self) -> SigningKey: ...

        def door(self, door_id: str) -> Door: ...

    def receipt(self, door_id: str, payload: bytes) -> int:
        """Verify and record a receipt; return the door's synced version."""
        door = self.door(door_id)
        accept_receipt(self.session, door, payload)
        return door.synced_version

    def audit(self, door_id: str, payload: bytes) -> AuditAck:
        """Verify, store and acknowledge an audit batch (§6.5 ledger rule).

        A batch that starts beyond what is stored is a gap: it is counted on the door for
        the console and nothing of it is stored; the ack covers what is. Any verified
        batch, a gap or a duplicate too, may raise the door's key epoch
        (:meth:`_learn_key_epoch`).
        """
        door = self.door(door_id)
        batch = AuditBatch.verified_from_bytes(
            payload, ed25519_public_from_bytes(door.identity_public)
        )
        return self._store_audit(door, batch)

    def _store_audit(self, door: Door, batch: AuditBatch) -> AuditAck:
        """:meth:`audit` of a batch verified with ``door``'s key."""
        if batch.door_id.hex() != door.id:
            raise InvalidInputError("the audit batch is from another door")
        self._learn_key_epoch(door, batch)
        if batch.first_seq > door.audit_next_seq:
            # §6.5 step 3: nothing stored. The lock still holds the missing events (it frees
            # them only on an ack) and sends them again from its oldest unacknowledged one.
            door.audit_gaps += 1
            return self._audit_ack(door, batch.door_id)
        rows = [
            {
                "door_id": door.id,
                "seq": event.seq,
                "time": event.time,
                "kind": int(event.kind),
                "reason": event.reason,
                "credential_id": event.credential_id.hex(),
                "detail": event.detail,
            }
            for event in batch.events
            if event.seq >= door.audit_next_seq
        ]
        if rows:  # one Core executemany: no ORM object, no ORM bulk insert per event
            self.session.connection().execute(insert(_AUDIT_RECORD), rows)
        door.audit_next_seq = max(door.audit_next_seq, batch.last_seq + 1)
        return self._audit_ack(door, batch.door_id)

    def _learn_key_epoch(self, door: Door, batch: AuditBatch) -> None:
        """Raise ``door.key_epoch`` to the newest epoch a verified batch reports rotating to.

        The lock signed the batch, so its KEY_ROTATED events (§6.4: ``detail`` is the new
        epoch) are how the cloud learns the epoch of a lock whose HELLO never reaches it, a
        BLE-only lock a phone rotated (§6.7). Nothing else the lock signs names its epoch
        (a RECEIPT does not, §6.3). The epoch never goes down (an old batch replayed
        changes nothing), and an epoch above the cloud's own newest one cannot come from a
        rotation the cloud signed, so it is ignored.
        """
        reported = [e.detail for e in batch.events if e.kind == AuditEventKind.KEY_ROTATED]
        if not reported or max(reported) <= door.key_epoch:
            return
        current = self.key.epoch
        newest = max((epoch for epoch in reported if epoch <= current), default=0)
        door.key_epoch = max(door.key_epoch, newest)

    def _audit_ack(self, door: Door, door_id: bytes) -> AuditAck:
        """The ack of everything stored for ``door`` (§6.5: ``up_to_seq = next_seq - 1``)."""
        key = self.key
        return AuditAck(
            door_id=door_id, key_epoch=key.epoch, up_to_seq=door.audit_next_seq - 1
        ).signed(key.private)

    def queue(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Add a frame to the MQTT outbox (sent after commit)."""
        self.session.add(MqttOutbox(topic=topic, payload=payload, retain=retain))
        note_outbox(self.session)

    def upload_audit(self, door_id: str, payload: bytes, *, app_users: bool = True) -> AuditAck:
        """:meth:`audit`, then what the verified batch proves: when the lock was last seen
        (its newest event time) and, with ``app_users``, who has opened a door with the app
        (the first-use rule).

        The app users are marked before the door's row is written: a resync locks a person
        and then doors, and the same order here cannot deadlock with it. The MQTT bridge
        passes ``app_users=False``: it locks the door first (two clouds store a batch once),
        and phone decisions reach the cloud in the batches phones upload.
        """
        door = self.door(door_id)
        identity = ed25519_public_from_bytes(door.identity_public)
        batch = AuditBatch.verified_from_bytes(payload, identity)
        events = batch.events
        if app_users:
            self._mark_app_users(events)
        ack = self._store_audit(door, batch)
        newest = min(max(e.time for e in events), self.now)
        seen = datetime.fromtimestamp(newest, UTC)
        last = door.last_seen.replace(tzinfo=UTC) if door.last_seen is not None else None
        if last is None or last < seen:
            door.last_seen = seen
        return ack

    def _mark_app_users(self, events: Sequence[AuditEvent]) -> None:
        """Everyone a verified batch shows granted by phone has now used the app."""
        people = sorted(
            {
                e.credential_id.hex()
                for e in events
                if e.kind == AuditEventKind.PHONE_DECISION and e.reason == Reason.GRANTED
            }
        )
        if people:
            self.session.execute(
                update(Person)
                .where(Person.id.in_(people), Person.used_app.is_(False))
                .values(used_app=True)
            )
