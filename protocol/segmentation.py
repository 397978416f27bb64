"""BLE segmentation and reassembly of frames (``docs/protocol.md`` §7).

Theory of operation: a frame (up to ``Limits.max_frame_payload`` plus the frame
envelope, about 1 MiB) is larger than one ATT write, so over BLE it travels as a
*transfer*: ``count`` segments, each one ATT write or notification of at most
``mtu - 3`` bytes::

    segment     = transfer_id u16 BE | index u16 BE | count u16 BE | data (>= 1 byte)
    segment ack = transfer_id u16 BE | next_index u16 BE

The sender picks a ``transfer_id`` per frame (a counter) and :func:`segment_frame`
cuts the frame into chunks of :func:`max_chunk` bytes; only the last may be shorter.

The receiver feeds every write to a :class:`Reassembler`, which accepts the segments
of one transfer strictly in order and returns the frame when the last one arrives.
Anything else raises a typed :class:`~protocol.errors.ProtocolError` and leaves its
state unchanged: a segment it already holds is a harmless ``DuplicateSegmentError``, a gap
is an ``OutOfOrderSegmentError``, a segment of a transfer that was never started is a
``MissingSegmentError``. Only index 0 starts a transfer.

Resume after a dropped link: the receiver keeps its partial transfer and answers with
:meth:`Reassembler.ack`, "I hold every segment before ``next_index``". The sender calls
:func:`segment_frame` again, with the same ``mtu`` and ``transfer_id`` and
``start_index=next_index``. Resent segments the receiver already holds are rejected as
duplicates, never appended, so a frame is delivered once however often the link drops.

Bounds (§8): ``count`` is capped by ``Limits.max_segments`` and the reassembled size by
``Limits.max_frame_payload`` plus the frame envelope; an over-size transfer is dropped.
This module is sans-IO: bytes in, bytes out, no radio, clock or socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from construct import Int16ub, Struct

from .errors import (
    DuplicateSegmentError,
    MalformedMessageError,
    MissingSegmentError,
    OutOfOrderSegmentError,
    TooLargeError,
    TrailingBytesError,
    TruncatedError,
    UsageError,
)
from .frame import FRAME_OVERHEAD
from .limits import DEFAULT_LIMITS, Limits

__all__ = [
    "ATT_HEADER_SIZE",
    "MIN_ATT_MTU",
    "SEGMENT_ACK_SIZE",
    "SEGMENT_HEADER_SIZE",
    "Reassembler",
    "Segment",
    "SegmentAck",
    "max_chunk",
    "segment_frame",
]

MIN_ATT_MTU = 23
"""The smallest ATT MTU a BLE link may use (and the default before an MTU exchange)."""
ATT_HEADER_SIZE = 3
"""Opcode and attribute handle in front of every ATT write or notification."""
SEGMENT_HEADER_SIZE = 6
"""Bytes of ``transfer_id``, ``index`` and ``count`` in front of each chunk."""
SEGMENT_ACK_SIZE = 4
"""Size of an encoded :class:`SegmentAck`."""

_U16_MAX = 0xFFFF

# §7.1: the two wire formats of this module.
_SegmentHeader = Struct("transfer_id" / Int16ub, "index" / Int16ub, "count" / Int16ub).compile()
_SegmentAckFormat = Struct("transfer_id" / Int16ub, "next_index" / Int16ub).compile()


def max_chunk(mtu: int) -> int:
    """Return how many frame bytes one segment carries on a link with ATT MTU *mtu*.

    Raises :class:`~protocol.errors.UsageError` if *mtu* is below :data:`MIN_ATT_MTU`.
    """
    if mtu < MIN_ATT_MTU:
        raise UsageError(f"ATT MTU {mtu} is below the BLE minimum of {MIN_ATT_MTU}")
    return mtu - ATT_HEADER_SIZE - SEGMENT_HEADER_SIZE


def _is_u16(value: int) -> bool:
    return 0 <= value <= _U16_MAX


def _segment_problem(index: int, count: int, data: bytes) -> str | None:
    """Say what is wrong with a segment's fields, or ``None`` if they are valid."""
    if count < 1:
        return "segment count must be at least 1"
    if index >= count:
        return f"segment index {index} is not below its count {count}"
    if not data:
        return "segment carries no data"
    return None


def _encode_segment(transfer_id: int, index: int, count: int, data: bytes | memoryview) -> bytes:
    fields = {"transfer_id": transfer_id, "index": index, "count": count}
    header: bytes = _SegmentHeader.build(fields)
    return header + data


@dataclass(frozen=True, kw_only=True, slots=True)
class Segment:
    """One ATT write of a transfer: a chunk of a frame and its place in the transfer."""

    transfer_id: int
    index: int
    count: int
    """Total number of segments in the transfer."""
    data: bytes

    def __post_init__(self) -> None:
        if not all(_is_u16(v) for v in (self.transfer_id, self.index, self.count)):
            raise UsageError("transfer_id, index and count must each fit in a u16")
        if not isinstance(self.data, bytes):
            raise UsageError("segment data must be bytes")
        problem = _segment_problem(self.index, self.count, self.data)
        if problem is not None:
            raise UsageError(problem)

    def to_bytes(self) -> bytes:
        """Encode as ``transfer_id | index | count | data`` (§7.1)."""
        return _encode_segment(self.transfer_id, self.index, self.count, self.data)

    @classmethod
    def from_bytes(cls, data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Segment:
        """Decode one segment, raising a :class:`~protocol.errors.DecodeError` if invalid.

        ``TruncatedError`` if shorter than the header, ``TooLargeError`` if ``count``
        exceeds ``limits.max_segments``, ``MalformedMessageError`` for invalid fields.
        """
        if len(data) < SEGMENT_HEADER_SIZE:
            raise TruncatedError(f"segment of {len(data)} byte(s) is shorter than its header")
        header = _SegmentHeader.parse(bytes(data[:SEGMENT_HEADER_SIZE]))
        index, count = int(header.index), int(header.count)
        if count > limits.max_segments:
            raise TooLargeError(f"transfer of {count} segments exceeds {limits.max_segments}")
        chunk = bytes(data[SEGMENT_HEADER_SIZE:])
        problem = _segment_problem(index, count, chunk)
        if problem is not None:
            raise MalformedMessageError(problem)
        return cls(transfer_id=int(header.transfer_id), index=index, count=count, data=chunk)


@dataclass(frozen=True, kw_only=True, slots=True)
class SegmentAck:
    """The receiver's resume point: it holds every segment of *transfer_id* before
    *next_index* (``next_index == count`` once the transfer is complete)."""

    transfer_id: int
    next_index: int

    def __post_init__(self) -> None:
        if not (_is_u16(self.transfer_id) and _is_u16(self.next_index)):
            raise UsageError("transfer_id and next_index must each fit in a u16")

    def to_bytes(self) -> bytes:
        """Encode as ``transfer_id | next_index`` (§7.1.2)."""
        fields = {"transfer_id": self.transfer_id, "next_index": self.next_index}
        return bytes(_SegmentAckFormat.build(fields))

    @classmethod
    def from_bytes(cls, data: bytes) -> SegmentAck:
        """Decode an ack of exactly :data:`SEGMENT_ACK_SIZE` bytes.

        ``TruncatedError`` if shorter, ``TrailingBytesError`` if longer.
        """
        if len(data) < SEGMENT_ACK_SIZE:
            raise TruncatedError(f"segment ack of {len(data)} byte(s) is too short")
        if len(data) > SEGMENT_ACK_SIZE:
            raise TrailingBytesError(len(data) - SEGMENT_ACK_SIZE)
        parsed = _SegmentAckFormat.parse(bytes(data))
        return cls(transfer_id=int(parsed.transfer_id), next_index=int(parsed.next_index))


def _segment_count(frame: bytes, chunk: int) -> int:
    if not frame:
        raise UsageError("cannot segment an empty frame")
    count = -(-len(frame) // chunk)
    if count > _U16_MAX:
        raise UsageError(f"a {len(frame)}-byte frame needs {count} segments; at most 65535")
    return count


def segment_frame(frame: bytes, *, mtu: int, transfer_id: int, start_index: int = 0) -> list[bytes]:
    """Return the encoded segments of *frame*, from *start_index* to the last, for *mtu*.

    To resume a transfer after a dropped link, pass the ``next_index`` of the receiver's
    :class:`SegmentAck` as *start_index*, with the same *mtu* and *transfer_id* as the
    first attempt (a different MTU changes the chunking; restart with a new transfer id
    instead). ``start_index == count`` yields no segments. Raises
    :class:`~protocol.errors.UsageError` on an empty frame, an MTU below 23, a
    *transfer_id* outside u16, more than 65535 segments or *start_index* out of range.
    Note that receivers cap ``count`` at ``Limits.max_segments``.
    """
    chunk = max_chunk(mtu)
    if not _is_u16(transfer_id):
        raise UsageError(f"transfer_id {transfer_id} does not fit in a u16")
    count = _segment_count(frame, chunk)
    if not 0 <= start_index <= count:
        raise UsageError(f"start_index {start_index} is outside [0, {count}]")
    view = memoryview(frame)
    return [
        _encode_segment(transfer_id, i, count, view[i * chunk : (i + 1) * chunk])
        for i in range(start_index, count)
    ]


@dataclass(slots=True)
class _Transfer:
    """The mutable state of the transfer being reassembled."""

    transfer_id: int
    count: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class Reassembler:
    """Rebuilds frames from segments, one transfer at a time (§7.1.3).

    :meth:`receive` raises only :class:`~protocol.errors.ProtocolError` subclasses, and
    after an error the state is unchanged, except that a transfer growing over the size
    limit is dropped. The id of the last completed transfer is remembered, so a late
    duplicate of its segments is a ``DuplicateSegmentError`` rather than a fresh start.
    """

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        """Create an idle reassembler bounded by *limits*."""
        self._limits = limits
        self._max_size = limits.max_frame_payload + FRAME_OVERHEAD
        self._transfer: _Transfer | None = None
        self._completed: SegmentAck | None = None

    @property
    def transfer_id(self) -> int | None:
        """The id of the transfer in progress, or ``None``."""
        return None if self._transfer is None else self._transfer.transfer_id

    @property
    def next_index(self) -> int:
        """The index the transfer in progress expects next; 0 when none is in progress."""
        return 0 if self._transfer is None else len(self._transfer.chunks)

    def ack(self) -> SegmentAck | None:
        """Return the resume point of the transfer in progress.

        With none in progress, the ack of the last completed transfer
        (``next_index == count``), or ``None`` if no transfer has completed. A sender
        whose transfer id the ack does not name must start again from index 0.
        """
        transfer = self._transfer
        if transfer is None:
            return self._completed
        return SegmentAck(transfer_id=transfer.transfer_id, next_index=len(transfer.chunks))

    def abandon(self) -> None:
        """Drop the transfer in progress, if any (the last completed id is kept)."""
        self._transfer = None

    def receive(self, segment_bytes: bytes) -> bytes | None:
        """Take one segment; return the whole frame when it completes a transfer, else ``None``.

        Raises ``DuplicateSegmentError`` (already held; harmless), ``OutOfOrderSegmentError``,
        ``MissingSegmentError`` (its transfer was never started), ``MalformedMessageError``
        (count differs from the transfer's) or ``TooLargeError``, besides decode errors.
        """
        segment = Segment.from_bytes(segment_bytes, limits=self._limits)
        transfer = self._transfer
        if transfer is None or segment.transfer_id != transfer.transfer_id:
            transfer = self._new_transfer(segment)
        else:
            _check_in_order(transfer, segment)
        self._check_size(transfer, segment)
        transfer.chunks.append(segment.data)
        transfer.size += len(segment.data)
        self._transfer = transfer
        if len(transfer.chunks) < transfer.count:
            return None
        return self._complete(transfer)

    def _new_transfer(self, segment: Segment) -> _Transfer:
        """Check that *segment* may start a transfer and return it (not yet installed)."""
        completed = self._completed
        if completed is not None and segment.transfer_id == completed.transfer_id:
            raise DuplicateSegmentError(f"transfer {segment.transfer_id} is already complete")
        if segment.index != 0:
            raise MissingSegmentError(
                f"segment {segment.index} of transfer {segment.transfer_id} arrived,"
                " but that transfer was never started"
            )
        return _Transfer(transfer_id=segment.transfer_id, count=segment.count)

    def _check_size(self, transfer: _Transfer, segment: Segment) -> None:
        """Raise ``TooLargeError`` and drop *transfer* if *segment* takes it over the cap."""
        size = transfer.size + len(segment.data)
        if size <= self._max_size:
            return
        if transfer is self._transfer:
            self._transfer = None
        raise TooLargeError(f"transfer {transfer.transfer_id} exceeds {self._max_size} bytes")

    def _complete(self, transfer: _Transfer) -> bytes:
        self._transfer = None
        self._completed = SegmentAck(transfer_id=transfer.transfer_id, next_index=transfer.count)
        return b"".join(transfer.chunks)


def _check_in_order(transfer: _Transfer, segment: Segment) -> None:
    """Raise unless *segment* is the next one of *transfer*."""
    if segment.count != transfer.count:
        raise MalformedMessageError(
            f"segment says count {segment.count}; transfer {transfer.transfer_id}"
            f" has {transfer.count}"
        )
    expected = len(transfer.chunks)
    if segment.index < expected:
        raise DuplicateSegmentError(f"segment {segment.index} is already held")
    if segment.index > expected:
        raise OutOfOrderSegmentError(f"segment {segment.index} arrived; expected {expected}")
