"""Audit batches and their acknowledgement (``docs/protocol.md`` §6.4, §6.5).

Theory of operation: every decision and state change at a lock is an event with
a gapless 32-bit sequence number. The lock releases events to the cloud in
lock-signed AUDIT_BATCHes of consecutive sequence numbers; a relay can neither
edit an event (signature) nor drop one unnoticed: a batch with a gap raises
:class:`AuditGapError` when decoded, and :class:`AuditLedger` (cloud side)
refuses a batch that does not continue where the previous one ended. The cloud
answers with a cloud-signed AUDIT_ACK; only then may the lock free the
acknowledged events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from construct import PrefixedArray, Struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._codec import DOOR_ID_SIZE, SIGNATURE_SIZE, U8, U16, U32, Bytes8, DoorId
from ._message import SignedMessage, register
from ._validate import check_bytes, check_uint, to_enum
from .codes import AuditEventKind, MessageType
from .crypto import SignContext
from .errors import AuditGapError, TooLargeError, UsageError, WrongDoorError
from .limits import Limits

__all__ = ["AuditAck", "AuditBatch", "AuditEvent", "AuditLedger"]

EventFormat = Struct(
    "seq" / U32, "time" / U32, "kind" / U8, "reason" / U8, "credential_id" / Bytes8, "detail" / U32
)


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEvent:
    """One logged event. ``reason`` is a :class:`Reason` value for decisions, else 0."""

    seq: int
    time: int
    kind: AuditEventKind
    reason: int = 0
    credential_id: bytes = b""
    detail: int = 0

    def __post_init__(self) -> None:
        check_uint("seq", self.seq, 32)
        check_uint("time", self.time, 32)
        object.__setattr__(self, "kind", to_enum(AuditEventKind, "kind", self.kind))
        check_uint("reason", self.reason, 8)
        check_bytes("credential_id", self.credential_id, max_size=16)
        check_uint("detail", self.detail, 32)

    def to_container(self) -> dict[str, Any]:
        """The field dictionary :data:`EventFormat` builds from."""
        return {
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "reason": self.reason,
            "credential_id": self.credential_id,
            "detail": self.detail,
        }

    @classmethod
    def from_container(cls, c: Any) -> AuditEvent:
        """Build (validated) from a parsed :data:`EventFormat` container."""
        return cls(
            seq=c.seq,
            time=c.time,
            kind=c.kind,
            reason=c.reason,
            credential_id=c.credential_id,
            detail=c.detail,
        )

    @classmethod
    def unchecked(
        cls,
        seq: int,
        time: int,
        kind: AuditEventKind,
        reason: int,
        credential_id: bytes,
        detail: int,
    ) -> AuditEvent:
        """Build without validation, for a logger whose values are in range by construction
        (the lock's own hot path). Bytes from outside always go through the constructor."""
        event = object.__new__(cls)
        put = object.__setattr__
        put(event, "seq", seq)
        put(event, "time", time)
        put(event, "kind", kind)
        put(event, "reason", reason)
        put(event, "credential_id", credential_id)
        put(event, "detail", detail)
        return event


@register
@dataclass(frozen=True, kw_only=True)
class AuditBatch(SignedMessage):
    """Lock-signed run of consecutive events ``first_seq .. last_seq``."""

    TYPE: ClassVar[MessageType] = MessageType.AUDIT_BATCH
    CONTEXT: ClassVar[SignContext] = SignContext.AUDIT_BATCH
    _FORMAT: ClassVar[Any] = Struct(
        "door_id" / DoorId, "events" / PrefixedArray(U16, EventFormat)
    ).compile()

    door_id: bytes
    events: tuple[AuditEvent, ...]
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_bytes("door_id", self.door_id, size=DOOR_ID_SIZE)
        object.__setattr__(self, "events", tuple(self.events))
        if not self.events:
            raise UsageError("an audit batch holds at least one event")
        for offset, event in enumerate(self.events):
            if event.seq != self.events[0].seq + offset:
                raise AuditGapError(self.events[0].seq + offset, event.seq)
        if self.signature:
            check_bytes("signature", self.signature, size=SIGNATURE_SIZE)

    @property
    def first_seq(self) -> int:
        return self.events[0].seq

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq

    def check_limits(self, limits: Limits) -> None:
        if len(self.events) > limits.max_audit_events:
            raise TooLargeError(f"audit batch holds over {limits.max_audit_events} events")

    def _to_container(self) -> dict[str, Any]:
        events = [e.to_container() for e in self.events]
        return {"door_id": self.door_id, "events": events, "signature": self.signature}

    @classmethod
    def _from_container(cls, c: Any) -> Self:
        events = tuple(AuditEvent.from_container(e) for e in c["events"])
        return cls(door_id=c["door_id"], events=events, signature=c["signature"])


@register
@dataclass(frozen=True, kw_only=True)
class AuditAck(SignedMessage):
    """Cloud-signed: every event of ``door_id`` up to ``up_to_seq`` is stored."""

    TYPE: ClassVar[MessageType] = MessageType.AUDIT_ACK
    CONTEXT: ClassVar[SignContext] = SignContext.AUDIT_ACK
    _FORMAT: ClassVar[Any] = Struct(
        "door_id" / DoorId, "key_epoch" / U32, "up_to_seq" / U32
    ).compile()

    door_id: bytes
    key_epoch: int
    up_to_seq: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_bytes("door_id", self.door_id, size=DOOR_ID_SIZE)
        check_uint("key_epoch", self.key_epoch, 32)
        check_uint("up_to_seq", self.up_to_seq, 32)
        if self.signature:
            check_bytes("signature", self.signature, size=SIGNATURE_SIZE)


@dataclass
class AuditLedger:
    """Cloud side: accepts one door's batches in order, exactly once.

    ``next_seq`` is the first sequence number not yet stored. A batch entirely
    below it is a duplicate (returns no events); one that overlaps returns only
    the new tail; one that starts above it is a gap (:class:`AuditGapError`).
    """

    door_id: bytes
    lock_key: Ed25519PublicKey
    next_seq: int = 1

    def accept(self, payload: bytes) -> tuple[AuditEvent, ...]:
        """Verify a batch payload from the lock and return the events new to the cloud."""
        batch = AuditBatch.verified_from_bytes(payload, self.lock_key)
        if batch.door_id != self.door_id:
            raise WrongDoorError("audit batch is from another door")
        if batch.first_seq > self.next_seq:
            raise AuditGapError(self.next_seq, batch.first_seq)
        fresh = tuple(e for e in batch.events if e.seq >= self.next_seq)
        self.next_seq = max(self.next_seq, batch.last_seq + 1)
        return fresh
