"""The fast change-list, entry and list decoders agree with the construct declarations.

Theory of operation: ``protocol/bundle.py`` and ``protocol/credential_list.py`` declare
the §5.1, §5.2 and §6.2.1 layouts once with construct (:data:`EntryFormat`,
:data:`ListFormat`, :data:`ChangesFormat`) and decode with a precompiled :mod:`struct`
reader that *accepts only* what it proves valid; anything else goes to the construct
path (``_declared_changes``, ``CredentialList._from_bytes_declared``), which raises.
These properties pin the fast path to the declaration:

* decode: for valid and malformed input alike, :func:`decode_changes`,
  :meth:`CredentialList.from_bytes` and :meth:`Credential.from_encoded` give the same
  result (the same field values, of the same types, and the same cached encodings) as
  the reference path, or raise the same error class with the same message and fields;
* the fast reader takes every valid input (so valid input never pays twice) and no
  invalid one (its ``None`` is exactly the reference's refusal);
* encode: the list header packed with :mod:`struct` is what the declaration builds.

Malformed input is built by hand with ``int.to_bytes`` from raw field values (unknown
ops, kinds and statuses, ids of 0 or over 16 bytes, bad windows, too many windows,
empty validity, a card key where the layout has none, wrong counts, unsorted and
repeated keys, truncation, trailing bytes, counts over the limit), and also drawn as
arbitrary bytes and as one changed byte of a valid encoding.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, cast

from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol import DEFAULT_LIMITS, Credential, CredentialKind, CredentialList, Limits
from protocol._codec import _StrictStream
from protocol.bundle import (
    OP_REMOVE,
    OP_UPSERT,
    Change,
    ChangesFormat,
    Remove,
    Upsert,
    _declared_changes,
    _valid_changes,
    decode_changes,
    encode_changes,
)
from protocol.credential_list import EntryFormat, ListFormat, Window, read_entry
from protocol.errors import ProtocolError, TooLargeError, TruncatedError
from tests.strategies import U32_MAX, change_lists, credential_lists, credentials, door_ids

SLOW = settings(max_examples=300, deadline=None)


# --- comparable outcomes ------------------------------------------------------------------


def typed(value: Any) -> Any:
    """``value`` with the type of every field spelled out (an IntEnum equals its int)."""
    if isinstance(value, tuple):
        return tuple(typed(v) for v in value)
    if isinstance(value, Credential):
        value.encoded  # noqa: B018 - fill the cache on both sides before comparing
        fields = sorted(vars(value).items())
        return (type(value), [(k, typed(v)) for k, v in fields])
    if isinstance(value, Upsert):
        return (Upsert, typed(value.credential))
    if isinstance(value, Remove):
        return (Remove, typed(value.kind), typed(value.credential_id))
    if isinstance(value, Window):
        return (type(value), [(s, typed(getattr(value, s))) for s in value.__slots__])
    return (type(value), value)


def outcome(parse: Callable[[], Any]) -> tuple[Any, ...]:
    """A comparable summary of a parse: the typed result, or the error and its fields."""
    try:
        result = parse()
    except ProtocolError as exc:
        return ("error", type(exc), str(exc), vars(exc))
    if isinstance(result, CredentialList):
        held = (result.door_id, result.version, result._blobs, result._order)
        return ("ok", held, result._sorted_blobs, result.to_bytes(), typed(tuple(result.values())))
    return ("ok", typed(result))


def assert_same_changes(plaintext: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, ...]:
    """Fast and construct change-list decoders agree on ``plaintext``; return the outcome."""
    fast = outcome(lambda: decode_changes(plaintext, limits=limits))
    reference = outcome(lambda: _declared_changes(plaintext, limits))
    assert fast == reference
    # The fast reader accepts exactly the valid inputs: no double work, no fail-open.
    accepted = _valid_changes(plaintext, limits.max_list_entries)
    assert (accepted is not None) == (reference[0] == "ok")
    return fast


def assert_same_list(data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, ...]:
    """Fast and construct list decoders agree on ``data``; return the outcome."""
    fast = outcome(lambda: CredentialList.from_bytes(data, limits=limits))
    reference = outcome(lambda: CredentialList._from_bytes_declared(data, limits))
    assert fast == reference
    accepted = CredentialList._from_valid_bytes(data, limits.max_list_entries)
    assert (accepted is not None) == (reference[0] == "ok")
    return fast


def any_outcome(parse: Callable[[], Any]) -> tuple[Any, ...]:
    """Like :func:`outcome`, for the trusted-input decoder, which may raise anything."""
    try:
        return ("ok", typed(parse()))
    except Exception as exc:  # comparing exactly what each path raises
        return ("error", type(exc), str(exc))


def declared_entry(data: bytes) -> tuple[Credential, int] | None:
    """What the declaration reads as the entry at the start of ``data``, and where it
    ends; None if it refuses (truncated, or a field the constructor rejects)."""
    stream = _StrictStream(data)
    try:
        return Credential.from_container(EntryFormat.parse_stream(stream)), stream.tell()
    except Exception:  # any refusal
        return None


def typed_read(read: tuple[Credential, int] | None) -> Any:
    return None if read is None else (typed(read[0]), read[1])


# --- raw, possibly invalid, encodings -----------------------------------------------------

KINDS = st.sampled_from([1, 2, 1, 2, 0, 3, 255])
STATUSES = st.sampled_from([1, 2, 1, 2, 0, 3, 255])
ENTRY_FAULTS = ("none", "kind", "status", "id", "validity", "window", "windows", "card key")
BAD_WINDOWS = [
    (0, 0, 1),  # empty day mask
    (0x80, 0, 1),  # bit 7
    (1, 5, 5),  # empty range
    (1, 6, 5),  # reversed
    (1, 0, 1441),  # past midnight
    (0x7F, 1440, 0xFFFF),
]


@st.composite
def raw_window(draw: st.DrawFn, *, bad: bool) -> bytes:
    if bad:
        days, start, end = draw(st.sampled_from(BAD_WINDOWS))
    else:
        start = draw(st.integers(0, 1439))
        days, end = draw(st.integers(1, 0x7F)), draw(st.integers(start + 1, 1440))
    return bytes([days]) + start.to_bytes(2, "big") + end.to_bytes(2, "big")


@st.composite
def raw_entry(draw: st.DrawFn, fault: str = "none") -> tuple[int, bytes, bytes]:
    """One §5.1 entry from raw values, with at most the named fault: (kind, id, bytes)."""
    kind = draw(st.sampled_from([0, 3, 255]) if fault == "kind" else st.sampled_from([1, 2]))
    status = draw(st.sampled_from([0, 3, 255]) if fault == "status" else st.sampled_from([1, 2]))
    size = draw(st.sampled_from([0, 17, 40]) if fault == "id" else st.integers(1, 16))
    credential_id = draw(st.binary(min_size=size, max_size=size))
    valid_from = draw(st.integers(0, U32_MAX - 1))
    valid_until = (
        draw(st.integers(0, valid_from))
        if fault == "validity"
        else draw(st.integers(valid_from + 1, U32_MAX))
    )
    count = draw(st.integers(17, 20) if fault == "windows" else st.integers(0, 3))
    bad = draw(st.integers(0, count - 1)) if fault == "window" and count else -1
    windows = b"".join(draw(raw_window(bad=i == bad)) for i in range(count))
    has_key = (kind == 1) != (fault == "card key")  # the fault: a key where none belongs
    card_key = draw(st.binary(min_size=16, max_size=16)) if has_key else b""
    blob = b"".join(
        [
            bytes([kind, size]),
            credential_id,
            bytes([status]),
            valid_from.to_bytes(4, "big"),
            valid_until.to_bytes(4, "big"),
            bytes([count]),
            windows,
            card_key,
        ]
    )
    return kind, credential_id, blob


@st.composite
def raw_change(draw: st.DrawFn, fault: str) -> tuple[tuple[int, bytes], bytes]:
    """One §6.2.1 change, possibly with a fault: (its key, its bytes)."""
    op = draw(st.sampled_from([0, 3, 255])) if fault == "op" else draw(st.sampled_from([1, 2]))
    if op == OP_REMOVE:
        kind = draw(st.sampled_from([0, 3]) if fault == "kind" else st.sampled_from([1, 2]))
        size = draw(st.sampled_from([0, 17, 255]) if fault == "id" else st.integers(1, 16))
        credential_id = draw(st.binary(min_size=size, max_size=size))
        return (kind, credential_id), bytes([op, kind, size]) + credential_id
    kind, credential_id, blob = draw(raw_entry(fault if fault in ENTRY_FAULTS else "none"))
    return (kind, credential_id), bytes([op]) + blob


LIST_FAULTS = ("count", "unsorted", "repeated", "cut", "trailing")
CHANGE_FAULTS = ("op", "kind", "id", *ENTRY_FAULTS[2:])


@st.composite
def raw_change_lists(draw: st.DrawFn) -> bytes:
    """A change-list plaintext with up to two faults, in the changes or in the list."""
    faults = draw(st.sets(st.sampled_from(("none", *LIST_FAULTS, *CHANGE_FAULTS)), max_size=2))
    count = draw(st.integers(0, 6))
    bad = draw(st.integers(0, max(count - 1, 0)))
    change_fault = next((f for f in CHANGE_FAULTS if f in faults), "none")
    drawn = [draw(raw_change(change_fault if i == bad else "none")) for i in range(count)]
    changes = sorted(dict(drawn).items())  # canonical: unique keys in order, unless a fault
    if changes and "repeated" in faults:
        at = draw(st.integers(0, len(changes) - 1))
        changes.insert(at, changes[at])
    if len(changes) > 1 and "unsorted" in faults:
        changes = draw(st.permutations(changes))
    announced = draw(st.integers(0, U32_MAX)) if "count" in faults else len(changes)
    data = announced.to_bytes(4, "big") + b"".join(body for _, body in changes)
    if "cut" in faults:
        data = data[: draw(st.integers(0, len(data) - 1))]
    if "trailing" in faults:
        data += draw(st.binary(min_size=1, max_size=40))
    return data


@st.composite
def raw_lists(draw: st.DrawFn) -> bytes:
    """A §5.2 list encoding with up to two faults in its entries or its framing."""
    faults = draw(st.sets(st.sampled_from(("none", *LIST_FAULTS, *ENTRY_FAULTS[1:])), max_size=2))
    count = draw(st.integers(0, 6))
    bad = draw(st.integers(0, max(count - 1, 0)))
    entry_fault = next((f for f in ENTRY_FAULTS if f in faults), "none")
    drawn = [draw(raw_entry(entry_fault if i == bad else "none")) for i in range(count)]
    entries = sorted({(kind, cid): blob for kind, cid, blob in drawn}.items())
    if entries and "repeated" in faults:
        at = draw(st.integers(0, len(entries) - 1))
        entries.insert(at, entries[at])
    if len(entries) > 1 and "unsorted" in faults:
        entries = draw(st.permutations(entries))
    announced = draw(st.integers(0, U32_MAX)) if "count" in faults else len(entries)
    head = draw(door_ids) + draw(st.integers(0, U32_MAX)).to_bytes(4, "big")
    data = head + announced.to_bytes(4, "big") + b"".join(blob for _, blob in entries)
    if "cut" in faults:
        data = data[: draw(st.integers(0, len(data) - 1))]
    if "trailing" in faults:
        data += draw(st.binary(min_size=1, max_size=40))
    return data


small_limits = st.builds(Limits, max_list_entries=st.integers(0, 8))


# --- entries ------------------------------------------------------------------------------


@SLOW
@given(entry=credentials())
def test_valid_entries_read_like_the_declaration(entry: Credential) -> None:
    blob = bytes(EntryFormat.build(entry.to_container()))
    assert blob == entry.encoded
    read = read_entry(b"\x00" + blob + b"\x00", 1)
    assert read is not None
    assert read[1] == 1 + len(blob)
    assert typed(read[0]) == typed(entry)
    assert typed_read(read_entry(blob, 0)) == typed_read(declared_entry(blob))
    assert read[0].encoded == blob


@SLOW
@given(raw=st.sampled_from(ENTRY_FAULTS).flatmap(raw_entry), cut=st.integers(0, 200))
def test_read_entry_accepts_exactly_what_the_declaration_accepts(
    raw: tuple[int, bytes, bytes], cut: int
) -> None:
    blob = raw[2]
    for data in (blob, blob[:cut], blob + b"\x01", blob + blob):
        assert typed_read(read_entry(data, 0)) == typed_read(declared_entry(data))


@SLOW
@given(data=st.binary(max_size=80))
def test_read_entry_judges_garbage_like_the_declaration(data: bytes) -> None:
    assert typed_read(read_entry(data, 0)) == typed_read(declared_entry(data))


@SLOW
@given(raw=st.sampled_from(ENTRY_FAULTS).flatmap(raw_entry), cut=st.integers(0, 200))
@example(raw=(1, b"", b""), cut=0).via("empty blob")
@example(raw=(1, b"", b"\x01"), cut=1).via("one byte")
def test_from_encoded_returns_or_raises_as_before(raw: tuple[int, bytes, bytes], cut: int) -> None:
    for blob in (raw[2], raw[2][:cut], raw[2] + b"\x01\x02", cast(bytes, bytearray(raw[2]))):
        fast = any_outcome(partial(Credential.from_encoded, blob))
        assert fast == any_outcome(partial(Credential._from_encoded_slow, blob))


@SLOW
@given(entry=credentials())
def test_from_encoded_of_stored_entries(entry: Credential) -> None:
    decoded = Credential.from_encoded(entry.encoded)
    assert typed(decoded) == typed(entry) == typed(Credential._from_encoded_slow(entry.encoded))
    assert hash(decoded) == hash(entry)


# --- change lists -------------------------------------------------------------------------


@SLOW
@given(changes=change_lists(max_size=12))
def test_valid_change_lists_decode_identically(changes: list[Change]) -> None:
    plaintext = encode_changes(changes)
    ordered = sorted(changes, key=lambda c: c.key)
    declared = {"changes": [_declared_change(c) for c in ordered]}
    assert plaintext == ChangesFormat.build(declared)
    result = assert_same_changes(plaintext)
    assert result == ("ok", typed(tuple(ordered)))
    decoded = decode_changes(plaintext)
    assert encode_changes(decoded) == plaintext
    assert [c.credential.encoded for c in decoded if isinstance(c, Upsert)] == [
        c.credential.encoded for c in ordered if isinstance(c, Upsert)
    ]


def _declared_change(change: Change) -> dict[str, Any]:
    if isinstance(change, Upsert):
        return {"op": OP_UPSERT, "body": change.credential.to_container()}
    return {"op": OP_REMOVE, "body": {"kind": change.kind, "credential_id": change.credential_id}}


@SLOW
@given(plaintext=raw_change_lists(), limits=st.one_of(st.just(DEFAULT_LIMITS), small_limits))
@example(plaintext=b"", limits=DEFAULT_LIMITS).via("empty")
@example(plaintext=b"\x00\x00\x00", limits=DEFAULT_LIMITS).via("short count")
@example(plaintext=bytes(4), limits=DEFAULT_LIMITS).via("no changes")
@example(plaintext=b"\x00\x00\x00\x01\x03", limits=DEFAULT_LIMITS).via("unknown op")
@example(plaintext=b"\x00\x00\x00\x02\x03\x02\x01\x00\x01x", limits=DEFAULT_LIMITS).via(
    "unknown op, then a valid removal"
)
@example(plaintext=b"\x00\x00\x00\x01\x02\x01\x00", limits=DEFAULT_LIMITS).via("empty id")
@example(plaintext=b"\x00\x00\x00\x02\x02\x01\x00\x02\x01\x01x", limits=DEFAULT_LIMITS).via(
    "empty id, then a valid removal"
)
@example(plaintext=b"\x00\x00\x00\x02\x02\x01\x01x\x02\x01\x01x", limits=DEFAULT_LIMITS).via(
    "a repeated removal"
)
def test_malformed_change_lists_are_refused_identically(plaintext: bytes, limits: Limits) -> None:
    assert_same_changes(plaintext, limits)


@SLOW
@given(plaintext=st.binary(max_size=120))
def test_arbitrary_bytes_are_refused_identically(plaintext: bytes) -> None:
    assert_same_changes(plaintext)
    assert_same_changes(b"\x00\x00\x00\x01" + plaintext)


@SLOW
@given(changes=change_lists(max_size=4), position=st.integers(0, 10_000), data=st.data())
def test_a_changed_byte_is_judged_identically(
    changes: list[Change], position: int, data: st.DataObject
) -> None:
    plaintext = bytearray(encode_changes(changes))
    position %= len(plaintext)
    plaintext[position] = data.draw(st.integers(0, 255))
    assert_same_changes(bytes(plaintext))


@SLOW
@given(changes=change_lists(max_size=4), cut=st.integers(0, 10_000), extra=st.binary(max_size=9))
def test_truncated_and_extended_change_lists_are_judged_identically(
    changes: list[Change], cut: int, extra: bytes
) -> None:
    plaintext = encode_changes(changes)
    assert_same_changes(plaintext[: cut % (len(plaintext) + 1)])
    assert_same_changes(plaintext + extra)


def test_too_many_changes_are_refused_before_anything_is_read() -> None:
    limits = Limits(max_list_entries=2)
    three = encode_changes([Remove(CredentialKind.KEYCARD, bytes([i])) for i in range(3)])
    assert assert_same_changes(three, limits)[1] is TooLargeError
    # A count at the limit over too few bytes is truncated, decided without reading.
    at_limit = DEFAULT_LIMITS.max_list_entries.to_bytes(4, "big") + b"\x02\x01\x01x"
    assert assert_same_changes(at_limit)[1] is TruncatedError
    assert _valid_changes(at_limit, DEFAULT_LIMITS.max_list_entries) is None


def test_other_buffer_types_take_the_declared_path() -> None:
    plaintext = encode_changes([Remove(CredentialKind.PERSON, b"p")])
    for buffer in (cast(bytes, bytearray(plaintext)), cast(bytes, memoryview(plaintext))):
        fast = outcome(partial(decode_changes, buffer))
        assert fast == outcome(partial(_declared_changes, buffer, DEFAULT_LIMITS))
        assert fast[0] == "ok"


# --- whole lists --------------------------------------------------------------------------


@SLOW
@given(held=credential_lists(max_entries=12))
def test_list_encoding_matches_declaration_and_decodes_identically(
    held: CredentialList,
) -> None:
    encoded = held.to_bytes()
    declared = {
        "door_id": held.door_id,
        "version": held.version,
        "entries": [held[key].to_container() for key in held],
    }
    assert encoded == ListFormat.build(declared)
    result = assert_same_list(encoded)
    assert result[0] == "ok"
    decoded = CredentialList.from_bytes(encoded)
    assert decoded == held and decoded.digest == held.digest
    assert decoded._order == held._order and decoded._sorted_blobs == held._sorted_blobs


@SLOW
@given(data=raw_lists(), limits=st.one_of(st.just(DEFAULT_LIMITS), small_limits))
@example(data=bytes(23), limits=DEFAULT_LIMITS).via("short header")
@example(data=bytes(24), limits=DEFAULT_LIMITS).via("empty list")
def test_malformed_lists_are_refused_identically(data: bytes, limits: Limits) -> None:
    assert_same_list(data, limits)


@SLOW
@given(held=credential_lists(max_entries=4), position=st.integers(0, 10_000), data=st.data())
def test_a_changed_list_byte_is_judged_identically(
    held: CredentialList, position: int, data: st.DataObject
) -> None:
    encoded = bytearray(held.to_bytes())
    position %= len(encoded)
    encoded[position] = data.draw(st.integers(0, 255))
    assert_same_list(bytes(encoded))
    assert_same_list(bytes(encoded[:position]))


@SLOW
@given(body=st.binary(max_size=120), door_id=door_ids)
def test_arbitrary_list_bodies_are_refused_identically(body: bytes, door_id: bytes) -> None:
    assert_same_list(body)
    assert_same_list(door_id + bytes(4) + (1).to_bytes(4, "big") + body)
