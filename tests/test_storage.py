"""The lock's flash store: round trips, power cuts at every write, corrupt images, bounds.

Theory of operation: expected states are computed here from the list of operations
alone (a snapshot and the transactions after it), never from the store; expected
bytes are built by hand with ``int.to_bytes`` and ``zlib.crc32``. Every scenario runs
on both media (a directory of files and memory). A "reboot" is a new :class:`Flash`
on the same medium, without the fault.
"""

from __future__ import annotations

import contextlib
import itertools
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.storage import (
    DEFAULT_CAPACITY,
    CorruptImageError,
    FileMedium,
    Flash,
    ImageTooLargeError,
    Loaded,
    Medium,
    MediumError,
    MemoryFlash,
    MemoryMedium,
    NotFormattedError,
    PowerCut,
    PowerLost,
    SlotStatus,
    StorageError,
    open_flash,
)

State = tuple[bytes | None, tuple[bytes, ...]]
Op = tuple[str, bytes]
EMPTY: State = (None, ())
WHOLE = 10**9  # torn_bytes past the end: the write lands, then the power goes


def snap(n: int, size: int = 300) -> bytes:
    return (f"snapshot-{n}:".encode() * size)[:size]


def txn(n: int) -> bytes:
    return (f"txn-{n};".encode() * 60)[: 20 + 37 * n % 480]


HISTORY: list[Op] = [
    ("format", snap(0)),
    *(("append", txn(i)) for i in range(1, 6)),
    ("compact", snap(1, 2000)),
    *(("append", txn(i)) for i in range(6, 11)),
    ("compact", snap(2, 50)),
    *(("append", txn(i)) for i in range(11, 14)),
]
HISTORY_WRITES = 19  # two per format/compact (record, header), one per append


# --- helpers, independent of the store ---------------------------------------------------


def expected_states(history: list[Op]) -> list[State]:
    """``states[i]`` is the state after the first ``i`` operations."""
    states, current = [EMPTY], EMPTY
    for op, data in history:
        current = (current[0], (*current[1], data)) if op == "append" else (data, ())
        states.append(current)
    return states


def state(loaded: Loaded) -> State:
    return loaded.snapshot, loaded.transactions


def reboot(medium: Medium) -> State:
    return state(Flash(medium).load())


def crc(body: bytes) -> bytes:
    return zlib.crc32(body).to_bytes(4, "big")


def hand_header(generation: int, version: int = 1) -> bytes:
    body = b"LKFL" + bytes([version]) + generation.to_bytes(8, "big")
    return body + crc(body)


def hand_record(kind: int, sequence: int, payload: bytes) -> bytes:
    body = len(payload).to_bytes(4, "big") + bytes([kind]) + sequence.to_bytes(8, "big")
    return body + payload + crc(body + payload)


def put(medium: Medium, slot: int, data: bytes) -> None:
    medium.truncate(slot, 0)
    medium.write(slot, 0, data)


def flip(medium: Medium, slot: int, bit: int) -> None:
    data = bytearray(medium.read(slot))
    data[bit // 8] ^= 1 << (bit % 8)
    put(medium, slot, bytes(data))


def run(flash: Flash, history: list[Op]) -> tuple[int, bool]:
    """Apply ``history``; return how many operations returned and whether power was lost."""
    done = 0
    try:
        for op, data in history:
            getattr(flash, op)(data)
            done += 1
    except PowerLost:
        return done, True
    return done, False


def media(medium: Medium) -> tuple[bytes, bytes]:
    return medium.read(0), medium.read(1)


@pytest.fixture(params=["file", "memory"])
def new_medium(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Medium]:
    """A factory of fresh, empty media of one kind."""
    counter: Iterator[int] = itertools.count()
    if request.param == "memory":
        return MemoryMedium
    return lambda: FileMedium(tmp_path / f"image-{next(counter)}")


@pytest.fixture
def medium(new_medium: Callable[[], Medium]) -> Medium:
    return new_medium()


# --- round trips -------------------------------------------------------------------------


def test_fresh_image_loads_empty(medium: Medium) -> None:
    assert Flash(medium).load() == Loaded(snapshot=None, transactions=(), generation=0)
    assert [s.status for s in Flash(medium).stats().slots] == [SlotStatus.ABSENT] * 2


def test_round_trip_after_reboot(medium: Medium) -> None:
    flash = Flash(medium)
    assert run(flash, HISTORY) == (len(HISTORY), False)
    assert reboot(medium) == expected_states(HISTORY)[-1]
    assert Flash(medium).load().generation == 3


def test_compactions_alternate_slots_and_generation_increases(medium: Medium) -> None:
    flash = Flash(medium)
    flash.format(snap(0))
    seen = []
    for n in range(1, 5):
        flash.append(txn(n))
        flash.compact(snap(n))
        stats = flash.stats()
        seen.append(((stats.active or "")[-len("slot-a.img") :], stats.generation))
        assert Flash(medium).load() == Loaded(snapshot=snap(n), transactions=(), generation=n + 1)
    assert seen == [("slot-b.img", 2), ("slot-a.img", 3), ("slot-b.img", 4), ("slot-a.img", 5)]


def test_first_compact_formats_a_fresh_image(medium: Medium) -> None:
    Flash(medium).compact(b"first")
    assert Flash(medium).load() == Loaded(snapshot=b"first", transactions=(), generation=1)


def test_bytes_on_flash_match_the_documented_layout(medium: Medium) -> None:
    flash = Flash(medium)
    flash.format(b"snap")
    flash.append(b"t1")
    flash.append(b"")
    slot_a = hand_header(1) + hand_record(1, 0, b"snap") + hand_record(2, 1, b"t1")
    assert media(medium) == (slot_a + hand_record(2, 2, b""), b"")


def test_hand_built_image_loads(medium: Medium) -> None:
    put(medium, 0, hand_header(6) + hand_record(1, 0, b"old"))
    put(medium, 1, hand_header(7) + hand_record(1, 0, b"new") + hand_record(2, 1, b"t"))
    assert Flash(medium).load() == Loaded(snapshot=b"new", transactions=(b"t",), generation=7)


def test_memory_and_file_media_write_identical_bytes(tmp_path: Path) -> None:
    in_memory, on_disk = MemoryFlash(), open_flash(tmp_path / "img")
    run(in_memory, HISTORY)
    run(on_disk, HISTORY)
    assert media(in_memory.medium) == media(on_disk.medium)
    assert (tmp_path / "img" / "slot-a.img").read_bytes() == in_memory.medium.read(0)


def test_open_flash_without_path_is_in_memory() -> None:
    assert isinstance(open_flash(None).medium, MemoryMedium)


def test_format_erases_the_previous_image(medium: Medium) -> None:
    flash = Flash(medium)
    run(flash, HISTORY[:8])
    flash.format(b"factory")
    assert Flash(medium).load() == Loaded(snapshot=b"factory", transactions=(), generation=3)
    assert [s.status for s in flash.stats().slots] == [SlotStatus.VALID, SlotStatus.BLANK]


def test_stats_report_bytes_records_and_generation(medium: Medium) -> None:
    flash = Flash(medium, capacity=10_000)
    flash.format(b"s" * 10)
    flash.append(b"t" * 5)
    stats = flash.stats()
    size = 17 + (17 + 10) + (17 + 5)
    assert (stats.generation, stats.used, stats.capacity) == (1, size, 10_000)
    slot_a = stats.slots[0]
    assert (slot_a.size, slot_a.records, slot_a.valid_bytes) == (size, 2, size)
    assert "slot-a.img: valid gen 1, 2 records" in stats.describe()


def test_append_before_format_is_refused(medium: Medium) -> None:
    with pytest.raises(NotFormattedError, match="format"):
        Flash(medium).append(b"t")
    assert media(medium) == (b"", b"")


# --- power cuts --------------------------------------------------------------------------


def continue_after_reboot(medium: Medium, recovered: State) -> None:
    """Write more after a reboot and check the image is still a consistent history."""
    flash = Flash(medium)
    flash.load()
    if recovered[0] is None:
        flash.format(b"fresh")
        recovered = (b"fresh", ())
    flash.append(b"more-1")
    flash.append(b"more-2")
    assert reboot(medium) == (recovered[0], (*recovered[1], b"more-1", b"more-2"))
    flash.compact(b"snapshot-after")
    flash.append(b"more-3")
    assert reboot(medium) == (b"snapshot-after", (b"more-3",))


@pytest.mark.parametrize("torn", [0, 1, None, -1, WHOLE], ids=["0", "1", "half", "len-1", "all"])
def test_power_cut_at_every_write_leaves_a_prefix(
    new_medium: Callable[[], Medium], torn: int | None
) -> None:
    states, outcomes = expected_states(HISTORY), set()
    for at in itertools.count(1):
        medium = new_medium()
        done, lost = run(Flash(medium, fault=PowerCut(at, torn)), HISTORY)
        if not lost:
            break
        recovered = reboot(medium)
        assert recovered in (states[done], states[done + 1]), f"cut at write {at}"
        outcomes.add("after" if recovered == states[done + 1] else "before")
        continue_after_reboot(medium, recovered)
    assert at == HISTORY_WRITES + 1
    assert reboot(medium) == states[-1]
    # none, one byte or half of a write never commits; a header missing one byte does
    assert outcomes == ({"before"} if torn in (0, 1, None) else {"before", "after"})


@pytest.mark.parametrize(("landed", "committed"), [(0, False), (5, False), (12, False), (13, True)])
def test_compaction_commits_once_the_header_generation_lands(
    medium: Medium, landed: int, committed: bool
) -> None:
    flash = Flash(medium, fault=PowerCut(2, landed))  # write 2 is the header of format
    with pytest.raises(PowerLost):
        flash.format(b"s")
    assert reboot(medium) == ((b"s", ()) if committed else EMPTY)
    info = Flash(medium).stats().slots[0]
    assert info.reason.startswith("header cut short" if committed else "header never committed")


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["append"] * 4 + ["compact", "format"]), st.binary(max_size=600)),
        max_size=12,
    ),
    at=st.integers(1, 30),
    torn=st.one_of(st.none(), st.integers(-700, 700)),
)
def test_power_cut_in_random_histories_leaves_a_prefix(
    ops: list[Op], at: int, torn: int | None
) -> None:
    history: list[Op] = [("format", b"s0"), *ops]
    states = expected_states(history)
    medium = MemoryMedium()
    done, lost = run(Flash(medium, fault=PowerCut(at, torn)), history)
    recovered = reboot(medium)
    assert recovered in ((states[done], states[done + 1]) if lost else (states[-1],))
    continue_after_reboot(medium, recovered)


def test_device_stays_off_after_power_cut(medium: Medium) -> None:
    flash = Flash(medium, fault=PowerCut(2))
    with pytest.raises(PowerLost):
        flash.format(b"s")
    for call in (flash.load, flash.stats, lambda: flash.append(b"t"), lambda: flash.compact(b"s")):
        with pytest.raises(PowerLost, match="off"):
            call()


def test_power_lost_is_not_an_ordinary_error() -> None:
    assert not issubclass(PowerLost, Exception)
    assert not issubclass(PowerLost, StorageError)


def test_power_cut_rejects_write_zero() -> None:
    with pytest.raises(ValueError, match="1-based"):
        PowerCut(0)


def test_torn_tail_is_truncated_before_the_next_append(medium: Medium) -> None:
    flash = Flash(medium, fault=PowerCut(3, 10))
    assert run(flash, [("format", b"s"), ("append", b"x" * 40)]) == (1, True)
    assert Flash(medium).stats().slots[0].reason.startswith("log stops")
    rebooted = Flash(medium)
    rebooted.append(b"y")
    info = rebooted.stats().slots[0]
    assert info.size == info.valid_bytes
    assert info.reason == ""
    assert reboot(medium) == (b"s", (b"y",))


# --- corrupt images ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "loaded"),
    [
        ([(2, 1, b"a"), (2, 2, b"b")], (b"s", (b"a", b"b"))),
        ([(2, 1, b"a"), (2, 3, b"c")], (b"s", (b"a",))),  # a gap in the sequence
        ([(2, 2, b"b")], (b"s", ())),
        ([(2, 1, b"a"), (2, 1, b"a")], (b"s", (b"a",))),  # a repeated record
        ([(1, 1, b"a")], (b"s", ())),  # a second snapshot record
        ([(3, 1, b"a")], (b"s", ())),  # an unknown kind
    ],
)
def test_log_stops_at_the_first_record_out_of_sequence(
    medium: Medium, records: list[tuple[int, int, bytes]], loaded: State
) -> None:
    log = b"".join(hand_record(*r) for r in records)
    put(medium, 0, hand_header(1) + hand_record(1, 0, b"s") + log)
    assert reboot(medium) == loaded


@pytest.mark.parametrize(("kind", "sequence"), [(2, 0), (1, 1), (9, 0)])
def test_slot_must_open_with_snapshot_zero(medium: Medium, kind: int, sequence: int) -> None:
    put(medium, 0, hand_header(1) + hand_record(kind, sequence, b"s"))
    with pytest.raises(CorruptImageError, match=r"snapshot record: .* expected kind 1 seq 0"):
        Flash(medium).load()


def test_random_bytes_are_a_corrupt_image_naming_the_file(medium: Medium) -> None:
    put(medium, 0, bytes(range(7, 250)))
    with pytest.raises(CorruptImageError, match=r"slot-a\.img: header CRC mismatch") as info:
        Flash(medium).load()
    assert [p.status for p in info.value.problems] == [SlotStatus.CORRUPT]


def test_truncated_header_is_a_corrupt_image(medium: Medium) -> None:
    Flash(medium).format(b"s")
    put(medium, 0, medium.read(0)[:10])
    with pytest.raises(CorruptImageError, match=r"slot-a\.img: shorter than the 17-byte header"):
        Flash(medium).load()


def test_erased_slots_load_as_a_fresh_image(medium: Medium) -> None:
    put(medium, 0, bytes(100))
    put(medium, 1, b"")
    assert Flash(medium).load() == Loaded(snapshot=None, transactions=(), generation=0)


def test_unsupported_format_version_is_reported(medium: Medium) -> None:
    put(medium, 0, hand_header(1, version=2) + hand_record(1, 0, b"s"))
    with pytest.raises(CorruptImageError, match="format version 2"):
        Flash(medium).load()


def test_slot_larger_than_capacity_is_not_read(medium: Medium) -> None:
    put(medium, 0, hand_header(1) + hand_record(1, 0, b"s" * 200))
    with pytest.raises(CorruptImageError, match="exceeds the capacity of 100"):
        Flash(medium, capacity=100).load()


def newest_in_slot_b(medium: Medium) -> int:
    """Image: A = (s0, t1) generation 1, B = (s1, t2) generation 2.

    Returns the number of bits in B's header and snapshot record."""
    run(Flash(medium), [("format", b"s0"), ("append", b"t1"), ("compact", b"s1" * 9)])
    Flash(medium).append(b"t2")
    return (17 + 17 + 18) * 8


def test_flipped_bit_in_newest_header_or_snapshot_falls_back_to_older_slot() -> None:
    medium = MemoryMedium()
    bits = newest_in_slot_b(medium)
    pristine = medium.read(1)
    for bit in range(bits):
        flip(medium, 1, bit)
        assert Flash(medium).load() == Loaded(snapshot=b"s0", transactions=(b"t1",), generation=1)
        put(medium, 1, pristine)


def test_fallback_to_older_slot_is_reported_in_stats(medium: Medium) -> None:
    bits = newest_in_slot_b(medium)
    flip(medium, 1, bits - 40)
    assert reboot(medium) == (b"s0", (b"t1",))
    stats = Flash(medium).stats()
    assert stats.slots[1].status is SlotStatus.CORRUPT
    assert "snapshot record: record CRC mismatch" in stats.slots[1].reason


def test_flipped_bit_in_only_header_or_snapshot_is_a_corrupt_image() -> None:
    medium = MemoryMedium()
    Flash(medium).format(b"only")
    for bit in range((17 + 17 + 4) * 8):
        flip(medium, 0, bit)
        with pytest.raises(CorruptImageError, match=r"header CRC mismatch|snapshot record"):
            Flash(medium).load()
        flip(medium, 0, bit)


def test_compact_on_corrupt_image_is_refused_and_format_recovers(medium: Medium) -> None:
    put(medium, 0, b"garbage" * 10)
    with pytest.raises(CorruptImageError):
        Flash(medium).compact(b"s")
    Flash(medium).format(b"reset")
    assert reboot(medium) == (b"reset", ())


@pytest.mark.parametrize("offset", [0, 4, 5, 13, 20, 25])
def test_flipped_bit_in_middle_transaction_cuts_history_there(medium: Medium, offset: int) -> None:
    flash = Flash(medium)
    run(flash, [("format", b"s"), *(("append", txn(i)) for i in range(1, 6))])
    third = 17 + (17 + 1) + (17 + len(txn(1))) + (17 + len(txn(2)))
    flip(medium, 0, (third + offset) * 8 + 3)
    assert reboot(medium) == (b"s", (txn(1), txn(2)))
    same_size = b"n" * len(txn(3))  # lands exactly where the old fourth record began
    Flash(medium).append(same_size)
    assert reboot(medium) == (b"s", (txn(1), txn(2), same_size))


@settings(max_examples=200, deadline=None)
@given(slot_a=st.none() | st.binary(max_size=300), slot_b=st.none() | st.binary(max_size=300))
def test_garbage_loads_empty_or_raises_storage_error(
    slot_a: bytes | None, slot_b: bytes | None
) -> None:
    medium = MemoryMedium()
    medium.slots = [None if s is None else bytearray(s) for s in (slot_a, slot_b)]
    flash = Flash(medium)
    with contextlib.suppress(StorageError):  # any other exception fails the test
        assert flash.load() == Loaded(snapshot=None, transactions=(), generation=0)
    assert len(flash.stats().slots) == 2


GOOD: list[Op] = [("format", b"s0"), ("append", b"t1"), ("append", b"t2")]
GOOD += [("compact", b"s1"), ("append", b"t3"), ("append", b"t4")]
GOOD_STATES = expected_states(GOOD)


def damage(data: st.DataObject, medium: Medium, slot: int) -> None:
    """Change one byte of ``slot`` or cut it short (never to nothing: that is erased)."""
    raw = bytearray(medium.read(slot))
    position = data.draw(st.integers(1, len(raw) - 1))
    if data.draw(st.booleans()):
        raw[position] ^= data.draw(st.integers(1, 255))
    else:
        del raw[position:]
    put(medium, slot, bytes(raw))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_damaged_slot_falls_back_or_keeps_a_prefix(data: st.DataObject) -> None:
    medium = MemoryMedium()
    run(Flash(medium), GOOD)  # A = (s0, t1, t2) generation 1, B = (s1, t3, t4) generation 2
    slot = data.draw(st.integers(0, 1))
    damage(data, medium, slot)
    assert reboot(medium) in (GOOD_STATES[3:] if slot else GOOD_STATES[-1:])


@pytest.mark.parametrize("zeroed", [1, 2, 4])
def test_only_header_with_zeroed_crc_tail_still_loads(medium: Medium, zeroed: int) -> None:
    run(Flash(medium), GOOD[:3])
    raw = medium.read(0)
    put(medium, 0, raw[: 17 - zeroed] + bytes(zeroed) + raw[17:])
    assert reboot(medium) == GOOD_STATES[3]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_damaged_only_slot_keeps_a_prefix_or_is_reported(data: st.DataObject) -> None:
    medium = MemoryMedium()
    run(Flash(medium), GOOD[:3])
    damage(data, medium, 0)
    with contextlib.suppress(CorruptImageError):  # never loads as a fresh image
        assert reboot(medium) in GOOD_STATES[1:4]


# --- bounds ------------------------------------------------------------------------------


def test_append_past_capacity_writes_nothing(medium: Medium) -> None:
    flash = Flash(medium, capacity=200)
    flash.format(b"x" * 100)  # 17 + 117 = 134 bytes
    before = media(medium)
    with pytest.raises(ImageTooLargeError, match="201 bytes; capacity is 200") as info:
        flash.append(b"t" * 50)
    assert (info.value.needed, info.value.capacity) == (201, 200)
    assert media(medium) == before
    flash.append(b"t" * 49)
    assert reboot(medium) == (b"x" * 100, (b"t" * 49,))


def test_compact_past_capacity_writes_nothing(medium: Medium) -> None:
    flash = Flash(medium, capacity=200)
    flash.format(b"x" * 100)
    before = media(medium)
    with pytest.raises(ImageTooLargeError):
        flash.compact(b"y" * 100)  # the old slot is kept while the new one is written
    assert media(medium) == before
    assert medium.size(1) is None


def test_format_past_capacity_creates_nothing(medium: Medium) -> None:
    with pytest.raises(ImageTooLargeError):
        Flash(medium, capacity=100).format(b"z" * 100)
    assert (medium.size(0), medium.size(1)) == (None, None)


def test_file_system_errors_are_medium_errors(tmp_path: Path) -> None:
    (tmp_path / "not-a-directory").write_bytes(b"")
    flash = open_flash(tmp_path / "not-a-directory")
    with pytest.raises(MediumError, match=r"cannot write .*not-a-directory/slot-a\.img"):
        flash.format(b"s")


def test_default_capacity_and_minimum() -> None:
    assert MemoryFlash().capacity == DEFAULT_CAPACITY == 64 * 1024 * 1024
    with pytest.raises(ValueError, match="capacity"):
        MemoryFlash(capacity=10)
