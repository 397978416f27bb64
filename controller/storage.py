"""The lock's flash: a crash-safe store of a snapshot and the transactions after it.

Theory of operation
-------------------
The image holds two slots, A and B (``slot-a.img``, ``slot-b.img``). A slot is::

    header   magic "LKFL" | format version u8 | generation u64 | crc32
    record   length u32 | kind u8 | sequence u64 | payload | crc32   (snapshot: kind 1, seq 0)
    record   ... one per transaction appended after it (kind 2, seq 1, 2, ...)

Integers are big-endian; each CRC-32 (``zlib.crc32``) covers the bytes before it in
its header or record. Headers are declared with ``construct`` (record heads are packed
with an equivalent ``struct``, the per-tap append path); CRCs are computed outside it,
and checked before anything is parsed.

* ``append`` writes one record at the end of the active slot's valid log, in one write
  followed by flush and fsync. A torn tail left by a power cut is truncated first.
* ``compact`` erases the inactive slot, writes the snapshot record, fsyncs, and only
  then writes the header (generation = active + 1) and fsyncs: the header is the
  commit record. The old slot stays as a fallback against bit rot.
* ``load`` takes the valid slot with the highest generation and reads its log up to
  the first torn or invalid record (a gap or repeat in the sequence counts as invalid).

Guarantee: after a power cut at any write, the image holds a prefix of the committed
history: every append or compact that returned, and the one in progress wholly or not
at all. An append commits when its record lands whole; a compaction when its header's
generation lands (a header cut short after that is read as committed, since the
snapshot under it was already durable; one cut before is read as never written).

Slots are ``absent``, ``blank`` (erased, or a header never committed), ``valid`` or
``corrupt``. With no valid slot, ``load`` returns the empty state if no slot is
corrupt, and otherwise raises :class:`CorruptImageError` naming each file and why: a
lock must not silently forget its state. ``format`` is the factory reset that clears
such an image. One :class:`Flash` owns an image at a time; :class:`PowerCut` simulates
a power cut at the k-th low-level write.
"""

from __future__ import annotations

import os
import struct
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from construct import Const, ConstructError, Int8ub, Int32ub, Int64ub, Struct

__all__ = [
    "DEFAULT_CAPACITY",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "RECORD_OVERHEAD",
    "SLOT_FILES",
    "CorruptImageError",
    "FileMedium",
    "Flash",
    "FlashStats",
    "ImageTooLargeError",
    "Loaded",
    "Medium",
    "MediumError",
    "MemoryFlash",
    "MemoryMedium",
    "NotFormattedError",
    "PowerCut",
    "PowerLost",
    "SlotInfo",
    "SlotStatus",
    "StorageError",
    "open_flash",
]

MAGIC = b"LKFL"
FORMAT_VERSION = 1
SLOT_FILES = ("slot-a.img", "slot-b.img")
DEFAULT_CAPACITY = 64 * 1024 * 1024
CRC_SIZE = 4

_Header = Struct("magic" / Const(MAGIC), "version" / Int8ub, "generation" / Int64ub).compile()
_RecordHead = Struct("length" / Int32ub, "kind" / Int8ub, "sequence" / Int64ub).compile()
HEADER_SIZE = _Header.sizeof() + CRC_SIZE
RECORD_HEAD_SIZE = _RecordHead.sizeof()
RECORD_OVERHEAD = RECORD_HEAD_SIZE + CRC_SIZE
_GENERATION_END = 13  # the header bytes before its CRC
_HEAD_PACK = struct.Struct(">IBQ")
"""``_RecordHead`` packed with ``struct``: the append hot path (tests check both agree)."""
_FileAction = Callable[[BinaryIO], object]


class _Kind(IntEnum):
    """Record kinds."""

    SNAPSHOT = 1
    TRANSACTION = 2


# --- errors ------------------------------------------------------------------------------


class StorageError(Exception):
    """Base of every error the flash store raises."""


class CorruptImageError(StorageError):
    """The image has slot files but no valid slot (bad data on the medium)."""

    def __init__(self, problems: tuple[SlotInfo, ...]) -> None:
        self.problems = problems
        detail = "; ".join(f"{p.name}: {p.reason}" for p in problems)
        super().__init__(f"flash image has no valid slot: {detail}")


class ImageTooLargeError(StorageError):
    """A write would take the image past its capacity; nothing was written."""

    def __init__(self, needed: int, capacity: int) -> None:
        self.needed, self.capacity = needed, capacity
        super().__init__(f"image would need {needed} bytes; capacity is {capacity}")


class NotFormattedError(StorageError):
    """``append`` on an image that has no snapshot yet (call format or compact)."""


class MediumError(StorageError):
    """The medium failed (an ``OSError`` from the file system)."""


class PowerLost(BaseException):
    """Simulated power cut. Not a :class:`StorageError` and not an ``Exception``:
    like ``KeyboardInterrupt``, ordinary error handling must not swallow it."""


@dataclass(frozen=True, slots=True)
class PowerCut:
    """Fault hook: the ``at_write``-th low-level write (1-based) lands only in part.

    ``torn_bytes`` is how much of it lands, with slice semantics: ``None`` is half,
    a negative value counts from the end (``-1`` = all but the last byte) and a value
    past the end means the whole write lands before the power goes.
    """

    at_write: int
    torn_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.at_write < 1:
            raise ValueError(f"at_write is 1-based; got {self.at_write}")

    def landed(self, data: bytes) -> bytes:
        """The prefix of ``data`` that reaches the medium."""
        cut = len(data) // 2 if self.torn_bytes is None else self.torn_bytes
        return data[:cut]


# --- media -------------------------------------------------------------------------------


class Medium(ABC):
    """Where the two slots live. Every mutating call is durable when it returns."""

    @abstractmethod
    def size(self, slot: int) -> int | None:
        """Bytes in the slot, or ``None`` if it does not exist."""

    @abstractmethod
    def read(self, slot: int) -> bytes:
        """The whole slot (empty if it does not exist)."""

    @abstractmethod
    def write(self, slot: int, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (zero-filling any gap), creating the slot."""

    @abstractmethod
    def truncate(self, slot: int, size: int) -> None:
        """Cut the slot to ``size`` bytes, creating it empty if missing."""

    @abstractmethod
    def name(self, slot: int) -> str:
        """A name for messages."""


class MemoryMedium(Medium):
    """Slots in ``bytearray`` objects: for simulating thousands of locks."""

    def __init__(self) -> None:
        self.slots: list[bytearray | None] = [None, None]

    def size(self, slot: int) -> int | None:
        data = self.slots[slot]
        return None if data is None else len(data)

    def read(self, slot: int) -> bytes:
        return bytes(self.slots[slot] or b"")

    def write(self, slot: int, offset: int, data: bytes) -> None:
        buf = self.slots[slot] = self.slots[slot] or bytearray()
        if offset == len(buf):  # an append: no gap to fill, nothing to overwrite
            buf += data
            return
        buf.extend(bytes(max(0, offset - len(buf))))
        buf[offset : offset + len(data)] = data

    def truncate(self, slot: int, size: int) -> None:
        buf = self.slots[slot] = self.slots[slot] or bytearray()
        del buf[size:]

    def name(self, slot: int) -> str:
        return f"memory:{SLOT_FILES[slot]}"


class FileMedium(Medium):
    """Slots as files in the directory ``path``, written with flush and ``os.fsync``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def size(self, slot: int) -> int | None:
        file = self._file(slot)
        with _os_errors("stat", file):
            return file.stat().st_size if file.exists() else None

    def read(self, slot: int) -> bytes:
        file = self._file(slot)
        with _os_errors("read", file):
            return file.read_bytes() if file.exists() else b""

    def write(self, slot: int, offset: int, data: bytes) -> None:
        self._change(slot, lambda f: (f.seek(offset), f.write(data)))

    def truncate(self, slot: int, size: int) -> None:
        self._change(slot, lambda f: f.truncate(size))

    def name(self, slot: int) -> str:
        return str(self._file(slot))

    def _file(self, slot: int) -> Path:
        return self.path / SLOT_FILES[slot]

    def _change(self, slot: int, action: _FileAction) -> None:
        file = self._file(slot)
        with _os_errors("write", file):
            if not self.path.is_dir():
                self.path.mkdir(parents=True)
                _fsync_directory(self.path.parent)
            created = not file.exists()
            with open(file, "w+b" if created else "r+b") as f:
                action(f)
                f.flush()
                os.fsync(f.fileno())
            if created:
                _fsync_directory(self.path)


@contextmanager
def _os_errors(verb: str, file: Path) -> Iterator[None]:
    """Turn an ``OSError`` into a :class:`MediumError` naming the file."""
    try:
        yield
    except OSError as exc:
        raise MediumError(f"cannot {verb} {file}: {exc.strerror or exc}") from exc


def _fsync_directory(path: Path) -> None:
    """Make a new directory entry durable (POSIX only)."""
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- records -----------------------------------------------------------------------------


class _Invalid(Exception):
    """A header or record failed a check; the message says which."""


class _Uncommitted(_Invalid):
    """A header write cut short before its generation landed: the slot is blank."""


def _crc(data: bytes | memoryview) -> bytes:
    return zlib.crc32(data).to_bytes(CRC_SIZE, "big")


def _encode_header(generation: int) -> bytes:
    head = _Header.build({"version": FORMAT_VERSION, "generation": generation})
    return bytes(head) + _crc(head)


def _encode_record(kind: _Kind, sequence: int, payload: bytes) -> bytes:
    body = _HEAD_PACK.pack(len(payload), kind, sequence) + payload
    return body + zlib.crc32(body).to_bytes(CRC_SIZE, "big")


def _decode_header(head: bytes) -> int:
    """Check a header (CRC first, then fields) and return its generation."""
    if _crc(head[:_GENERATION_END]) != head[_GENERATION_END:HEADER_SIZE]:
        raise _Invalid("header CRC mismatch")
    try:
        fields = _Header.parse(head[:_GENERATION_END])
    except ConstructError:
        raise _Invalid(f"bad magic {head[:4]!r}") from None
    if fields.version != FORMAT_VERSION:
        raise _Invalid(f"format version {fields.version} (this build reads {FORMAT_VERSION})")
    return int(fields.generation)


def _torn_header(head: bytes) -> int | None:
    """For a header write cut short over erased (zero) bytes: its generation if that
    landed whole, else 0. ``None`` if ``head`` is not a prefix of a header."""
    written = len(head.rstrip(b"\0"))
    if written >= HEADER_SIZE:
        return None
    generation = int.from_bytes(head[5:_GENERATION_END], "big")
    checked = written if written >= _GENERATION_END else min(written, 5)
    if head[:checked] != _encode_header(generation)[:checked]:
        return None
    return generation if written >= _GENERATION_END else 0


def _decode_record(data: bytes, offset: int, kind: _Kind, sequence: int) -> tuple[bytes, int]:
    """Check the record at ``offset``; return its payload and the offset after it."""
    if len(data) - offset < RECORD_HEAD_SIZE:
        raise _Invalid(f"torn record header at byte {offset}")
    length, got_kind, got_sequence = _HEAD_PACK.unpack_from(data, offset)
    end = offset + RECORD_OVERHEAD + length
    if end > len(data):
        raise _Invalid(f"record at byte {offset} is cut short ({len(data) - offset} of {end})")
    if _crc(memoryview(data)[offset : end - CRC_SIZE]) != data[end - CRC_SIZE : end]:
        raise _Invalid(f"record CRC mismatch at byte {offset}")
    if (got_kind, got_sequence) != (kind, sequence):
        got = f"kind {got_kind} seq {got_sequence}"
        raise _Invalid(f"record at byte {offset} is {got}; expected kind {kind} seq {sequence}")
    return data[offset + RECORD_HEAD_SIZE : end - CRC_SIZE], end


# --- slot scanning -----------------------------------------------------------------------


class SlotStatus(StrEnum):
    """What a slot holds."""

    ABSENT = "absent"
    BLANK = "blank"
    VALID = "valid"
    CORRUPT = "corrupt"


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """One slot, as ``stats()`` reports it. ``reason`` explains blank, corrupt or a cut log."""

    name: str
    status: SlotStatus
    size: int = 0
    generation: int = 0
    records: int = 0
    valid_bytes: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Scan:
    info: SlotInfo
    snapshot: bytes | None = None
    transactions: tuple[bytes, ...] = ()


def _scan_slot(name: str, data: bytes) -> _Scan:
    """Classify one slot's bytes and read its valid history."""
    if len(data) < HEADER_SIZE:
        if not any(data):
            return _Scan(SlotInfo(name, SlotStatus.BLANK, len(data), reason="erased"))
        return _corrupt(name, data, f"shorter than the {HEADER_SIZE}-byte header")
    try:
        generation, note = _read_header(data[:HEADER_SIZE])
    except _Uncommitted as exc:
        return _Scan(SlotInfo(name, SlotStatus.BLANK, len(data), reason=str(exc)))
    except _Invalid as exc:
        return _corrupt(name, data, str(exc))
    try:  # the snapshot was on flash before the header, so it must be whole
        snapshot, offset = _decode_record(data, HEADER_SIZE, _Kind.SNAPSHOT, 0)
    except _Invalid as exc:
        return _corrupt(name, data, f"{note}snapshot record: {exc}", generation)
    txns, end, reason = _read_log(data, offset)
    records, reason = 1 + len(txns), note + reason
    return _Scan(
        SlotInfo(name, SlotStatus.VALID, len(data), generation, records, end, reason),
        snapshot,
        txns,
    )


def _read_header(head: bytes) -> tuple[int, str]:
    """The generation of a committed header, and a note if it was cut short."""
    try:
        return _decode_header(head), ""
    except _Invalid:
        torn = _torn_header(head)
        if torn is None:
            raise
        if not torn:
            raise _Uncommitted("header never committed (interrupted compaction)") from None
        return torn, "header cut short after its generation; "


def _corrupt(name: str, data: bytes, reason: str, generation: int = 0) -> _Scan:
    return _Scan(SlotInfo(name, SlotStatus.CORRUPT, len(data), generation, reason=reason))


def _read_log(data: bytes, offset: int) -> tuple[tuple[bytes, ...], int, str]:
    """Transactions from ``offset`` up to the first invalid record, its offset and why."""
    txns: list[bytes] = []
    while offset < len(data):
        try:
            payload, offset_after = _decode_record(data, offset, _Kind.TRANSACTION, len(txns) + 1)
        except _Invalid as exc:
            return tuple(txns), offset, f"log stops: {exc}"
        txns.append(payload)
        offset = offset_after
    return tuple(txns), offset, ""


def _best(scans: tuple[_Scan, _Scan]) -> int | None:
    """The valid slot with the highest generation (A on a tie), if any."""
    valid = [i for i, s in enumerate(scans) if s.info.status is SlotStatus.VALID]
    return max(valid, key=lambda i: (scans[i].info.generation, -i), default=None)


# --- the store ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """What boot gets back: the newest snapshot and every transaction after it."""

    snapshot: bytes | None
    transactions: tuple[bytes, ...]
    generation: int


@dataclass(frozen=True, slots=True)
class FlashStats:
    """Usage and per-slot detail, for tooling (never raises on a corrupt image)."""

    capacity: int
    used: int
    active: str | None
    generation: int
    slots: tuple[SlotInfo, ...]

    def describe(self) -> str:
        """Human-readable lines, for a CLI."""
        lines = [f"active: {self.active or '-'}  generation {self.generation}"]
        lines.append(f"used: {self.used} of {self.capacity} bytes")
        for s in self.slots:
            extra = f"  ({s.reason})" if s.reason else ""
            detail = f"gen {s.generation}, {s.records} records, {s.valid_bytes}/{s.size} bytes"
            lines.append(f"{s.name}: {s.status} {detail}{extra}")
        return "\n".join(lines)


@dataclass(slots=True)
class _State:
    """The mounted image: where the next append goes."""

    active: int | None = None
    generation: int = 0
    end: int = 0
    next_sequence: int = 1


class Flash:
    """A crash-safe store of a snapshot and the transactions appended after it.

    ``capacity`` bounds both slots together: a compaction needs room for the new slot
    beside the active one, which is kept until the next compaction erases it.
    """

    def __init__(
        self, medium: Medium, *, fault: PowerCut | None = None, capacity: int = DEFAULT_CAPACITY
    ) -> None:
        if capacity < HEADER_SIZE + RECORD_OVERHEAD:
            raise ValueError(f"capacity of {capacity} bytes cannot hold an empty image")
        self.medium, self.capacity, self._fault = medium, capacity, fault
        self._writes, self._off = 0, False
        self._state: _State | None = None

    def load(self) -> Loaded:
        """Read the image; raise :class:`CorruptImageError` if it has no valid slot."""
        scans = self._scan()
        self._state = _mount(scans, strict=True)
        if self._state.active is None:
            return Loaded(snapshot=None, transactions=(), generation=0)
        best = scans[self._state.active]
        return Loaded(
            snapshot=best.snapshot, transactions=best.transactions, generation=best.info.generation
        )

    def append(self, txn: bytes) -> None:
        """Durably append one transaction after the current snapshot."""
        state = self._state
        if state is None or self._off:
            state = self._mounted()
        if state.active is None:
            raise NotFormattedError("the image has no snapshot yet; call format() or compact()")
        slot, size = state.active, self.medium.size
        self._check_capacity((size(1 - slot) or 0) + state.end, txn)
        record = _encode_record(_Kind.TRANSACTION, state.next_sequence, txn)
        if (size(slot) or 0) > state.end:
            self._mutate(self.medium.truncate, slot, state.end)  # drop a torn tail
        self._write(slot, state.end, record)
        state.end += len(record)
        state.next_sequence += 1

    def compact(self, snapshot: bytes) -> None:
        """Durably replace everything with ``snapshot``, written to the inactive slot."""
        state = self._mounted()
        kept = 0 if state.active is None else self._size(state.active)
        self._commit(state, snapshot, kept)

    def format(self, snapshot: bytes) -> None:
        """Factory reset: start over from ``snapshot`` alone, even on a corrupt image."""
        state = _mount(self._scan(), strict=False)
        self._commit(state, snapshot, 0)
        self._state, old = state, 1 - (state.active or 0)
        if self.medium.size(old) is not None:  # the new slot is durable: drop the old one
            self._mutate(self.medium.truncate, old, 0)

    def stats(self) -> FlashStats:
        """Bytes used per slot, records and generations, read afresh from the medium."""
        scans = self._scan()
        best, infos = _best(scans), tuple(s.info for s in scans)
        used = sum(i.size for i in infos)
        if best is None:
            return FlashStats(self.capacity, used, None, 0, infos)
        return FlashStats(self.capacity, used, infos[best].name, infos[best].generation, infos)

    # --- internals ---------------------------------------------------------------------

    def _power_check(self) -> None:
        if self._off:
            raise PowerLost("the device is off")

    def _scan(self) -> tuple[_Scan, _Scan]:
        self._power_check()
        return self._scan_one(0), self._scan_one(1)

    def _scan_one(self, slot: int) -> _Scan:
        name, size = self.medium.name(slot), self.medium.size(slot)
        if size is None:
            return _Scan(SlotInfo(name, SlotStatus.ABSENT))
        if size > self.capacity:
            reason = f"{size} bytes exceeds the capacity of {self.capacity}"
            return _Scan(SlotInfo(name, SlotStatus.CORRUPT, size, reason=reason))
        return _scan_slot(name, self.medium.read(slot))

    def _mounted(self) -> _State:
        self._power_check()
        if self._state is None:
            self._state = _mount(self._scan(), strict=True)
        return self._state

    def _size(self, slot: int) -> int:
        return self.medium.size(slot) or 0

    def _commit(self, state: _State, snapshot: bytes, kept: int) -> None:
        """Erase the inactive slot, write the snapshot record, then the header."""
        target = 0 if state.active is None else 1 - state.active
        self._check_capacity(kept + HEADER_SIZE, snapshot)
        record = _encode_record(_Kind.SNAPSHOT, 0, snapshot)
        self._mutate(self.medium.truncate, target, 0)
        self._write(target, HEADER_SIZE, record)
        self._write(target, 0, _encode_header(state.generation + 1))
        state.active, state.generation = target, state.generation + 1
        state.end, state.next_sequence = HEADER_SIZE + len(record), 1

    def _check_capacity(self, other: int, payload: bytes) -> None:
        """Room for ``other`` bytes and a record of ``payload``; checked before any write."""
        needed = other + RECORD_OVERHEAD + len(payload)
        if needed > self.capacity or len(payload) >= 1 << 32:
            raise ImageTooLargeError(needed, self.capacity)

    def _write(self, slot: int, offset: int, data: bytes) -> None:
        """One low-level write: the unit the fault hook counts."""
        self._writes += 1
        if self._fault is None or self._writes != self._fault.at_write:
            try:
                self.medium.write(slot, offset, data)
            except BaseException:
                self._state = None  # as _mutate: unknown tail, rescan before the next write
                raise
            return
        self._off = True
        landed = self._fault.landed(data)
        if landed:
            self.medium.write(slot, offset, landed)
        raise PowerLost(f"power lost at write {self._writes}: {len(landed)} of {len(data)} bytes")

    def _mutate(self, change: Callable[..., None], *args: Any) -> None:
        try:
            change(*args)
        except BaseException:
            self._state = None  # unknown tail: rescan before the next write
            raise


def _mount(scans: tuple[_Scan, _Scan], *, strict: bool) -> _State:
    """Where writing resumes; ``strict`` raises when the image has only corrupt slots."""
    best = _best(scans)
    if best is None:
        corrupt = tuple(s.info for s in scans if s.info.status is SlotStatus.CORRUPT)
        if corrupt and strict:
            raise CorruptImageError(corrupt)
        return _State()
    info = scans[best].info
    return _State(best, info.generation, info.valid_bytes, info.records)


class MemoryFlash(Flash):
    """A :class:`Flash` in memory; pass ``medium=old.medium`` to reboot the same image."""

    def __init__(
        self,
        *,
        medium: MemoryMedium | None = None,
        fault: PowerCut | None = None,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        super().__init__(medium or MemoryMedium(), fault=fault, capacity=capacity)


def open_flash(
    path: str | os.PathLike[str] | None,
    *,
    fault: PowerCut | None = None,
    capacity: int = DEFAULT_CAPACITY,
) -> Flash:
    """A :class:`Flash` on the image directory ``path``, or in memory when ``None``."""
    medium: Medium = MemoryMedium() if path is None else FileMedium(path)
    return Flash(medium, fault=fault, capacity=capacity)
