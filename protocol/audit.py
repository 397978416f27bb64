"""Audit batches and their acknowledgement (``docs/protocol.md`` §6.4, §6.5).

Theory of operation: every decision and state change at a lock is an event with
a gapless 32-bit sequence number. The lock releases events to the cloud in
lock-signed AUDIT_BATCHes of consecutive sequence numbers; a relay can neither
edit an event (signature) nor drop one unnoticed: a batch with a gap raises
:class:`AuditGapError` when decoded, and :class:`AuditLedger` (cloud side)
refuses a batch that does not continue where the previous one ended. The cloud
answers with a cloud-signed AUDIT_ACK; only then may the lock free the
acknowledged events.

Codec: :data:`EventFormat` and ``AuditBatch._FORMAT`` (construct) are the normative
declaration of §6.4. The hot paths use the precompiled :mod:`struct` codec below
instead: an event's encoding is computed once and cached on the (frozen) event, so
the lock re-sending an unacknowledged event costs a ``bytes.join``, and the batch
decoder slices the body by hand and raises the same typed errors, with the same
messages and in the same order, as :func:`protocol._codec.parse_exact` over the
declaration; a batch's gapless check compares C-built lists, and its body joins the
cached event encodings. The AUDIT_ACK decoder (a fixed 24-byte body) slices with
:mod:`struct` as well. ``tests/test_audit_codec_speed.py`` proves the two agree byte for
byte and error for error. :meth:`AuditBatch.verified_rows` gives a store (the cloud) a
verified batch's events as the sliced rows, building no event; ``tests/test_audit_rows.py``
proves it accepts and refuses exactly as :meth:`AuditBatch.verified_from_bytes`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, ClassVar, Self

from construct import PrefixedArray, Struct
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._codec import DOOR_ID_SIZE, SIGNATURE_SIZE, U8, U16, U32, Bytes8, DoorId, check_extent
from ._message import SignedMessage, _split_signature, register
from ._validate import check_bytes, check_uint, to_enum
from .codes import AuditEventKind, MessageType
from .crypto import SignContext, verify
from .errors import (
    AuditGapError,
    MalformedMessageError,
    TooLargeError,
    TrailingBytesError,
    TruncatedError,
    UsageError,
    WrongDoorError,
)
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["AuditAck", "AuditBatch", "AuditEvent", "AuditLedger", "AuditRow"]

EventFormat = Struct(
    "seq" / U32, "time" / U32, "kind" / U8, "reason" / U8, "credential_id" / Bytes8, "detail" / U32
)
"""§6.4 event, the normative declaration; the struct codec below must agree with it."""

_EVENT_HEAD = struct.Struct(">IIBBB")  # §6.4 event offsets 0-10: seq, time, kind, reason, n
_DETAIL = struct.Struct(">I")  # §6.4 event offset 11+n: detail
_ACK = struct.Struct(">16sII")  # §6.5: door_id, key_epoch, up_to_seq
_BATCH_HEAD = struct.Struct(">16sH")  # §6.4 offsets 0-17: door_id, e
_MAX_ID = 16  # §8: audit credential_id at most 16 bytes
_KINDS: dict[int, AuditEventKind] = {kind.value: kind for kind in AuditEventKind}
AuditRow = tuple[int, int, int, int, bytes, int, bytes]
"""One event as sliced from the wire: the six fields, then its exact encoding."""
_SEQ = attrgetter("seq")
_WIRE = attrgetter("_wire")


class _EncodingCache:
    """A slot for an event's cached encoding, kept out of the dataclass fields.

    Not a field, so it takes no part in equality, hashing, ``repr``,
    :func:`dataclasses.fields` or :func:`dataclasses.replace` (the vector generator
    and every other reflective user see exactly the six wire fields).
    """

    __slots__ = ("_wire",)
    _wire: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEvent(_EncodingCache):
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
        object.__setattr__(self, "_wire", b"")

    def to_bytes(self) -> bytes:
        """The §6.4 encoding (the bytes :data:`EventFormat` builds), computed once and cached.

        A lock resends an event in every batch until it is acknowledged; the cache makes
        each resend free. Events are frozen, so the cache can never go stale.
        """
        try:
            wire = self._wire
        except AttributeError:  # restored by pickle or copy, which keep only the fields
            wire = b""
        if not wire:
            cid = self.credential_id
            head = _EVENT_HEAD.pack(self.seq, self.time, self.kind, self.reason, len(cid))
            wire = head + cid + _DETAIL.pack(self.detail)
            object.__setattr__(self, "_wire", wire)
        return wire

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
        return _new_event(cls, seq, time, kind, reason, credential_id, detail, b"")

    @classmethod
    def _from_row(cls, row: AuditRow) -> AuditEvent:
        """An event from a wire row, as strict as the constructor.

        Struct unpacking already bounds every integer and makes ``credential_id``
        bytes, so only ``kind`` and the id length can be wrong; they are checked in
        the constructor's order, through the constructor's own helpers (same
        :class:`UsageError` messages). The wire slice becomes the encoding cache.
        """
        seq, time, _, reason, credential_id, detail, wire = row
        member = _checked_kind(row)
        return _new_event(cls, seq, time, member, reason, credential_id, detail, wire)


def _checked_kind(row: AuditRow) -> AuditEventKind:
    """A wire row's ``kind``, after the checks :class:`AuditEvent`'s constructor would make
    of the row (``kind``, then the id length; same :class:`UsageError` messages)."""
    kind, credential_id = row[2], row[4]
    member = _KINDS.get(kind)
    if member is None:
        member = to_enum(AuditEventKind, "kind", kind)  # raises UsageError
    if len(credential_id) > _MAX_ID:
        check_bytes("credential_id", credential_id, max_size=_MAX_ID)  # raises UsageError
    return member


def _new_event(
    cls: type[AuditEvent],
    seq: int,
    time: int,
    kind: AuditEventKind,
    reason: int,
    credential_id: bytes,
    detail: int,
    wire: bytes,
) -> AuditEvent:
    """An event holding these fields and encoding cache (``b""``: not yet encoded),
    bypassing ``__init__`` and its checks."""
    event = object.__new__(cls)
    put = object.__setattr__
    put(event, "seq", seq)
    put(event, "time", time)
    put(event, "kind", kind)
    put(event, "reason", reason)
    put(event, "credential_id", credential_id)
    put(event, "detail", detail)
    put(event, "_wire", wire)
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
        _check_gapless(self.events)
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

    def body_bytes(self) -> bytes:
        """The signed body (§6.4): the bytes ``_FORMAT`` builds, from cached event encodings."""
        count = len(self.events)
        if count > 0xFFFF:
            raise UsageError(f"an audit batch holds at most 65535 events; got {count}")
        head = _BATCH_HEAD.pack(self.door_id, count)
        return b"".join([head, *_encodings(self.events)])

    @classmethod
    def _parse_body(cls, body: bytes, signature: bytes, limits: Limits) -> Self:
        """:meth:`SignedMessage._parse_body` without construct: same result, same errors.

        Order as in the construct path: truncation or trailing bytes anywhere in the
        body first, then each event's fields, then the batch rules (empty, gap), then
        ``limits``.
        """
        door_id, rows = _split_body(body, cls.TYPE.name)
        try:
            events = tuple([AuditEvent._from_row(row) for row in rows])
            batch = cls(door_id=door_id, events=events, signature=signature)
        except UsageError as exc:
            raise MalformedMessageError(f"{cls.TYPE.name}: {exc}") from None
        batch.check_limits(limits)
        return batch

    @classmethod
    def verified_rows(
        cls, payload: bytes, key: Ed25519PublicKey, *, limits: Limits = DEFAULT_LIMITS
    ) -> tuple[bytes, list[AuditRow]]:
        """:meth:`verified_from_bytes` without the message: ``door_id`` and the events as
        wire rows ``(seq, time, kind, reason, credential_id, detail, encoding)``, ``kind``
        a valid :class:`AuditEventKind` value (an ``int``), the rows gapless and non-empty.

        For a store that turns events into rows of its own (the cloud, which gets every
        unacknowledged event again in each batch): no :class:`AuditEvent` is built. The
        signature is checked over the exact bytes first, then the same checks in the same
        order raise the same errors as :meth:`verified_from_bytes`
        (``tests/test_audit_rows.py``).
        """
        body, signature = _split_signature(payload, cls.TYPE)
        verify(key, cls.CONTEXT, body, signature)
        door_id, rows = _split_body(body, cls.TYPE.name)
        try:
            for row in rows:
                _checked_kind(row)
            if not rows:
                raise UsageError("an audit batch holds at least one event")
        except UsageError as exc:
            raise MalformedMessageError(f"{cls.TYPE.name}: {exc}") from None
        _check_seqs([row[0] for row in rows])
        if len(rows) > limits.max_audit_events:
            raise TooLargeError(f"audit batch holds over {limits.max_audit_events} events")
        return door_id, rows


def _check_gapless(events: tuple[AuditEvent, ...]) -> None:
    """Raise :class:`AuditGapError` at the first event whose ``seq`` does not follow on.

    The common, gapless case is one comparison of C-built lists (a lock's batch holds up
    to a few hundred events); the loop runs only to name the first gap."""
    try:
        seqs = list(map(_SEQ, events))
    except AttributeError:  # not all events: the loop raises what it always raised
        first = events[0].seq
        for offset, event in enumerate(events):
            if event.seq != first + offset:
                raise AuditGapError(first + offset, event.seq) from None
        raise
    _check_seqs(seqs)


def _check_seqs(seqs: list[int]) -> None:
    """:func:`_check_gapless` over the (non-empty) sequence numbers themselves."""
    first = seqs[0]
    if seqs == list(range(first, first + len(seqs))):
        return
    for offset, seq in enumerate(seqs):
        if seq != first + offset:
            raise AuditGapError(first + offset, seq)


def _encodings(events: tuple[AuditEvent, ...]) -> list[bytes]:
    """Each event's :meth:`AuditEvent.to_bytes`, read straight from the caches when every
    event has one (a lock re-sends its held events in every batch)."""
    try:
        wires: list[bytes] = list(map(_WIRE, events))
    except AttributeError:  # an event restored by pickle or copy has no cache slot set
        return [event.to_bytes() for event in events]
    if b"" in wires:
        return [event.to_bytes() for event in events]
    return wires


def _split_body(body: bytes, what: str) -> tuple[bytes, list[AuditRow]]:
    """Slice an AUDIT_BATCH body (§6.4) into ``door_id`` and raw event rows.

    Raises exactly what :func:`protocol._codec.parse_exact` raises over
    ``AuditBatch._FORMAT``: :class:`TruncatedError` if the body ends inside a field,
    :class:`TrailingBytesError` if bytes follow the last event.
    """
    rows: list[AuditRow] = []
    try:
        door_id, count = _BATCH_HEAD.unpack_from(body)
        offset = _BATCH_HEAD.size
        for _ in range(count):
            seq, time, kind, reason, n = _EVENT_HEAD.unpack_from(body, offset)
            id_end = offset + _EVENT_HEAD.size + n
            (detail,) = _DETAIL.unpack_from(body, id_end)
            end = id_end + _DETAIL.size
            credential_id = body[id_end - n : id_end]
            rows.append((seq, time, kind, reason, credential_id, detail, body[offset:end]))
            offset = end
    except struct.error:
        raise TruncatedError(f"{what}: input ended early") from None
    if offset != len(body):
        raise TrailingBytesError(len(body) - offset)
    return door_id, rows


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

    @classmethod
    def _parse_body(cls, body: bytes, signature: bytes, limits: Limits) -> Self:
        """:meth:`SignedMessage._parse_body` without construct (a lock takes one ack per
        batch): same result, same errors. The body has a fixed size, so only truncation
        or trailing bytes can be wrong before the constructor's checks."""
        check_extent(body, _ACK.size, _ACK.size, cls.TYPE.name)
        door_id, key_epoch, up_to_seq = _ACK.unpack(body)
        return cls._from_fields(
            limits, door_id=door_id, key_epoch=key_epoch, up_to_seq=up_to_seq, signature=signature
        )


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
