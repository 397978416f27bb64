"""What a lock keeps in flash, and its two encodings: snapshot and journal records.

Theory of operation: :class:`LockState` is everything that must survive a power
cut — identity, trusted cloud key, credential list, audit ring, clock correction
and counters. The flash (:mod:`controller.storage`) stores a *snapshot* (the
whole state) followed by *transactions*; a transaction is the list of
:class:`Record` changes one event made, written in one atomic append, so after
a power cut the lock holds the state before or after that event, never a mix.
:meth:`LockState.replay` rebuilds the state from a snapshot and transactions,
re-checking the signed digest of every list change it replays.

Both encodings are declared with ``construct`` and bounded by the decoders of
``protocol``; a corrupt image raises :class:`CorruptStateError`. The card-tap hot
path writes them with ``struct`` instead (audit and battery records; the audit
events of a snapshot from each event's cached encoding), and
``tests/test_tap_speed.py`` checks the bytes equal the declared formats' own.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from construct import (
    Bytes,
    Const,
    Float64b,
    GreedyBytes,
    Int8ub,
    Int32ub,
    Int64sb,
    Prefixed,
    PrefixedArray,
    Struct,
    Switch,
    this,
)

from protocol import (
    DEFAULT_LIMITS,
    AuditEvent,
    AuditEventKind,
    CloudKeyState,
    CredentialList,
    ProtocolError,
)
from protocol._codec import parse_exact
from protocol.audit import EventFormat
from protocol.bundle import Change, decode_changes, encode_changes
from protocol.delta import apply_changes

from .audit_log import AuditLog
from .identity import LockIdentity

__all__ = [
    "AuditAppended",
    "AuditLost",
    "AuditReleased",
    "BatteryUsed",
    "Booted",
    "ClockCorrected",
    "CorruptStateError",
    "KeyRotated",
    "ListChanged",
    "LockState",
    "Record",
    "decode_transaction",
    "encode_transaction",
]


class CorruptStateError(Exception):
    """The flash holds a snapshot or transaction this firmware cannot accept."""


def _battery(mah: float) -> float:
    """A battery reading from flash; NaN, infinite or negative is corruption (ValueError)."""
    if not math.isfinite(mah) or mah < 0:
        raise ValueError(f"impossible battery use {mah!r} mAh")
    return mah


@dataclass(frozen=True)
class ListChanged:
    """The list moved to ``version`` by ``changes``; ``digest`` is the signed target."""

    version: int
    digest: bytes
    changed_at: int
    changes: tuple[Change, ...]
    encoded_changes: bytes = field(default=b"", compare=False, repr=False)
    """``changes`` canonically encoded, when the caller has it (saves re-encoding)."""


@dataclass(slots=True)
class AuditAppended:
    event: AuditEvent


@dataclass(frozen=True)
class AuditReleased:
    up_to_seq: int


@dataclass(frozen=True)
class AuditLost:
    """The ring was full: ``count`` events so far could not be logged."""

    count: int


@dataclass(frozen=True)
class ClockCorrected:
    offset: int
    sync_sequence: int


@dataclass(frozen=True)
class KeyRotated:
    epoch: int
    public_key: bytes


@dataclass(frozen=True)
class Booted:
    boot_count: int


@dataclass(slots=True)
class BatteryUsed:
    mah: float


Record = (
    ListChanged
    | AuditAppended
    | AuditReleased
    | AuditLost
    | ClockCorrected
    | KeyRotated
    | Booted
    | BatteryUsed
)

_TAGS: dict[type, int] = {
    ListChanged: 1,
    AuditAppended: 2,
    AuditReleased: 3,
    ClockCorrected: 4,
    KeyRotated: 5,
    Booted: 6,
    BatteryUsed: 7,
    AuditLost: 8,
}
RecordFormat = Struct(
    "tag" / Int8ub,
    "body"
    / Switch(
        this.tag,
        {
            1: Struct(
                "version" / Int32ub,
                "digest" / Bytes(32),
                "changed_at" / Int32ub,
                "changes" / Prefixed(Int32ub, GreedyBytes),
            ),
            2: EventFormat,
            3: Struct("up_to_seq" / Int32ub),
            4: Struct("offset" / Int64sb, "sync_sequence" / Int32ub),
            5: Struct("epoch" / Int32ub, "public_key" / Bytes(32)),
            6: Struct("boot_count" / Int32ub),
            7: Struct("mah" / Float64b),
            8: Struct("count" / Int32ub),
        },
    ),
)
TransactionFormat = Struct(
    "magic" / Const(b"LKT1"), "records" / PrefixedArray(Int32ub, RecordFormat)
).compile()
_SNAPSHOT_HEAD = (
    "magic" / Const(b"LKS1"),
    "door_id" / Bytes(16),
    "property_id" / Bytes(16),
    "identity_seed" / Bytes(32),
    "sealing_private" / Bytes(32),
    "doorcode_secret" / Bytes(32),
    "cloud_epoch" / Int32ub,
    "cloud_key" / Bytes(32),
    "credential_list" / Prefixed(Int32ub, GreedyBytes),
    "list_changed_at" / Int32ub,
    "audit_next_seq" / Int32ub,
    "audit_lost" / Int32ub,
)
_SNAPSHOT_TAIL = (
    "clock_offset" / Int64sb,
    "time_sync_seq" / Int32ub,
    "boot_count" / Int32ub,
    "battery_used_mah" / Float64b,
)
SnapshotFormat = Struct(
    *_SNAPSHOT_HEAD, "audit_events" / PrefixedArray(Int32ub, EventFormat), *_SNAPSHOT_TAIL
).compile()
_SnapshotHead = Struct(*_SNAPSHOT_HEAD).compile()
_SnapshotTail = Struct(*_SNAPSHOT_TAIL).compile()
"""The snapshot is built in three parts (the audit events from their cached encodings,
:meth:`protocol.AuditEvent.to_bytes`); a test checks that the parts joined equal
``SnapshotFormat.build``."""


def _record_body(record: Record) -> dict[str, Any]:
    if isinstance(record, ListChanged):
        return {
            "version": record.version,
            "digest": record.digest,
            "changed_at": record.changed_at,
            "changes": record.encoded_changes or encode_changes(record.changes),
        }
    if isinstance(record, AuditAppended):
        return record.event.to_container()
    return dataclasses.asdict(record)


def encode_transaction(records: Sequence[Record]) -> bytes:
    """One journal transaction holding ``records``.

    Audit and battery records (the card-check hot path) are packed with
    ``struct``; a test checks that this matches the construct declaration.
    """
    return b"".join((b"LKT1", len(records).to_bytes(4, "big"), *map(_encode_record, records)))


_BATTERY = struct.Struct(">Bd")
_RECORD_ONE = RecordFormat.compile()


def _encode_record(record: Record) -> bytes:
    if isinstance(record, AuditAppended):  # tag 2, then the event (encoded once, cached)
        return b"\x02" + record.event.to_bytes()
    if isinstance(record, BatteryUsed):
        return _BATTERY.pack(7, record.mah)
    return bytes(_RECORD_ONE.build({"tag": _TAGS[type(record)], "body": _record_body(record)}))


def decode_transaction(data: bytes) -> tuple[Record, ...]:
    """Parse a journal transaction; raise :class:`CorruptStateError` on any fault."""
    try:
        parsed = parse_exact(TransactionFormat, data, "journal transaction")
        return tuple(_record_from(r.tag, r.body) for r in parsed.records)
    except (ProtocolError, ValueError, TypeError, KeyError) as exc:
        raise CorruptStateError(f"unreadable journal transaction: {exc}") from None


def _record_from(tag: int, b: Any) -> Record:
    if tag == 1:
        return ListChanged(b.version, b.digest, b.changed_at, decode_changes(b.changes))
    if tag == 2:
        return AuditAppended(AuditEvent.from_container(b))
    simple: dict[int, Any] = {
        3: AuditReleased,
        4: ClockCorrected,
        5: KeyRotated,
        6: Booted,
        7: BatteryUsed,
        8: AuditLost,
    }
    if tag not in simple:
        raise ValueError(f"unknown record tag {tag}")
    cls = simple[tag]
    return cls(**{k: v for k, v in b.items() if not k.startswith("_")})  # type: ignore[no-any-return]


@dataclass
class LockState:
    """Everything a lock persists. Mutated only by the controller core and replay."""

    identity: LockIdentity
    cloud: CloudKeyState
    held: CredentialList
    list_changed_at: int
    audit: AuditLog
    clock_offset: int = 0
    time_sync_seq: int = 0
    boot_count: int = 0
    battery_used_mah: float = 0.0

    @classmethod
    def provisioned(
        cls,
        identity: LockIdentity,
        cloud: CloudKeyState,
        *,
        audit_capacity: int,
        clock_offset: int = 0,
    ) -> LockState:
        """The state of a freshly provisioned lock: empty list at version 0."""
        return cls(
            identity=identity,
            cloud=cloud,
            held=CredentialList.empty(identity.door_id),
            list_changed_at=0,
            audit=AuditLog(audit_capacity),
            clock_offset=clock_offset,
        )

    def apply(self, record: Record, *, capacity: int) -> None:
        """Apply one journal record (used both live and on replay)."""
        _APPLY[type(record)](self, record, capacity)

    def _apply_list(self, record: ListChanged, capacity: int) -> None:
        held = apply_changes(self.held, record.changes, version=record.version, capacity=capacity)
        if held.digest != record.digest:
            raise CorruptStateError(f"replayed list v{record.version} does not match its digest")
        self.held, self.list_changed_at = held, record.changed_at

    def _apply_audit(self, record: AuditAppended, _capacity: int) -> None:
        self.audit.restore(record.event)
        if record.event.kind is AuditEventKind.EVENTS_LOST:
            self.audit.lost = 0

    def _apply_release(self, record: AuditReleased, _capacity: int) -> None:
        self.audit.release(record.up_to_seq)

    def _apply_lost(self, record: AuditLost, _capacity: int) -> None:
        self.audit.lost = record.count

    def _apply_clock(self, record: ClockCorrected, _capacity: int) -> None:
        self.clock_offset, self.time_sync_seq = record.offset, record.sync_sequence

    def _apply_rotation(self, record: KeyRotated, _capacity: int) -> None:
        self.cloud = CloudKeyState(epoch=record.epoch, public_key=record.public_key)

    def _apply_boot(self, record: Booted, _capacity: int) -> None:
        self.boot_count = record.boot_count

    def _apply_battery(self, record: BatteryUsed, _capacity: int) -> None:
        self.battery_used_mah = _battery(record.mah)

    def to_snapshot(self) -> bytes:
        """The whole state as one snapshot blob (:data:`SnapshotFormat`)."""
        i, a = self.identity, self.audit
        events = tuple(a.events())
        head = _SnapshotHead.build(
            {
                "door_id": i.door_id,
                "property_id": i.property_id,
                "identity_seed": i.identity_seed,
                "sealing_private": i.sealing_private,
                "doorcode_secret": i.doorcode_secret,
                "cloud_epoch": self.cloud.epoch,
                "cloud_key": self.cloud.public_key,
                "credential_list": self.held.to_bytes(),
                "list_changed_at": self.list_changed_at,
                "audit_next_seq": a.next_seq,
                "audit_lost": a.lost,
            }
        )
        tail = _SnapshotTail.build(
            {
                "clock_offset": self.clock_offset,
                "time_sync_seq": self.time_sync_seq,
                "boot_count": self.boot_count,
                "battery_used_mah": self.battery_used_mah,
            }
        )
        count = len(events).to_bytes(4, "big")
        encoded = [event.to_bytes() for event in events]  # each event encodes once, then cached
        return b"".join((head, count, *encoded, tail))

    @classmethod
    def from_snapshot(cls, data: bytes, *, audit_capacity: int) -> LockState:
        """Rebuild from a snapshot blob; raise :class:`CorruptStateError` on any fault."""
        try:
            s = parse_exact(SnapshotFormat, data, "snapshot")
            return cls._from_parsed(s, audit_capacity)
        except (ProtocolError, ValueError, TypeError) as exc:
            raise CorruptStateError(f"unreadable snapshot: {exc}") from None

    @classmethod
    def _from_parsed(cls, s: Any, audit_capacity: int) -> LockState:
        identity = LockIdentity(
            door_id=s.door_id,
            property_id=s.property_id,
            identity_seed=s.identity_seed,
            sealing_private=s.sealing_private,
            doorcode_secret=s.doorcode_secret,
        )
        events = [AuditEvent.from_container(e) for e in s.audit_events]
        audit = AuditLog(
            max(audit_capacity, len(events)),
            next_seq=s.audit_next_seq - len(events),
            lost=s.audit_lost,
        )
        for event in events:
            audit.restore(event)
        return cls(
            identity=identity,
            cloud=CloudKeyState(epoch=s.cloud_epoch, public_key=s.cloud_key),
            held=CredentialList.from_bytes(s.credential_list),
            list_changed_at=s.list_changed_at,
            audit=audit,
            clock_offset=s.clock_offset,
            time_sync_seq=s.time_sync_seq,
            boot_count=s.boot_count,
            battery_used_mah=_battery(s.battery_used_mah),
        )

    @classmethod
    def replay(
        cls, snapshot: bytes, transactions: Iterable[bytes], *, audit_capacity: int
    ) -> LockState:
        """The state after a snapshot and the transactions written after it.

        List changes were checked against the lock's capacity when they were accepted;
        replay re-checks only their digests (a lowered capacity must not brick a lock).
        """
        state = cls.from_snapshot(snapshot, audit_capacity=audit_capacity)
        for txn in transactions:
            for record in decode_transaction(txn):
                try:
                    state.apply(record, capacity=DEFAULT_LIMITS.max_list_entries)
                except (ProtocolError, ValueError) as exc:
                    raise CorruptStateError(f"journal replay failed: {exc}") from None
        return state


_APPLY: dict[type, Callable[[LockState, Any, int], None]] = {
    # one lookup per record instead of a chain of isinstance tests (the card-check path)
    ListChanged: LockState._apply_list,
    AuditAppended: LockState._apply_audit,
    AuditReleased: LockState._apply_release,
    AuditLost: LockState._apply_lost,
    ClockCorrected: LockState._apply_clock,
    KeyRotated: LockState._apply_rotation,
    Booted: LockState._apply_boot,
    BatteryUsed: LockState._apply_battery,
}
