"""The credential list a lock holds, its canonical encoding and digest
(``docs/protocol.md`` §5).

Theory of operation: a list is the set of credentials of one door at one version.
Entries are keyed by ``(kind, credential_id)``: keycards by card UID (with the
card's 16-byte key for challenge-response), people by person id (their phones
prove themselves with a mobile credential). Each entry has a status, a validity
window and a weekly schedule (no windows = at any time).

The canonical encoding lists the entries in ascending key order; the digest is
SHA-256 over a context string and that encoding. Entries cache their own encoding
and the list keeps its key order incrementally (a few changes are placed one by one,
many by one sort), so a digest after a change costs one hash over the concatenated
entries, not a re-encode of the whole list.

Codec: :data:`EntryFormat` and :data:`ListFormat` (construct) are the normative
declaration of §5.1-5.2. Decoding, a hot path (a lock restoring its list, the cloud
reading stored entries, :func:`protocol.bundle.decode_changes`), first tries the
precompiled :mod:`struct` reader :func:`read_entry`, which *accepts only* what it
proves valid; anything else (malformed, truncated, trailing bytes, out of order)
goes to the construct path, which then raises its typed error. So the fast path
can only ever return what the declaration returns, and every refusal comes from
the declaration itself; ``tests/test_bundle_codec_speed.py`` proves the two agree.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from construct import Bytes, If, PrefixedArray, Struct, this

from ._codec import DOOR_ID_SIZE, U8, U16, U32, Bytes8, DoorId, parse_exact
from ._validate import check_bytes, check_uint, to_enum
from .codes import CredentialKind, CredentialStatus, Reason
from .errors import MalformedMessageError, TooLargeError, UsageError
from .keycard import CARD_KEY_SIZE
from .limits import DEFAULT_LIMITS, Limits

__all__ = [
    "FOREVER",
    "MAX_SCHEDULE_WINDOWS",
    "Credential",
    "CredentialKey",
    "CredentialList",
    "EntryView",
    "Window",
    "decide",
    "view_entry",
]


MAX_CREDENTIAL_ID = 16
MAX_SCHEDULE_WINDOWS = 16
FOREVER = 0xFFFFFFFF
MINUTES_PER_DAY = 1440
_DIGEST_CONTEXT = b"LK1 list\x00"

CredentialKey = tuple[int, bytes]
"""``(kind, credential_id)``: how entries are identified and ordered."""

WindowFormat = Struct("days" / U8, "start_minute" / U16, "end_minute" / U16)
EntryFormat = Struct(
    "kind" / U8,
    "credential_id" / Bytes8,
    "status" / U8,
    "valid_from" / U32,
    "valid_until" / U32,
    "schedule" / PrefixedArray(U8, WindowFormat),
    "card_key" / If(this.kind == 1, Bytes(CARD_KEY_SIZE)),  # 1 = KEYCARD,
)
_ENTRY = EntryFormat.compile()
_ENTRY_FIXED = struct.Struct(">BIIB")  # status, valid_from, valid_until, window count
_WINDOW = struct.Struct(">BHH")
ListFormat = Struct(
    "door_id" / DoorId, "version" / U32, "entries" / PrefixedArray(U32, EntryFormat)
).compile()
_LIST_HEAD = struct.Struct(f">{DOOR_ID_SIZE}sII")  # §5.2 offsets 0-23: door_id, version, count
_MIN_ENTRY = 2 + 1 + _ENTRY_FIXED.size  # §5.1: a one-byte id, no window, no card key
_KEYCARD = CredentialKind.KEYCARD.value
_KINDS: dict[int, CredentialKind] = {kind.value: kind for kind in CredentialKind}
_STATUSES: dict[int, CredentialStatus] = {status.value: status for status in CredentialStatus}
_FEW_CHANGES = 16
"""Up to this many changes (plus one per 16 entries held) are placed one by one
(:meth:`CredentialList.with_encoded_changes`)."""
_new = object.__new__
_set = object.__setattr__


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """A weekly window: on the weekdays in ``days`` (bit 0 = Monday … bit 6 = Sunday),
    from ``start_minute`` (inclusive) to ``end_minute`` (exclusive) of local time."""

    days: int
    start_minute: int
    end_minute: int

    def __post_init__(self) -> None:
        if not 1 <= self.days <= 0x7F:
            raise UsageError(f"window days must be a non-empty 7-bit mask; got {self.days!r}")
        if not 0 <= self.start_minute < self.end_minute <= MINUTES_PER_DAY:
            raise UsageError("window needs 0 <= start_minute < end_minute <= 1440")

    def contains(self, weekday: int, minute: int) -> bool:
        """True when local ``weekday`` (0 = Monday) and ``minute`` of day fall inside."""
        return bool(self.days >> weekday & 1) and self.start_minute <= minute < self.end_minute


@dataclass(frozen=True, kw_only=True)
class Credential:
    """One list entry. ``card_key`` is required for keycards and empty for people."""

    kind: CredentialKind
    credential_id: bytes
    status: CredentialStatus = CredentialStatus.ACTIVE
    valid_from: int = 0
    valid_until: int = FOREVER
    schedule: tuple[Window, ...] = ()
    card_key: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", to_enum(CredentialKind, "kind", self.kind))
        object.__setattr__(self, "status", to_enum(CredentialStatus, "status", self.status))
        check_bytes("credential_id", self.credential_id, max_size=MAX_CREDENTIAL_ID)
        if not self.credential_id:
            raise UsageError("credential_id must not be empty")
        check_uint("valid_from", self.valid_from, 32)
        check_uint("valid_until", self.valid_until, 32)
        if self.valid_until <= self.valid_from:
            raise UsageError("valid_until must be after valid_from")
        object.__setattr__(self, "schedule", tuple(self.schedule))
        if len(self.schedule) > MAX_SCHEDULE_WINDOWS:
            raise UsageError(f"at most {MAX_SCHEDULE_WINDOWS} schedule windows per credential")
        want = CARD_KEY_SIZE if self.kind is CredentialKind.KEYCARD else 0
        check_bytes("card_key", self.card_key, size=want)

    def __repr__(self) -> str:
        return (
            f"Credential({self.kind.name}, {self.credential_id.hex()}, {self.status.name}, "
            f"{self.valid_from}..{self.valid_until}, {len(self.schedule)} windows)"
        )

    @property
    def key(self) -> CredentialKey:
        """The entry's identity ``(kind, credential_id)``."""
        return (int(self.kind), self.credential_id)

    @cached_property
    def encoded(self) -> bytes:
        """The canonical encoding of this entry (§5.2).

        Packed with ``struct`` (the sync engine's hot path); a property test checks it
        against :data:`EntryFormat`, the normative declaration.
        """
        parts = [
            bytes((self.kind, len(self.credential_id))),
            self.credential_id,
            _ENTRY_FIXED.pack(self.status, self.valid_from, self.valid_until, len(self.schedule)),
        ]
        parts += [_WINDOW.pack(w.days, w.start_minute, w.end_minute) for w in self.schedule]
        parts.append(self.card_key)  # empty unless a keycard
        return b"".join(parts)

    def to_container(self) -> dict[str, Any]:
        """The field dictionary the construct declaration builds from."""
        return {
            "kind": self.kind,
            "credential_id": self.credential_id,
            "status": self.status,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "schedule": [_window_dict(w) for w in self.schedule],
            "card_key": self.card_key or None,
        }

    @classmethod
    def from_encoded(cls, blob: bytes) -> Credential:
        """Decode an entry this package encoded (fast path for stored entries).

        For bytes from outside, parse a whole list or delta instead: those go
        through the construct declaration and its bounds. A valid, exact entry is
        read by :func:`read_entry`; any other blob takes :meth:`_from_encoded_slow`
        (the validating constructor), so the result or the exception is the same
        either way.
        """
        read = read_entry(blob, 0) if cls is Credential and type(blob) is bytes else None
        if read is None or read[1] != len(blob):
            return cls._from_encoded_slow(blob)
        return read[0]

    @classmethod
    def _from_encoded_slow(cls, blob: bytes) -> Credential:
        """:meth:`from_encoded` through the validating constructor, for any blob."""
        kind, size = blob[0], blob[1]
        at = 2 + size
        status, valid_from, valid_until, count = _ENTRY_FIXED.unpack_from(blob, at)
        at += _ENTRY_FIXED.size
        windows = tuple(
            Window(days=d, start_minute=s, end_minute=e)
            for d, s, e in _WINDOW.iter_unpack(blob[at : at + 5 * count])
        )
        at += 5 * count
        entry = cls(
            kind=CredentialKind(kind),
            credential_id=blob[2 : 2 + size],
            status=CredentialStatus(status),
            valid_from=valid_from,
            valid_until=valid_until,
            schedule=windows,
            card_key=blob[at : at + CARD_KEY_SIZE] if kind == CredentialKind.KEYCARD else b"",
        )
        entry.__dict__["encoded"] = blob
        return entry

    @classmethod
    def from_container(cls, c: Any) -> Credential:
        """Build from a parsed construct container (raises :class:`UsageError`)."""
        windows = tuple(
            Window(days=w.days, start_minute=w.start_minute, end_minute=w.end_minute)
            for w in c["schedule"]
        )
        return cls(
            kind=c["kind"],
            credential_id=c["credential_id"],
            status=c["status"],
            valid_from=c["valid_from"],
            valid_until=c["valid_until"],
            schedule=windows,
            card_key=c["card_key"] or b"",
        )

    def decide(self, now: int, *, utc_offset_minutes: int = 0) -> Reason:
        """The access decision for this entry at lock time ``now`` (§5.3)."""
        windows = tuple((w.days, w.start_minute, w.end_minute) for w in self.schedule)
        return decide(
            self.status, self.valid_from, self.valid_until, windows, now, utc_offset_minutes
        )


def decide(
    status: int,
    valid_from: int,
    valid_until: int,
    schedule: tuple[tuple[int, int, int], ...],
    now: int,
    utc_offset_minutes: int,
) -> Reason:
    """§5.3, in order: revoked, not yet valid, expired, outside every schedule window."""
    if status == CredentialStatus.REVOKED:
        return Reason.REVOKED
    if now < valid_from:
        return Reason.NOT_YET_VALID
    if now >= valid_until:
        return Reason.EXPIRED
    if schedule and not _in_schedule(schedule, now + utc_offset_minutes * 60):
        return Reason.OUTSIDE_SCHEDULE
    return Reason.GRANTED


def _in_schedule(schedule: tuple[tuple[int, int, int], ...], local: int) -> bool:
    weekday = (local // 86400 + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
    minute = local % 86400 // 60
    return any(days >> weekday & 1 and start <= minute < end for days, start, end in schedule)


class EntryView(NamedTuple):
    """A stored entry's fields, read without validation (the hot path of a card check)."""

    kind: int
    credential_id: bytes
    status: int
    valid_from: int
    valid_until: int
    schedule: tuple[tuple[int, int, int], ...]
    card_key: bytes

    def decide(self, now: int, *, utc_offset_minutes: int = 0) -> Reason:
        """The access decision for this entry at lock time ``now`` (§5.3)."""
        return decide(
            self.status, self.valid_from, self.valid_until, self.schedule, now, utc_offset_minutes
        )


def view_entry(blob: bytes) -> EntryView:
    """Read a canonical entry encoding this package produced (no checks)."""
    kind, size = blob[0], blob[1]
    at = 2 + size
    status, valid_from, valid_until, count = _ENTRY_FIXED.unpack_from(blob, at)
    end = at + _ENTRY_FIXED.size + 5 * count
    schedule = tuple(_WINDOW.iter_unpack(blob[end - 5 * count : end])) if count else ()
    card_key = blob[end : end + CARD_KEY_SIZE] if kind == _KEYCARD else b""
    fields = (kind, blob[2:at], status, valid_from, valid_until, schedule, card_key)
    return _new_view(EntryView, fields)  # EntryView(*fields), without its Python __new__


_KIND_BYTES = {kind: bytes((kind,)) for kind in CredentialKind}
"""Each kind as the one-byte prefix of its entries' keys."""
_new_view = tuple.__new__


def read_entry(data: bytes, at: int) -> tuple[Credential, int] | None:
    """The §5.1 entry starting at ``data[at]`` and where it ends, if it is valid; else None.

    Valid means :data:`EntryFormat` parses it within ``data`` and
    :meth:`Credential.from_container` accepts the result: a known kind and status,
    a 1-16 byte id, ``valid_until > valid_from``, at most 16 windows, each with a
    non-empty 7-bit day mask and ``start < end <= 1440``. The credential is then
    equal to the one that path builds; it is made without the constructor's
    (redundant) checks, and caches its exact wire bytes as :attr:`Credential.encoded`.
    Never raises.
    """
    limit = len(data)
    if at < 0 or at + _MIN_ENTRY > limit:
        return None
    kind, size = data[at], data[at + 1]
    fixed = at + 2 + size
    if fixed + _ENTRY_FIXED.size > limit:
        return None
    status, valid_from, valid_until, count = _ENTRY_FIXED.unpack_from(data, fixed)
    windows = fixed + _ENTRY_FIXED.size
    card_key = windows + 5 * count
    end = card_key + CARD_KEY_SIZE if kind == _KEYCARD else card_key
    if (
        kind not in _KINDS
        or status not in _STATUSES
        or not 0 < size <= MAX_CREDENTIAL_ID
        or valid_until <= valid_from
        or count > MAX_SCHEDULE_WINDOWS
        or end > limit
    ):
        return None
    schedule = _read_schedule(data[windows:card_key]) if count else ()
    if schedule is None:
        return None
    entry = _new(Credential)
    entry.__dict__.update(
        {
            "kind": _KINDS[kind],
            "credential_id": data[at + 2 : fixed],
            "status": _STATUSES[status],
            "valid_from": valid_from,
            "valid_until": valid_until,
            "schedule": schedule,
            "card_key": data[card_key:end],  # 16 bytes for a keycard, else empty
            "encoded": data[at:end],
        }
    )
    return entry, end


def _read_schedule(packed: bytes) -> tuple[Window, ...] | None:
    """The windows packed in ``packed`` if each is valid (see :class:`Window`), else None."""
    windows = []
    for days, start, stop in _WINDOW.iter_unpack(packed):
        if not (0 < days <= 0x7F and start < stop <= MINUTES_PER_DAY):
            return None
        windows.append(_window(days, start, stop))
    return tuple(windows)


def _window(days: int, start_minute: int, end_minute: int) -> Window:
    """A :class:`Window` from values :func:`read_entry` checked, bypassing ``__init__``."""
    window = _new(Window)
    _set(window, "days", days)
    _set(window, "start_minute", start_minute)
    _set(window, "end_minute", end_minute)
    return window


def _window_dict(w: Window) -> dict[str, int]:
    return {"days": w.days, "start_minute": w.start_minute, "end_minute": w.end_minute}


def key_bytes(key: CredentialKey) -> bytes:
    """``(kind, credential_id)`` as one byte string that sorts the same way."""
    return bytes((key[0],)) + key[1]


@dataclass(frozen=True, eq=False)
class CredentialList(Mapping[CredentialKey, Credential]):
    """An immutable credential list of one door at one version (§5).

    Entries are held as their canonical encodings (about 100 bytes of memory
    per keycard) and decoded on access, so a lock with 10,000 credentials stays
    small; keys are ``key_bytes`` strings, whose byte order is the key order.
    """

    door_id: bytes
    version: int
    _blobs: dict[bytes, bytes] = field(repr=False)
    _order: list[bytes] = field(repr=False)
    _sorted_blobs: list[bytes] = field(repr=False)

    @classmethod
    def build(
        cls, *, door_id: bytes, version: int, entries: Iterable[Credential] = ()
    ) -> CredentialList:
        """Make a list; duplicate keys are a :class:`UsageError`."""
        check_bytes("door_id", door_id, size=DOOR_ID_SIZE)
        check_uint("version", version, 32)
        blobs: dict[bytes, bytes] = {}
        for entry in entries:
            key = key_bytes(entry.key)
            if key in blobs:
                raise UsageError(f"duplicate credential {entry.key!r}")
            blobs[key] = entry.encoded
        order = sorted(blobs)
        return cls(door_id, version, blobs, order, [blobs[k] for k in order])

    @classmethod
    def from_encoded_entries(
        cls, *, door_id: bytes, version: int, entries: Iterable[bytes]
    ) -> CredentialList:
        """Make a list from stored canonical entry encodings (trusted, e.g. from a database)."""
        check_bytes("door_id", door_id, size=DOOR_ID_SIZE)
        check_uint("version", version, 32)
        blobs = {blob[:1] + blob[2 : 2 + blob[1]]: blob for blob in entries}
        order = sorted(blobs)
        return cls(door_id, version, blobs, order, [blobs[k] for k in order])

    @classmethod
    def empty(cls, door_id: bytes) -> CredentialList:
        """The list a freshly provisioned lock starts with: version 0, no entries."""
        return cls.build(door_id=door_id, version=0)

    def __getitem__(self, key: CredentialKey) -> Credential:
        return Credential.from_encoded(self._blobs[key_bytes(key)])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and key_bytes(key) in self._blobs

    def __iter__(self) -> Iterator[CredentialKey]:
        return ((k[0], k[1:]) for k in self._order)

    def __len__(self) -> int:
        return len(self._blobs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CredentialList):
            return NotImplemented
        return (self.door_id, self.version, self._blobs) == (
            other.door_id,
            other.version,
            other._blobs,
        )

    __hash__ = None  # type: ignore[assignment]

    def view(self, kind: CredentialKind, credential_id: bytes) -> EntryView | None:
        """O(1) lookup of one entry as a light, read-only view (no validation)."""
        blob = self._blobs.get((_KIND_BYTES.get(kind) or bytes((kind,))) + credential_id)
        return None if blob is None else view_entry(blob)

    def lookup(self, kind: CredentialKind, credential_id: bytes) -> Credential | None:
        """O(1) lookup of one entry, decoded."""
        blob = self._blobs.get(bytes((kind,)) + credential_id)
        return None if blob is None else Credential.from_encoded(blob)

    def with_changes(
        self, *, version: int, upserts: Iterable[Credential], removals: Iterable[CredentialKey]
    ) -> CredentialList:
        """A new list at ``version`` with entries replaced, added and removed (removals
        first, then upserts in order: the last upsert of a key wins)."""
        return self.with_encoded_changes(
            version=version,
            upserts=[entry.encoded for entry in upserts],
            removals=[key_bytes(key) for key in removals],
        )

    def with_encoded_changes(
        self, *, version: int, upserts: list[bytes], removals: list[bytes]
    ) -> CredentialList:
        """:meth:`with_changes` from canonical entry encodings this package made (trusted,
        as in :meth:`from_encoded_entries`) and removed keys as :func:`key_bytes`.

        A few changes are placed one by one in the key order (a bisection each); many
        are applied to the entries first and the order is sorted once (the old order is
        one sorted run, so the sort is a merge)."""
        check_uint("version", version, 32)
        if len(upserts) + len(removals) <= _FEW_CHANGES + (len(self._order) >> 4):
            return self._with_few(version, upserts, removals)
        return self._with_many(version, upserts, removals)

    def _with_many(
        self, version: int, upserts: list[bytes], removals: list[bytes]
    ) -> CredentialList:
        blobs = dict(self._blobs)
        reordered = False
        for key in removals:
            reordered |= blobs.pop(key, None) is not None
        for blob in upserts:
            key = blob[:1] + blob[2 : 2 + blob[1]]  # key_bytes of the entry
            reordered |= key not in blobs
            blobs[key] = blob
        order = sorted(blobs) if reordered else self._order
        return CredentialList(self.door_id, version, blobs, order, [*map(blobs.__getitem__, order)])

    def _with_few(
        self, version: int, upserts: list[bytes], removals: list[bytes]
    ) -> CredentialList:
        blobs, order, ordered = dict(self._blobs), list(self._order), list(self._sorted_blobs)
        for key in removals:
            if blobs.pop(key, None) is not None:
                at = bisect.bisect_left(order, key)
                del order[at], ordered[at]
        for blob in upserts:
            key = blob[:1] + blob[2 : 2 + blob[1]]
            at = bisect.bisect_left(order, key)
            if key not in blobs:
                order.insert(at, key)
                ordered.insert(at, blob)
            else:
                ordered[at] = blob
            blobs[key] = blob
        return CredentialList(self.door_id, version, blobs, order, ordered)

    def to_bytes(self) -> bytes:
        """The canonical encoding (§5.2): the bytes :data:`ListFormat` builds (a property
        test checks it), from the cached entry encodings and a ``struct``-packed header."""
        head = _LIST_HEAD.pack(self.door_id, self.version, len(self._blobs))
        return b"".join([head, *self._sorted_blobs])

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 over the context string and the canonical encoding (§5.2)."""
        return hashlib.sha256(_DIGEST_CONTEXT + self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> CredentialList:
        """Parse a canonical encoding; unsorted or repeated entries are malformed.

        Input the ``struct`` reader proves valid is taken as is; anything else goes
        through the construct declaration, which raises the typed error.
        """
        held = cls._from_valid_bytes(data, limits.max_list_entries)
        return cls._from_bytes_declared(data, limits) if held is None else held

    @classmethod
    def _from_valid_bytes(cls, data: bytes, max_entries: int) -> CredentialList | None:
        """The list ``data`` encodes if it is provably valid, else ``None`` (never raises).

        Allocates nothing beyond the input's size: the count is checked against
        ``max_entries`` and against the bytes present before any entry is read.
        """
        if type(data) is not bytes or len(data) < _LIST_HEAD.size:
            return None
        door_id, version, count = _LIST_HEAD.unpack_from(data)
        at = _LIST_HEAD.size
        if count > max_entries or count * _MIN_ENTRY > len(data) - at:
            return None
        blobs: dict[bytes, bytes] = {}
        order: list[bytes] = []
        previous = b""  # below every key
        for _ in range(count):
            read = read_entry(data, at)
            if read is None:
                return None
            entry, end = read
            key = data[at : at + 1] + entry.credential_id  # key_bytes(entry.key)
            if key <= previous:  # key_bytes order is key order (§5.2)
                return None
            blobs[key] = entry.encoded
            order.append(key)
            previous, at = key, end
        if at != len(data):
            return None
        return cls(door_id, version, blobs, order, list(blobs.values()))

    @classmethod
    def _from_bytes_declared(cls, data: bytes, limits: Limits) -> CredentialList:
        """:meth:`from_bytes` through the construct declaration (the reference path)."""
        if len(data) >= 24 and int.from_bytes(data[20:24], "big") > limits.max_list_entries:
            raise TooLargeError(f"credential list holds over {limits.max_list_entries} entries")
        c = parse_exact(ListFormat, data, "credential list")
        try:
            entries = [Credential.from_container(e) for e in c.entries]
        except UsageError as exc:
            raise MalformedMessageError(f"credential list: {exc}") from None
        keys = [e.key for e in entries]
        if any(a >= b for a, b in itertools.pairwise(keys)):
            raise MalformedMessageError("credential list entries are not in strict key order")
        return cls.build(door_id=c.door_id, version=c.version, entries=entries)
