"""Tests of BLE segmentation and reassembly (``protocol/segmentation.py``, §7)."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import (
    DuplicateSegmentError,
    MalformedMessageError,
    MissingSegmentError,
    OutOfOrderSegmentError,
    ProtocolError,
    TooLargeError,
    TrailingBytesError,
    TruncatedError,
    UsageError,
)
from protocol.frame import FRAME_OVERHEAD
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.segmentation import (
    SEGMENT_ACK_SIZE,
    SEGMENT_HEADER_SIZE,
    Reassembler,
    Segment,
    SegmentAck,
    max_chunk,
    segment_frame,
)

MAX_FRAME = DEFAULT_LIMITS.max_frame_payload + FRAME_OVERHEAD


# --- helpers ---------------------------------------------------------------------------


def _header(transfer_id: int, index: int, count: int) -> bytes:
    """A segment header built by hand, independently of the codec."""
    return b"".join(v.to_bytes(2, "big") for v in (transfer_id, index, count))


def _frame(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _feed(reassembler: Reassembler, segments: list[bytes]) -> bytes | None:
    """Feed *segments*; only the last may complete the frame."""
    result = None
    for i, segment in enumerate(segments):
        result = reassembler.receive(segment)
        if i < len(segments) - 1:
            assert result is None
    return result


def _state(reassembler: Reassembler) -> tuple[int | None, int, SegmentAck | None]:
    return reassembler.transfer_id, reassembler.next_index, reassembler.ack()


def _in_progress() -> tuple[Reassembler, list[bytes], bytes]:
    """A reassembler holding segments 0..2 of a 5-segment transfer 7 (MTU 23)."""
    frame = _frame(5 * max_chunk(23) - 3, seed=7)
    segments = segment_frame(frame, mtu=23, transfer_id=7)
    reassembler = Reassembler()
    _feed(reassembler, segments[:3])
    return reassembler, segments, frame


# --- sizes and hand-built bytes --------------------------------------------------------


@pytest.mark.parametrize(("mtu", "chunk"), [(23, 14), (185, 176), (247, 238), (517, 508)])
def test_max_chunk_is_att_payload_minus_segment_header(mtu: int, chunk: int) -> None:
    assert max_chunk(mtu) == chunk == mtu - 3 - SEGMENT_HEADER_SIZE


@pytest.mark.parametrize("mtu", [22, 9, 0, -1])
def test_max_chunk_rejects_mtu_below_ble_minimum(mtu: int) -> None:
    with pytest.raises(UsageError):
        max_chunk(mtu)


def test_segments_match_hand_built_bytes() -> None:
    frame = bytes(range(30))
    expected = [
        _header(0x1234, 0, 3) + frame[0:14],
        _header(0x1234, 1, 3) + frame[14:28],
        _header(0x1234, 2, 3) + frame[28:30],
    ]
    assert segment_frame(frame, mtu=23, transfer_id=0x1234) == expected
    assert expected[0][:6] == b"\x12\x34\x00\x00\x00\x03"
    assert Segment.from_bytes(expected[2]) == Segment(
        transfer_id=0x1234, index=2, count=3, data=b"\x1c\x1d"
    )


def test_segment_ack_matches_hand_built_bytes() -> None:
    ack = SegmentAck(transfer_id=0xBEEF, next_index=258)
    assert ack.to_bytes() == b"\xbe\xef\x01\x02"
    assert len(ack.to_bytes()) == SEGMENT_ACK_SIZE
    assert SegmentAck.from_bytes(b"\xbe\xef\x01\x02") == ack


def test_200_byte_frame_at_mtu_247_is_exactly_one_segment() -> None:
    frame = _frame(200)
    (segment,) = segment_frame(frame, mtu=247, transfer_id=1)
    assert segment == _header(1, 0, 1) + frame
    assert len(segment) <= 244
    assert Reassembler().receive(segment) == frame


def test_largest_frame_reassembles_at_mtu_247() -> None:
    frame = _frame(MAX_FRAME)
    segments = segment_frame(frame, mtu=247, transfer_id=9)
    assert len(segments) <= DEFAULT_LIMITS.max_segments
    assert all(len(s) <= 244 for s in segments)
    assert _feed(Reassembler(), segments) == frame


# --- round trips -----------------------------------------------------------------------


@settings(deadline=None)
@given(
    frame=st.binary(min_size=1, max_size=6000),
    mtu=st.integers(min_value=23, max_value=517),
    transfer_id=st.integers(min_value=0, max_value=0xFFFF),
)
def test_round_trip_any_frame_any_mtu(frame: bytes, mtu: int, transfer_id: int) -> None:
    segments = segment_frame(frame, mtu=mtu, transfer_id=transfer_id)
    assert all(len(s) <= mtu - 3 for s in segments)
    assert [Segment.from_bytes(s).index for s in segments] == list(range(len(segments)))
    reassembler = Reassembler()
    assert _feed(reassembler, segments) == frame
    assert reassembler.ack() == SegmentAck(transfer_id=transfer_id, next_index=len(segments))


@given(
    transfer_id=st.integers(0, 0xFFFF),
    count=st.integers(1, DEFAULT_LIMITS.max_segments),
    data=st.binary(min_size=1, max_size=600),
    position=st.floats(0, 1, exclude_max=True),
)
def test_segment_round_trip(transfer_id: int, count: int, data: bytes, position: float) -> None:
    segment = Segment(transfer_id=transfer_id, index=int(position * count), count=count, data=data)
    encoded = segment.to_bytes()
    assert len(encoded) == SEGMENT_HEADER_SIZE + len(data)
    assert Segment.from_bytes(encoded) == segment


@given(transfer_id=st.integers(0, 0xFFFF), next_index=st.integers(0, 0xFFFF))
def test_segment_ack_round_trip(transfer_id: int, next_index: int) -> None:
    ack = SegmentAck(transfer_id=transfer_id, next_index=next_index)
    assert SegmentAck.from_bytes(ack.to_bytes()) == ack


# --- resume ----------------------------------------------------------------------------


def test_resume_after_dropped_link_delivers_frame_once() -> None:
    frame = _frame(5000, seed=1)
    first_try = segment_frame(frame, mtu=100, transfer_id=42)
    reassembler = Reassembler()
    _feed(reassembler, first_try[:20])  # the link drops here
    ack = reassembler.ack()
    assert ack is not None
    assert ack == SegmentAck(transfer_id=42, next_index=20)
    resent = segment_frame(frame, mtu=100, transfer_id=42, start_index=ack.next_index)
    assert resent == first_try[20:]
    for old in first_try[:20]:
        with pytest.raises(DuplicateSegmentError):
            reassembler.receive(old)
    assert reassembler.ack() == ack
    assert _feed(reassembler, resent) == frame


def test_resending_after_completion_is_duplicate_and_changes_nothing() -> None:
    frame = _frame(100)
    segments = segment_frame(frame, mtu=23, transfer_id=5)
    reassembler = Reassembler()
    assert _feed(reassembler, segments) == frame
    done = SegmentAck(transfer_id=5, next_index=len(segments))
    for segment in segments:
        with pytest.raises(DuplicateSegmentError):
            reassembler.receive(segment)
        assert reassembler.ack() == done
    assert segment_frame(frame, mtu=23, transfer_id=5, start_index=done.next_index) == []


def test_resume_with_a_different_mtu_is_detected_by_count() -> None:
    frame = _frame(100)
    reassembler = Reassembler()
    _feed(reassembler, segment_frame(frame, mtu=23, transfer_id=3)[:2])
    resent = segment_frame(frame, mtu=30, transfer_id=3, start_index=2)
    with pytest.raises(MalformedMessageError):
        reassembler.receive(resent[0])


# --- order, duplicates, missing, count -------------------------------------------------


def test_out_of_order_segment_is_rejected_and_state_unchanged() -> None:
    reassembler, segments, frame = _in_progress()
    before = _state(reassembler)
    with pytest.raises(OutOfOrderSegmentError):
        reassembler.receive(segments[4])
    assert _state(reassembler) == before
    assert _feed(reassembler, segments[3:]) == frame


def test_duplicate_segment_is_rejected_and_state_unchanged() -> None:
    reassembler, segments, frame = _in_progress()
    before = _state(reassembler)
    with pytest.raises(DuplicateSegmentError):
        reassembler.receive(segments[2])
    assert _state(reassembler) == before
    assert _feed(reassembler, segments[3:]) == frame


def test_segment_of_another_transfer_mid_way_is_missing() -> None:
    reassembler, segments, frame = _in_progress()
    before = _state(reassembler)
    other = segment_frame(_frame(100, seed=2), mtu=23, transfer_id=8)
    with pytest.raises(MissingSegmentError):
        reassembler.receive(other[3])
    assert _state(reassembler) == before
    assert _feed(reassembler, segments[3:]) == frame


def test_segment_without_its_start_is_missing() -> None:
    reassembler = Reassembler()
    with pytest.raises(MissingSegmentError):
        reassembler.receive(_header(1, 1, 2) + b"x")
    assert _state(reassembler) == (None, 0, None)


def test_index_zero_of_new_transfer_abandons_incomplete_one() -> None:
    reassembler, old_segments, _ = _in_progress()
    frame = _frame(50, seed=3)
    assert _feed(reassembler, segment_frame(frame, mtu=23, transfer_id=8)) == frame
    with pytest.raises(MissingSegmentError):
        reassembler.receive(old_segments[3])


def test_abandon_drops_transfer_in_progress() -> None:
    reassembler, segments, _ = _in_progress()
    reassembler.abandon()
    assert _state(reassembler) == (None, 0, None)
    with pytest.raises(MissingSegmentError):
        reassembler.receive(segments[3])


def test_count_mismatch_is_malformed_and_state_unchanged() -> None:
    reassembler, segments, frame = _in_progress()
    before = _state(reassembler)
    with pytest.raises(MalformedMessageError):
        reassembler.receive(_header(7, 3, 6) + segments[3][SEGMENT_HEADER_SIZE:])
    assert _state(reassembler) == before
    assert _feed(reassembler, segments[3:]) == frame


# --- bounds ----------------------------------------------------------------------------


def test_frame_at_size_cap_is_accepted() -> None:
    limits = Limits(max_frame_payload=100)
    frame = _frame(100 + FRAME_OVERHEAD)
    segments = segment_frame(frame, mtu=23, transfer_id=1)
    assert _feed(Reassembler(limits=limits), segments) == frame


def test_oversize_transfer_is_dropped() -> None:
    limits = Limits(max_frame_payload=100)
    segments = segment_frame(_frame(101 + FRAME_OVERHEAD), mtu=23, transfer_id=1)
    reassembler = Reassembler(limits=limits)
    _feed(reassembler, segments[:-1])
    with pytest.raises(TooLargeError):
        reassembler.receive(segments[-1])
    assert _state(reassembler) == (None, 0, None)
    with pytest.raises(MissingSegmentError):
        reassembler.receive(segments[-1])


def test_oversize_first_segment_leaves_transfer_in_progress() -> None:
    reassembler, segments, frame = _in_progress()
    before = _state(reassembler)
    with pytest.raises(TooLargeError):
        reassembler.receive(_header(9, 0, 1) + bytes(MAX_FRAME + 1))
    assert _state(reassembler) == before
    assert _feed(reassembler, segments[3:]) == frame


def test_segment_count_over_limit_is_too_large() -> None:
    at_cap = _header(1, 0, DEFAULT_LIMITS.max_segments) + b"x"
    assert Segment.from_bytes(at_cap).count == DEFAULT_LIMITS.max_segments
    with pytest.raises(TooLargeError):
        Segment.from_bytes(_header(1, 0, DEFAULT_LIMITS.max_segments + 1) + b"x")
    with pytest.raises(TooLargeError):
        Reassembler(limits=Limits(max_segments=2)).receive(_header(1, 0, 3) + b"x")


# --- decode errors and misuse ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", TruncatedError),
        (b"\x00\x01\x00\x00\x00", TruncatedError),
        (_header(1, 0, 1), MalformedMessageError),
        (_header(1, 0, 0) + b"x", MalformedMessageError),
        (_header(1, 2, 2) + b"x", MalformedMessageError),
        (_header(1, 0xFFFF, 1) + b"x", MalformedMessageError),
    ],
)
def test_bad_segment_bytes_raise_typed_errors(data: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        Segment.from_bytes(data)
    with pytest.raises(error):
        Reassembler().receive(data)


@pytest.mark.parametrize(
    ("data", "error"),
    [(b"", TruncatedError), (b"\x00\x01\x00", TruncatedError), (bytes(5), TrailingBytesError)],
)
def test_bad_segment_ack_bytes_raise_typed_errors(data: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        SegmentAck.from_bytes(data)


@pytest.mark.parametrize(
    "fields",
    [
        {"transfer_id": -1, "index": 0, "count": 1, "data": b"x"},
        {"transfer_id": 0x10000, "index": 0, "count": 1, "data": b"x"},
        {"transfer_id": 1, "index": 1, "count": 1, "data": b"x"},
        {"transfer_id": 1, "index": 0, "count": 0, "data": b"x"},
        {"transfer_id": 1, "index": 0, "count": 1, "data": b""},
    ],
)
def test_invalid_segment_construction_is_usage_error(fields: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Segment(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame": b"", "mtu": 247, "transfer_id": 1},
        {"frame": b"x", "mtu": 22, "transfer_id": 1},
        {"frame": b"x", "mtu": 247, "transfer_id": -1},
        {"frame": b"x", "mtu": 247, "transfer_id": 0x10000},
        {"frame": b"x", "mtu": 247, "transfer_id": 1, "start_index": -1},
        {"frame": b"x", "mtu": 247, "transfer_id": 1, "start_index": 2},
        {"frame": bytes(14 * 0xFFFF + 1), "mtu": 23, "transfer_id": 1},
    ],
)
def test_segment_frame_misuse_is_usage_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        segment_frame(**kwargs)  # type: ignore[arg-type]


def test_segment_frame_allows_65535_segments() -> None:
    assert len(segment_frame(bytes(14 * 0xFFFF), mtu=23, transfer_id=1)) == 0xFFFF


# --- hostile bytes ---------------------------------------------------------------------


def _decode_both(data: bytes) -> None:
    """Decode *data* as a segment and as an ack; only ProtocolError may escape."""
    with contextlib.suppress(ProtocolError):
        Segment.from_bytes(data)
    with contextlib.suppress(ProtocolError):
        SegmentAck.from_bytes(data)


@given(data=st.binary(max_size=64))
def test_garbage_decodes_or_raises_protocol_error(data: bytes) -> None:
    _decode_both(data)


@given(data=st.one_of(st.binary(max_size=64), st.binary(max_size=24).map(b"\x00\x07".__add__)))
def test_garbage_into_reassembler_leaves_transfer_intact(data: bytes) -> None:
    reassembler, segments, frame = _in_progress()
    before = _state(reassembler)
    try:
        reassembler.receive(data)
    except ProtocolError:
        assert _state(reassembler) == before
        assert _feed(reassembler, segments[3:]) == frame


def _random_input(rng: random.Random, valid: bytes) -> bytes:
    """Pure noise, or a valid segment with bytes flipped, cut or appended."""
    kind = rng.randrange(3)
    if kind == 0:
        return rng.randbytes(rng.randrange(40))
    data = bytearray(valid)
    for _ in range(rng.randrange(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data[: rng.randrange(len(data) + 1)] if kind == 1 else data)


def test_seeded_random_inputs_raise_only_protocol_errors() -> None:
    rng = random.Random(20_000)
    reassembler, segments, frame = _in_progress()
    for _ in range(20_000):
        data = _random_input(rng, segments[rng.randrange(len(segments))])
        _decode_both(data)
        before = _state(reassembler)
        try:
            reassembler.receive(data)
        except ProtocolError:
            assert _state(reassembler) == before
        else:
            reassembler, segments, frame = _in_progress()
    assert _feed(reassembler, segments[3:]) == frame
