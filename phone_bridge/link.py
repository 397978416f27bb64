"""Frames over a connected bleak client: segmentation, acks and resume (``docs/protocol.md`` §7.1).

Theory of operation
-------------------
A :class:`FrameLink` carries whole frames between the phone and one lock over a connected
``bleak.BleakClient`` (any backend: the platform's Bluetooth, or
:class:`phone_bridge.bleak_bumble.BumbleClient` on the virtual radio).

* :meth:`FrameLink.open` enables notifications on ``ack`` then ``tx`` (§7.1.4: both before
  the first write to ``rx``); the lock answers with HELLO on ``tx`` and, if it holds or has
  finished a transfer, its resume point on ``ack`` (§7.1.2).
* **Lock → phone.** Each ``tx`` notification goes into a :class:`~protocol.segmentation.
  Reassembler`; a complete frame is queued with the ack that names it. :meth:`receive` returns
  the next frame and writes that ack to ``ack`` (§7.1.2). Duplicates after a resume are
  ignored (§7.1.3).
* **Phone → lock.** :meth:`send` cuts a frame into segments of ``mtu - 9`` bytes (§7.1.1,
  the MTU the client negotiated), writes them to ``rx`` without response, then waits for the
  lock's ack naming the transfer as complete. An ack naming the transfer with a lower
  ``next_index`` (the lock refused a segment) makes it resend from there, a bounded number
  of times.
* **Resume.** The outgoing transfer in flight is kept in a :class:`LinkSession`, which
  outlives one connection (one per phone session). If the link drops mid-transfer, a later
  :meth:`send` of the *same* frame at the *same* MTU reads the lock's resume ack and resends
  from its ``next_index`` with the same transfer id (§7.1.3, same-MTU rule); otherwise it
  starts over with a new id. A transfer the lock already completed is never resent under its
  id (the lock would discard it as a duplicate); it goes again under a new id, which a lock
  answers idempotently (§6.2.2). Transfer ids count up from a random start per session, and
  never reuse the id of the lock's last transfer.

Every step is bounded by a timeout from :class:`LinkConfig`. Failures raise a
:class:`LinkError` subclass whose message and ``step`` name the step: a timeout, the link
closing, a bleak/transport failure, or bytes from the lock that do not reassemble.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from bleak.exc import BleakError

from protocol import DEFAULT_LIMITS, Limits, ProtocolError
from protocol.errors import DuplicateSegmentError
from protocol.segmentation import Reassembler, SegmentAck, max_chunk, segment_frame
from protocol.transport import CHAR_ACK_UUID, CHAR_RX_UUID, CHAR_TX_UUID

from .errors import StepError

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.characteristic import BleakGATTCharacteristic

__all__ = [
    "FrameLink",
    "LinkClosedError",
    "LinkConfig",
    "LinkError",
    "LinkProtocolError",
    "LinkSession",
    "LinkTimeoutError",
    "LinkTransportError",
]

logger = logging.getLogger(__name__)

_U16: Final = 0x10000
_T = TypeVar("_T")


class LinkError(StepError):
    """A frame-link step failed; ``step`` names it and the message says why."""


class LinkTimeoutError(LinkError):
    """The step did not finish within its timeout."""


class LinkClosedError(LinkError):
    """The link dropped during the step."""


class LinkTransportError(LinkError):
    """The BLE stack refused the step (a bleak error)."""


class LinkProtocolError(LinkError):
    """The lock sent bytes that are not valid segments or acks (remote bad data)."""


@dataclass(frozen=True, kw_only=True)
class LinkConfig:
    """Timeouts (seconds) and bounds of one link."""

    subscribe_timeout_s: float = 5.0
    receive_timeout_s: float = 5.0
    write_timeout_s: float = 5.0
    ack_timeout_s: float = 5.0
    resume_timeout_s: float = 1.0
    """How long :meth:`FrameLink.send` waits for the lock's resume point before it starts over."""
    max_resends: int = 3
    limits: Limits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        timeouts = (
            self.subscribe_timeout_s,
            self.receive_timeout_s,
            self.write_timeout_s,
            self.ack_timeout_s,
            self.resume_timeout_s,
        )
        if any(t <= 0 for t in timeouts) or self.max_resends < 0:
            raise ValueError("link timeouts must be > 0 and max_resends >= 0")


@dataclass(frozen=True)
class _Transfer:
    """An outgoing transfer: the frame, the MTU it was cut for, its id and segment count."""

    frame: bytes
    mtu: int
    transfer_id: int
    count: int


class LinkSession:
    """What outlives one connection: the transfer-id counter and the transfer in flight.

    *random* draws the counter's start (``os.urandom`` unless given, e.g. seeded in tests).
    """

    def __init__(self, *, random: Callable[[int], bytes] = os.urandom) -> None:
        self._next_id = int.from_bytes(random(2), "big")
        self.pending: _Transfer | None = None
        """The outgoing transfer not yet acknowledged as complete, if any."""

    def new_transfer_id(self, avoid: int | None) -> int:
        """The next id of the counter, skipping *avoid* (the lock's last transfer, §7.1.3)."""
        transfer_id = self._next_id
        if transfer_id == avoid:
            transfer_id = (transfer_id + 1) % _U16
        self._next_id = (transfer_id + 1) % _U16
        return transfer_id

    def can_resume(self, frame: bytes, mtu: int) -> bool:
        """Whether *frame* is the transfer in flight and may resume at *mtu* (same-MTU rule)."""
        pending = self.pending
        return pending is not None and pending.frame == frame and pending.mtu == mtu


class FrameLink:
    """Frames over one connected *client* (see the module docstring).

    Pass :meth:`on_disconnected` as the client's ``disconnected_callback`` (or call it) so
    that a dropped link ends a wait at once instead of at its timeout.
    """

    def __init__(
        self, client: BleakClient, session: LinkSession, *, config: LinkConfig | None = None
    ) -> None:
        self._client = client
        self._session = session
        self._config = config or LinkConfig()
        self._reassembler = Reassembler(limits=self._config.limits)
        self._frames: asyncio.Queue[tuple[bytes, SegmentAck | None] | None] = asyncio.Queue()
        self._acks: asyncio.Queue[SegmentAck | None] = asyncio.Queue()
        self._latest_ack: SegmentAck | None = None
        self._fault: str | None = None
        self._closed = False

    @property
    def mtu(self) -> int:
        return self._client.mtu_size

    @property
    def session(self) -> LinkSession:
        return self._session

    def can_resume(self, frame: bytes) -> bool:
        """Whether :meth:`send` of *frame* would resume a transfer cut by a dropped link."""
        return self._session.can_resume(frame, self.mtu)

    # --- notifications --------------------------------------------------------------

    def on_disconnected(self, _client: object = None) -> None:
        """The link dropped: wake every wait (they raise :class:`LinkClosedError`)."""
        self._closed = True
        self._frames.put_nowait(None)
        self._acks.put_nowait(None)

    def _on_tx(self, _char: BleakGATTCharacteristic, value: bytearray) -> None:
        try:
            frame = self._reassembler.receive(bytes(value))
        except DuplicateSegmentError:
            return  # expected after a resume (§7.1.3)
        except ProtocolError as error:
            logger.debug("tx segment refused: %s: %s", type(error).__name__, error)
            self._fault = f"bad segment from the lock: {error}"
            self._frames.put_nowait(None)
            return
        if frame is not None:
            self._frames.put_nowait((frame, self._reassembler.ack()))

    def _on_ack(self, _char: BleakGATTCharacteristic, value: bytearray) -> None:
        try:
            ack = SegmentAck.from_bytes(bytes(value))
        except ProtocolError as error:
            logger.debug("ack notification refused: %s", error)
            return
        self._latest_ack = ack
        self._acks.put_nowait(ack)

    # --- steps ----------------------------------------------------------------------

    async def _step(self, step: str, timeout: float, work: Coroutine[Any, Any, _T]) -> _T:
        """Await *work* within *timeout*; bleak errors and timeouts become errors naming *step*."""
        if self._closed:
            work.close()
            raise LinkClosedError(step, "the link is closed")
        try:
            async with asyncio.timeout(timeout):
                return await work
        except TimeoutError:
            raise LinkTimeoutError(step, f"no answer within {timeout} s") from None
        except BleakError as error:
            if self._closed or not self._client.is_connected:
                raise LinkClosedError(step, f"the link dropped ({error})") from error
            raise LinkTransportError(step, str(error)) from error

    async def open(self) -> None:
        """Enable ``ack`` then ``tx`` notifications (the lock then sends HELLO)."""
        timeout = self._config.subscribe_timeout_s
        client = self._client
        await self._step(
            "subscribe to ack",
            timeout,
            client.start_notify(CHAR_ACK_UUID, self._on_ack),
        )
        await self._step(
            "subscribe to tx",
            timeout,
            client.start_notify(CHAR_TX_UUID, self._on_tx),
        )

    async def receive(self, step: str = "receive", timeout: float | None = None) -> bytes:
        """The lock's next frame (waiting at most *timeout*); the phone acks it on ``ack``."""
        wait = self._config.receive_timeout_s if timeout is None else timeout
        item = await self._step(step, wait, self._frames.get())
        if item is None:
            raise self._fault_or_closed(step)
        frame, ack = item
        if ack is not None:
            await self._write(f"{step}: ack", CHAR_ACK_UUID, ack.to_bytes())
        return frame

    def _fault_or_closed(self, step: str) -> LinkError:
        if self._fault is not None:
            fault, self._fault = self._fault, None
            return LinkProtocolError(step, fault)
        self._frames.put_nowait(None)  # keep later waits from blocking on a dead link
        return LinkClosedError(step, "the link dropped")

    async def _write(self, step: str, uuid: str, data: bytes) -> None:
        client = self._client
        await self._step(
            step,
            self._config.write_timeout_s,
            client.write_gatt_char(uuid, data, response=False),
        )

    async def send(self, frame: bytes, step: str = "send") -> int:
        """Deliver *frame* as one transfer on ``rx`` and wait for the lock's complete ack.

        Return the segment index the writes began at: 0, or the resume point of a transfer
        cut by a dropped link.
        """
        mtu = self.mtu
        max_chunk(mtu)  # a bad MTU is a local misuse: raises UsageError here
        start = await self._resume_point(frame, mtu, step)
        if start is None:
            avoid = None if self._latest_ack is None else self._latest_ack.transfer_id
            transfer_id = self._session.new_transfer_id(avoid)
            count = len(segment_frame(frame, mtu=mtu, transfer_id=transfer_id))
            self._session.pending = _Transfer(frame, mtu, transfer_id, count)
            start = 0
        pending = self._session.pending
        assert pending is not None
        first = start
        self._forget_acks()
        for _attempt in range(self._config.max_resends + 1):
            await self._write_from(pending, start, step)
            start = await self._await_complete(pending, step)
            if start == pending.count:
                self._session.pending = None
                return first
            logger.debug("%s: lock holds %d of %d; resending", step, start, pending.count)
        raise LinkProtocolError(
            step, f"the lock did not complete transfer {pending.transfer_id} after resends"
        )

    async def _resume_point(self, frame: bytes, mtu: int, step: str) -> int | None:
        """Where to resume the transfer in flight (§7.1.3), or None to start over."""
        pending = self._session.pending
        if pending is None or not self._session.can_resume(frame, mtu):
            return None
        ack = self._latest_ack
        if ack is None or ack.transfer_id != pending.transfer_id:
            ack = await self._next_ack_of(pending.transfer_id, self._config.resume_timeout_s, step)
        if ack is None or ack.next_index >= pending.count:
            return None  # no resume point, or already complete: resend under a new id
        logger.debug("%s: resuming transfer %d at %d", step, pending.transfer_id, ack.next_index)
        return ack.next_index

    async def _next_ack_of(self, transfer_id: int, timeout: float, step: str) -> SegmentAck | None:
        """The lock's next ack naming *transfer_id*, or None if none came within *timeout*."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    ack = await self._acks.get()
                    if ack is None:
                        self._acks.put_nowait(None)
                        raise LinkClosedError(step, "the link dropped")
                    if ack.transfer_id == transfer_id:
                        return ack
        except TimeoutError:
            return None

    def _forget_acks(self) -> None:
        """Drop queued acks: they answer writes made before this transfer (re)starts."""
        while not self._acks.empty():
            if self._acks.get_nowait() is None:  # the link dropped: keep the wake-up
                self._acks.put_nowait(None)
                return

    async def _write_from(self, transfer: _Transfer, start: int, step: str) -> None:
        segments = segment_frame(
            transfer.frame, mtu=transfer.mtu, transfer_id=transfer.transfer_id, start_index=start
        )
        for index, segment in enumerate(segments, start=start):
            await self._write(
                f"{step}: segment {index + 1}/{transfer.count}", CHAR_RX_UUID, segment
            )

    async def _await_complete(self, transfer: _Transfer, step: str) -> int:
        """The lock's ``next_index`` for *transfer* once it acks it (at most the ack timeout)."""
        timeout = self._config.ack_timeout_s
        ack = await self._next_ack_of(transfer.transfer_id, timeout, f"{step}: ack")
        if ack is None:
            raise LinkTimeoutError(f"{step}: ack", f"the lock did not ack within {timeout} s")
        while ack.next_index < transfer.count and not self._acks.empty():
            later = self._acks.get_nowait()  # a segment-error ack may precede the final one
            if later is None:
                self._acks.put_nowait(None)
                break
            if later.transfer_id == transfer.transfer_id:
                ack = later
        return ack.next_index

    async def close(self) -> None:
        """Stop notifications if the link is still up (best effort, bounded)."""
        if self._closed or not self._client.is_connected:
            return
        for uuid in (CHAR_TX_UUID, CHAR_ACK_UUID):
            try:
                async with asyncio.timeout(self._config.subscribe_timeout_s):
                    await self._client.stop_notify(uuid)
            except (BleakError, TimeoutError) as error:
                logger.debug("stop notify %s: %s", uuid, error)
