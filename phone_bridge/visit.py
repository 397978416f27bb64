"""A phone's visit to one door: unlock or sync, carry the bundle in, carry receipt and audit out.

Theory of operation
-------------------
:func:`visit_door` runs one BLE session in the order of ``docs/protocol.md`` §4 over a
:class:`~phone_bridge.link.FrameLink`:

1. **connect** the bleak client (``client_factory`` builds it, given the link's disconnect
   callback; failures are retried with exponential backoff), then enable notifications;
   the lock sends **HELLO** (§4.1): its door id, list version, audit head and a fresh
   challenge.
2. **resume** — if a bundle transfer to this lock was cut by a dropped link (kept in the
   :class:`~phone_bridge.link.LinkSession`) and the store still holds that bundle for the
   version in HELLO, finish it *first*: any other transfer would make the lock abandon the
   partial one (§7.1.3 rule 1).
3. **AUTH** (§4.2) with the mobile credential, signed by the phone key over HELLO's door id
   and challenge, intent UNLOCK, or SYNC_ONLY for a manual sync. The reference lock
   (``controller/core.py``) accepts a BUNDLE without AUTH but hands out audit events only in
   an authenticated session, so a sync also authenticates, with SYNC_ONLY: the lock answers
   GRANTED with ``open_seconds = 0`` and does not open (§4.2.3). The **UNLOCK_RESULT**
   reason is reported; a refusal does not end the visit, since the bundle may be the very
   update the lock lacks.
4. **bundle** — if the store holds a bundle for HELLO's list version (``bundle_for``), send
   it and read the answer: a signed **RECEIPT** (§6.3), or an ERROR about the BUNDLE when the
   lock refused it (an altered bundle fails the cloud signature, §6.2.2), which is reported.
5. **audit** — every AUDIT_BATCH the lock sends during the visit is collected. A held
   **AUDIT_ACK** (from the cloud's answer to an earlier upload) is delivered; the lock may
   answer with the next batch. The lock does not announce how many batches follow, so the
   visit ends audit collection once no frame came for ``audit_quiet_s``.
6. the receipt and the batches go to the store's upload queue (the caller drains it to the
   cloud; the phone cannot verify them, the cloud does) and the link is **disconnected**.

The phone verifies nothing the lock signs (it does not hold the lock's key); it parses
receipts only to report the version the lock claims. Transport failures raise
:class:`VisitError` naming the step, with the report of what was done so far; refusals by the
lock are outcomes in the :class:`VisitReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from bleak.exc import BleakError

from protocol import (
    Auth,
    ErrorMessage,
    Hello,
    Intent,
    Message,
    MessageType,
    MobileCredential,
    ProtocolError,
    Reason,
    Receipt,
    UnlockResult,
)
from protocol.frame import decode_frame

from .link import (
    FrameLink,
    LinkClosedError,
    LinkConfig,
    LinkError,
    LinkProtocolError,
    LinkSession,
    LinkTimeoutError,
)
from .store import PhoneStore, UploadKind

if TYPE_CHECKING:
    from bleak import BleakClient
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["ClientFactory", "VisitConfig", "VisitError", "VisitReport", "visit_door"]

logger = logging.getLogger(__name__)
_M = TypeVar("_M", bound=Message)

ClientFactory = Callable[[Callable[["BleakClient"], None]], "BleakClient"]
"""Builds an unconnected ``BleakClient`` for the door, given its ``disconnected_callback``,
e.g. ``lambda closed: BleakClient(device, closed, **client_kwargs)``."""


class VisitError(LinkError):
    """A visit step failed on the transport; ``report`` holds what was done before it."""

    def __init__(self, step: str, message: str, report: VisitReport) -> None:
        super().__init__(step, message)
        self.report = report


@dataclass(frozen=True, kw_only=True)
class VisitConfig:
    """Timeouts (seconds) of a visit; ``link`` bounds the frame link's own steps."""

    connect_timeout_s: float = 10.0
    connect_attempts: int = 3
    connect_backoff_s: float = 0.25
    """Wait before the second connect attempt; doubled before each later one."""
    answer_timeout_s: float = 5.0
    audit_quiet_s: float = 0.05
    disconnect_timeout_s: float = 5.0
    link: LinkConfig = field(default_factory=LinkConfig)


@dataclass
class VisitReport:
    """What happened at the door (filled step by step)."""

    door_id: bytes = b""
    intent: Intent = Intent.UNLOCK
    reason: Reason | None = None
    """The UNLOCK_RESULT reason, or None when the lock answered AUTH with an ERROR."""
    opened: bool = False
    version_before: int | None = None
    version_after: int | None = None
    """The version the lock's RECEIPT claims (the cloud verifies it), else HELLO's."""
    battery_pct: int | None = None
    list_age_s: int | None = None
    bundle_sent: bool = False
    resumed: bool = False
    """A bundle transfer cut by a dropped link was taken up again on this visit."""
    resumed_from: int | None = None
    """The segment index the cut transfer resumed at (None: sent from the start)."""
    receipt: bytes | None = None
    """The lock's RECEIPT frame, exactly as received (queued for upload)."""
    errors: list[ErrorMessage] = field(default_factory=list)
    """ERROR frames from the lock (e.g. a refused bundle: ``about_type`` 4)."""
    audit_batches: list[bytes] = field(default_factory=list)
    """The lock's AUDIT_BATCH frames, in order (queued for upload)."""
    audit_ack_delivered: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per step, by the event loop's clock."""

    @property
    def bundle_refused(self) -> ErrorMessage | None:
        """The lock's ERROR about the bundle, if it refused it."""
        return next((e for e in self.errors if e.about_type == MessageType.BUNDLE), None)


async def visit_door(
    client_factory: ClientFactory,
    *,
    credential: MobileCredential | bytes,
    phone_key: Ed25519PrivateKey,
    store: PhoneStore,
    intent: Intent = Intent.UNLOCK,
    audit_ack: bytes | None = None,
    session: LinkSession | None = None,
    config: VisitConfig | None = None,
    wall_time: Callable[[], int] = lambda: int(time.time()),
) -> VisitReport:
    """Visit one door (see the module docstring); return the report.

    *session* carries transfer ids and a cut transfer from one visit to the next (pass the
    same one for the phone's whole session). *wall_time* stamps queued uploads.
    """
    if isinstance(credential, bytes):
        credential = MobileCredential.from_bytes(credential)
    visit = _Visit(
        credential=credential,
        phone_key=phone_key,
        store=store,
        intent=intent,
        session=session or LinkSession(),
        config=config or VisitConfig(),
        wall_time=wall_time,
    )
    return await visit.run(client_factory, audit_ack)


@dataclass
class _Visit:
    credential: MobileCredential
    phone_key: Ed25519PrivateKey
    store: PhoneStore
    intent: Intent
    session: LinkSession
    config: VisitConfig
    wall_time: Callable[[], int]
    report: VisitReport = field(default_factory=VisitReport)

    async def run(self, client_factory: ClientFactory, audit_ack: bytes | None) -> VisitReport:
        self.report.intent = self.intent
        link: FrameLink | None = None
        client = client_factory(lambda _client: link.on_disconnected() if link else None)
        link = FrameLink(client, self.session, config=self.config.link)
        try:
            async with self._timed("connect"):
                await self._connect(client)
                await link.open()
            await self._session(link, audit_ack)
        except LinkError as error:
            raise VisitError(error.step, error.reason, self.report) from error
        finally:
            await self._queue_uploads()
            await self._disconnect(client)
        return self.report

    async def _connect(self, client: BleakClient) -> None:
        """Connect, retrying transient failures with exponential backoff (loop clock)."""
        attempts = self.config.connect_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self._connect_once(client)
                return
            except LinkError as error:
                if attempt == attempts:
                    reason = f"{error.reason} (attempt {attempt} of {attempts})"
                    raise type(error)("connect", reason) from error
                logger.debug("connect attempt %d failed: %s", attempt, error)
            await asyncio.sleep(self.config.connect_backoff_s * 2 ** (attempt - 1))

    async def _connect_once(self, client: BleakClient) -> None:
        timeout = self.config.connect_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await client.connect()
        except TimeoutError:
            raise LinkTimeoutError("connect", f"no connection within {timeout} s") from None
        except BleakError as error:
            raise LinkError("connect", str(error)) from error

    async def _session(self, link: FrameLink, audit_ack: bytes | None) -> None:
        async with self._timed("hello"):
            hello = await self._hello(link)
        bundle = await asyncio.to_thread(
            self.store.bundle_for, hello.door_id.hex(), hello.list_version
        )
        if bundle is not None and link.can_resume(bundle):
            self.report.resumed = True
            await self._deliver_bundle(link, bundle, "resume bundle")
            bundle = None
        async with self._timed("auth"):
            await self._authenticate(link, hello)
        if bundle is not None:
            await self._deliver_bundle(link, bundle, "bundle")
        async with self._timed("audit"):
            if audit_ack is not None:
                await link.send(audit_ack, "deliver audit ack")
                self.report.audit_ack_delivered = True
            await self._collect_trailing(link)

    async def _hello(self, link: FrameLink) -> Hello:
        frame = await self._answer(link, "hello", {MessageType.HELLO}, about=None)
        hello = _parse("hello", Hello, frame)
        self.report.door_id = hello.door_id
        self.report.version_before = self.report.version_after = hello.list_version
        self.report.battery_pct, self.report.list_age_s = hello.battery_pct, hello.list_age_s
        return hello

    async def _authenticate(self, link: FrameLink, hello: Hello) -> None:
        """§4.2: AUTH over this session's challenge; report the UNLOCK_RESULT reason."""
        auth = Auth.create(
            credential=self.credential,
            phone_key=self.phone_key,
            door_id=hello.door_id,
            challenge=hello.challenge,
            intent=self.intent,
        )
        await link.send(auth.to_frame(), "send auth")
        frame = await self._answer(
            link, "unlock result", {MessageType.UNLOCK_RESULT}, about=MessageType.AUTH
        )
        if decode_frame(frame)[1] == MessageType.UNLOCK_RESULT:
            result = _parse("unlock result", UnlockResult, frame)
            self.report.reason, self.report.opened = result.reason, result.opened

    async def _deliver_bundle(self, link: FrameLink, bundle: bytes, step: str) -> None:
        """§6.2-§6.3: send the bundle; keep the RECEIPT, or the lock's ERROR about it."""
        async with self._timed(step):
            self.report.bundle_sent = True
            resumed_from = await link.send(bundle, f"send {step}")
            if resumed_from:
                self.report.resumed_from = resumed_from
            frame = await self._answer(
                link, f"{step} receipt", {MessageType.RECEIPT}, about=MessageType.BUNDLE
            )
        if decode_frame(frame)[1] == MessageType.RECEIPT:
            self.report.version_after = _parse(f"{step} receipt", Receipt, frame).list_version
            self.report.receipt = frame

    async def _answer(
        self, link: FrameLink, step: str, wanted: set[int], *, about: int | None
    ) -> bytes:
        """The next frame of a *wanted* type, or an ERROR *about* the request.

        AUDIT_BATCH frames that come first are collected; other ERRORs are recorded.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.answer_timeout_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                timeout = self.config.answer_timeout_s
                raise LinkTimeoutError(step, f"no answer within {timeout} s")
            frame = await link.receive(step, timeout=remaining)
            message_type = self._classify(step, frame)
            if message_type in wanted:
                return frame
            if message_type == MessageType.ERROR and about is not None:
                error = self.report.errors[-1]
                if error.about_type in (about, 0):
                    return frame

    def _classify(self, step: str, frame: bytes) -> int:
        """Decode the frame's type; collect audit batches and errors on the way."""
        try:
            _, message_type, payload = decode_frame(frame)
            if message_type == MessageType.ERROR:
                self.report.errors.append(ErrorMessage.from_bytes(payload))
        except ProtocolError as error:
            raise LinkProtocolError(step, f"the lock sent a bad frame: {error}") from error
        if message_type == MessageType.AUDIT_BATCH:
            self.report.audit_batches.append(frame)
        elif message_type not in (MessageType.ERROR, MessageType.HELLO):
            logger.debug("%s: frame of type %#04x", step, message_type)
        return message_type

    async def _collect_trailing(self, link: FrameLink) -> None:
        """Audit batches (and errors) the lock still sends; ends after a quiet interval."""
        while True:
            try:
                frame = await link.receive("audit", timeout=self.config.audit_quiet_s)
            except (LinkTimeoutError, LinkClosedError):
                return  # quiet, or the lock ended the session: the visit's work is done
            self._classify("audit", frame)

    async def _queue_uploads(self) -> None:
        """The receipt, then the audit batches, into the store's upload queue (§4 flow)."""
        door = self.report.door_id.hex()
        now = self.wall_time()
        uploads = [(UploadKind.RECEIPT, self.report.receipt)] if self.report.receipt else []
        uploads += [(UploadKind.AUDIT, batch) for batch in self.report.audit_batches]
        if uploads:
            await asyncio.to_thread(self.store.enqueue_all, uploads, door, now=now)

    async def _disconnect(self, client: BleakClient) -> None:
        async with self._timed("disconnect"):
            try:
                async with asyncio.timeout(self.config.disconnect_timeout_s):
                    # No stop_notify first: the subscriptions end with the connection, and
                    # two more round trips would lengthen every visit.
                    await client.disconnect()
            except (BleakError, TimeoutError) as error:
                logger.debug("disconnect: %s", error)

    @contextlib.asynccontextmanager
    async def _timed(self, step: str) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            yield
        finally:
            self.report.timings[step] = loop.time() - started


def _parse(step: str, kind: type[_M], frame: bytes) -> _M:
    """The frame's payload as *kind*; bad bytes from the lock name the step."""
    try:
        return kind.from_bytes(decode_frame(frame)[2])
    except ProtocolError as error:
        raise LinkProtocolError(step, f"the lock sent a bad {kind.__name__}: {error}") from error
