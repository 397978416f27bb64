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
   **AUDIT_ACK** (from the cloud's answer to an earlier upload) is delivered — right behind
   the bundle, without waiting for its receipt, when the lock can check it with the key
   it trusts at that point (the lock takes frames in order: one round trip less) — and the
   lock may answer with the next batch. The lock does not announce how many batches follow, so the
   visit ends audit collection once no frame came for ``audit_quiet_s``.
6. **key rotations** (§6.7) — every KEY_ROTATION the store holds above HELLO's
   ``key_epoch`` is sent, one at a time and in epoch order; the lock accepts one silently
   and refuses with an ERROR, so each is followed by a short wait for a refusal
   (``silent_accept_s``), and the first refusal ends the rotations.
7. **time sync** (§6.6) — when HELLO's ``lock_time`` differs from the phone's clock by more
   than ``clock_tolerance_s`` and a ``time_sync`` source is given (the phone is online),
   the visit asks the cloud, right after HELLO and while the BLE steps run, for a
   TIME_SYNC bound to HELLO's challenge; it delivers the answer here (after any rotation
   its signing epoch needs) and waits for a refusal as for a rotation. No answer within
   ``time_sync_timeout_s``, an offline phone or a cloud that finds the clock right: no
   TIME_SYNC, and the report says why.
8. the receipt and the batches go to the store's upload queue (the caller drains it to the
   cloud; the phone cannot verify them, the cloud does) and the link is **disconnected**.

**The order of rotations.** After a lock accepts the rotation to epoch *n* + 1 it checks
every cloud-signed form with the new key only (§6.7): the phone's mobile credential, a
bundle or an AUDIT_ACK signed at epoch *n* fail there from then on. So the visit delivers
each form while the lock still trusts the key that signed it, and a rotation just before
the first form that needs it: the rotations up to the credential's epoch before AUTH (a
phone that logged in after the rotation), up to the bundle's epoch before the bundle, up
to the ack's epoch before the ack (an ack signed by a key the lock no longer trusts is kept
for later, not sent), the remaining ones after the audit step (step 6), and the TIME_SYNC,
signed by the cloud's newest key, last. A phone that logged in before the
rotation therefore still opens the door on the visit that carries the rotation, and must
log in again before its next visit there (``VisitReport.credential_outdated``).

The phone verifies nothing the lock signs (it does not hold the lock's key); it parses
receipts only to report the version the lock claims. Transport failures raise
:class:`VisitError` naming the step, with the report of what was done so far; refusals by the
lock are outcomes in the :class:`VisitReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from bleak.exc import BleakError

from protocol import (
    AuditAck,
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
    SealedBundle,
    TimeSync,
    UnlockResult,
)
from protocol.frame import decode_frame

from .cloud_client import CloudClient, CloudClientError, CloudUnreachableError
from .link import (
    FrameLink,
    LinkClosedError,
    LinkConfig,
    LinkError,
    LinkProtocolError,
    LinkSession,
    LinkTimeoutError,
)
from .store import PhoneStore, StoreError, UploadKind

if TYPE_CHECKING:
    from bleak import BleakClient
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "ClientFactory",
    "TimeSyncSource",
    "VisitConfig",
    "VisitError",
    "VisitReport",
    "cloud_time_sync",
    "visit_door",
]

logger = logging.getLogger(__name__)
_M = TypeVar("_M", bound=Message)

ClientFactory = Callable[[Callable[["BleakClient"], None]], "BleakClient"]
"""Builds an unconnected ``BleakClient`` for the door, given its ``disconnected_callback``,
e.g. ``lambda closed: BleakClient(device, closed, **client_kwargs)``."""

TimeSyncSource = Callable[[bytes, bytes, int], Awaitable[bytes | None]]
"""``(door_id, challenge, lock_time)`` → a TIME_SYNC frame bound to ``challenge``, or None
when the cloud finds the lock's clock right; raises
:class:`~phone_bridge.cloud_client.CloudClientError` when the cloud does not answer or
refuses (:func:`cloud_time_sync` asks a :class:`~phone_bridge.cloud_client.CloudClient`)."""


class VisitError(LinkError):
    """A visit step failed on the transport; ``report`` holds what was done before it."""

    def __init__(self, step: str, message: str, report: VisitReport) -> None:
        super().__init__(step, message)
        self.report = report


@dataclass(frozen=True, kw_only=True)
class VisitConfig:
    """Timeouts (seconds) of a visit; ``link`` bounds the frame link's own steps.

    Every value is checked when the config is made: :class:`ValueError` names the field.
    """

    connect_timeout_s: float = 10.0
    connect_attempts: int = 3
    connect_backoff_s: float = 0.25
    """Wait before the second connect attempt; doubled before each later one."""
    answer_timeout_s: float = 5.0
    audit_quiet_s: float = 0.05
    disconnect_timeout_s: float = 5.0
    silent_accept_s: float = 0.2
    """How long to wait for a refusal of a frame the lock accepts silently (KEY_ROTATION,
    TIME_SYNC); no ERROR within it means the lock took the frame."""
    clock_tolerance_s: float = 2.0
    """A lock clock further off the phone's than this gets a TIME_SYNC (when online)."""
    time_sync_timeout_s: float = 5.0
    """How long the time-sync step waits for the cloud's answer (asked for after HELLO)."""
    link: LinkConfig = field(default_factory=LinkConfig)

    def __post_init__(self) -> None:
        positive = (
            "connect_timeout_s",
            "answer_timeout_s",
            "audit_quiet_s",
            "disconnect_timeout_s",
            "silent_accept_s",
            "time_sync_timeout_s",
        )
        for name in positive:
            _check_seconds(name, getattr(self, name), minimum_exclusive=True)
        _check_seconds("connect_backoff_s", self.connect_backoff_s, minimum_exclusive=False)
        _check_seconds("clock_tolerance_s", self.clock_tolerance_s, minimum_exclusive=False)
        attempts = self.connect_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"VisitConfig.connect_attempts must be an int >= 1, got {attempts!r}")
        if not isinstance(self.link, LinkConfig):
            raise ValueError(f"VisitConfig.link must be a LinkConfig, got {self.link!r}")


def _check_seconds(name: str, value: object, *, minimum_exclusive: bool) -> None:
    """A finite number of seconds, > 0 (or >= 0); ValueError naming the field otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        ok = False
    else:
        ok = math.isfinite(value) and (value > 0 if minimum_exclusive else value >= 0)
    if not ok:
        bound = "> 0" if minimum_exclusive else ">= 0"
        raise ValueError(
            f"VisitConfig.{name} must be a finite number of seconds {bound}, got {value!r}"
        )


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
    credential_epoch: int | None = None
    """The key epoch that signed the phone's mobile credential."""
    key_epoch_before: int | None = None
    """The lock's key epoch as HELLO said (§6.7)."""
    key_epoch_after: int | None = None
    """HELLO's epoch plus the rotations the lock took on this visit."""
    rotations_delivered: int = 0
    """KEY_ROTATION frames the lock took (no refusal followed them)."""
    clock_offset_s: int | None = None
    """HELLO's ``lock_time`` minus the phone's clock: positive when the lock is ahead."""
    time_synced: bool = False
    """A TIME_SYNC was delivered and the lock did not refuse it (§6.6)."""
    time_sync_frame: bytes | None = None
    """The TIME_SYNC frame delivered, exactly as the cloud signed it."""
    time_sync_skipped: str | None = None
    """Why the lock's clock, off by more than the tolerance, got no TIME_SYNC (else None)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per step, by the event loop's clock."""

    @property
    def bundle_refused(self) -> ErrorMessage | None:
        """The lock's ERROR about the bundle, if it refused it."""
        return self._refusal(MessageType.BUNDLE)

    @property
    def rotation_refused(self) -> ErrorMessage | None:
        """The lock's ERROR about a KEY_ROTATION, if it refused one."""
        return self._refusal(MessageType.KEY_ROTATION)

    @property
    def time_sync_refused(self) -> ErrorMessage | None:
        """The lock's ERROR about the TIME_SYNC, if it refused it."""
        return self._refusal(MessageType.TIME_SYNC)

    @property
    def credential_outdated(self) -> bool:
        """The lock now trusts a newer key than the credential's: log the phone in again."""
        held, lock = self.credential_epoch, self.key_epoch_after
        return held is not None and lock is not None and lock > held

    def _refusal(self, about: MessageType) -> ErrorMessage | None:
        return next((e for e in self.errors if e.about_type == about), None)


def cloud_time_sync(
    cloud: CloudClient, store: PhoneStore, *, wall_time: Callable[[], int]
) -> TimeSyncSource:
    """A :data:`TimeSyncSource` asking *cloud*; it also fetches rotations the sync needs.

    A TIME_SYNC is signed by the cloud's newest key: when that epoch is above the newest
    rotation the store holds (the cloud rotated since the last prefetch), the missing
    rotations are fetched and kept too, so the visit can deliver them first.
    """

    async def fetch(door_id: bytes, challenge: bytes, lock_time: int) -> bytes | None:
        answer = await cloud.time_sync(door_id.hex(), challenge=challenge, lock_time=lock_time)
        held = await asyncio.to_thread(store.newest_rotation_epoch)
        if answer.frame is not None and (answer.key_epoch or 0) > held:
            try:  # best effort: the lock may hold the newer key already
                fresh = await cloud.rotations(after=held)
                await asyncio.to_thread(store.keep_rotations, fresh.frames, now=wall_time())
            except (CloudClientError, StoreError) as error:
                logger.info("time sync: the rotations it needs are not at hand: %s", error)
        return answer.frame

    return fetch


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
    time_sync: TimeSyncSource | None = None,
) -> VisitReport:
    """Visit one door (see the module docstring); return the report.

    *session* carries transfer ids and a cut transfer from one visit to the next (pass the
    same one for the phone's whole session). *wall_time* stamps queued uploads and is the
    clock HELLO's ``lock_time`` is compared with. *time_sync* asks the cloud for a
    TIME_SYNC (None: an offline phone, which sends none).
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
        time_sync=time_sync,
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
    time_sync: TimeSyncSource | None = None
    report: VisitReport = field(default_factory=VisitReport)
    lock_epoch: int = 0
    """The key epoch the lock trusts now (HELLO's, plus the rotations it took)."""
    rotations_stopped: bool = False
    rotations_held: list[tuple[int, bytes]] = field(default_factory=list)
    """The store's rotations above HELLO's epoch, read with the bundle (one store read)."""

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
        sync = self._ask_time_sync(hello)
        try:
            await self._steps(link, hello, audit_ack)
            async with self._timed("key rotation"):
                await self._rotate_to(link, None)
            if sync is not None:
                async with self._timed("time sync"):
                    await self._deliver_time_sync(link, sync)
        finally:
            if sync is not None:
                sync.cancel()
                await asyncio.gather(sync, return_exceptions=True)

    async def _steps(self, link: FrameLink, hello: Hello, audit_ack: bytes | None) -> None:
        """Resume, AUTH, bundle and audit; each after the rotations its form needs."""
        bundle, self.rotations_held = await asyncio.to_thread(
            self.store.carried_to, hello.door_id.hex(), hello.list_version, hello.key_epoch
        )
        if bundle is not None and link.can_resume(bundle):
            self.report.resumed = True
            await self._deliver_bundle(link, bundle, "resume bundle")
            bundle = None
        async with self._timed("auth"):
            await self._rotate_to(link, self.credential.key_epoch)
            await self._authenticate(link, hello)
        if bundle is not None:
            await self._rotate_to(link, _signing_epoch(bundle, SealedBundle))
            # An ack the lock can check with the key it trusts now follows the bundle at
            # once, before its receipt: the lock takes frames in order, one round trip less.
            ack_now = audit_ack is not None and _signing_epoch(audit_ack, AuditAck) == (
                self.lock_epoch
            )
            await self._deliver_bundle(link, bundle, "bundle", ack=audit_ack if ack_now else None)
            audit_ack = None if ack_now else audit_ack
        async with self._timed("audit"):
            if audit_ack is not None:
                await self._deliver_ack(link, audit_ack)
            await self._collect_trailing(link)

    async def _deliver_ack(self, link: FrameLink, audit_ack: bytes) -> None:
        """§6.5: the held AUDIT_ACK, unless signed by a key the lock no longer trusts (§6.7).

        Such an ack stays held: the lock sends its events again, and the cloud's answer to
        that upload (signed by the newer key) replaces it.
        """
        epoch = _signing_epoch(audit_ack, AuditAck)
        if epoch is not None and epoch < self.lock_epoch:
            logger.info("audit ack: signed at epoch %d, the lock is at %d", epoch, self.lock_epoch)
            return
        await self._rotate_to(link, epoch)
        await link.send(audit_ack, "deliver audit ack")
        self.report.audit_ack_delivered = True

    async def _hello(self, link: FrameLink) -> Hello:
        frame = await self._answer(link, "hello", {MessageType.HELLO}, about=None)
        hello = _parse("hello", Hello, frame)
        self.report.door_id = hello.door_id
        self.report.version_before = self.report.version_after = hello.list_version
        self.report.battery_pct, self.report.list_age_s = hello.battery_pct, hello.list_age_s
        self.lock_epoch = hello.key_epoch
        self.report.key_epoch_before = self.report.key_epoch_after = hello.key_epoch
        self.report.credential_epoch = self.credential.key_epoch
        self.report.clock_offset_s = hello.lock_time - self.wall_time()
        return hello

    # --- key rotations and time sync (§6.6, §6.7) -------------------------------------

    async def _rotate_to(self, link: FrameLink, epoch: int | None) -> None:
        """Send the held rotations above the lock's epoch up to *epoch* (None: all), in order.

        The first refusal, or a gap in what the store holds, ends the rotations of this visit.
        """
        if self.rotations_stopped or (epoch is not None and epoch <= self.lock_epoch):
            return
        newest = self.rotations_held[-1][0] if self.rotations_held else self.lock_epoch
        if epoch is not None and epoch > newest:  # fetched during the visit (a time sync's)
            self.rotations_held = await asyncio.to_thread(
                self.store.rotations, after=self.lock_epoch
            )
        held = [(n, f) for n, f in self.rotations_held if epoch is None or n <= epoch]
        for new_epoch, frame in held:
            if new_epoch <= self.lock_epoch:
                continue
            if new_epoch != self.lock_epoch + 1:
                logger.info("key rotation: no rotation to epoch %d held", self.lock_epoch + 1)
                break
            step = f"key rotation {new_epoch}"
            if await self._deliver_silent(link, frame, MessageType.KEY_ROTATION, step):
                self.rotations_stopped = True
                return
            self.lock_epoch = self.report.key_epoch_after = new_epoch
            self.report.rotations_delivered += 1

    def _ask_time_sync(self, hello: Hello) -> asyncio.Task[bytes | None] | None:
        """Start asking the cloud for a TIME_SYNC if the lock's clock is off (None: no ask)."""
        offset = self.report.clock_offset_s or 0
        if abs(offset) <= self.config.clock_tolerance_s:
            return None
        if self.time_sync is None:
            self.report.time_sync_skipped = "offline: no cloud to ask for a time sync"
            return None
        request = self.time_sync(hello.door_id, hello.challenge, hello.lock_time)
        return asyncio.ensure_future(request)

    async def _deliver_time_sync(self, link: FrameLink, sync: asyncio.Task[bytes | None]) -> None:
        """Deliver the cloud's TIME_SYNC (after the rotations its signing epoch needs)."""
        frame = await self._awaited_time_sync(sync)
        if frame is None:
            return
        epoch = _signing_epoch(frame, TimeSync)
        await self._rotate_to(link, epoch)
        if epoch != self.lock_epoch:
            self.report.time_sync_skipped = (
                f"the time sync is signed at key epoch {epoch}; the lock is at {self.lock_epoch}"
            )
            return
        self.report.time_sync_frame = frame
        refused = await self._deliver_silent(link, frame, MessageType.TIME_SYNC, "time sync")
        self.report.time_synced = refused is None

    async def _awaited_time_sync(self, sync: asyncio.Task[bytes | None]) -> bytes | None:
        """The cloud's TIME_SYNC frame, or None with the reason in the report."""
        timeout = self.config.time_sync_timeout_s
        try:
            frame = await asyncio.wait_for(sync, timeout)
        except TimeoutError:
            self.report.time_sync_skipped = f"offline: the cloud did not answer within {timeout} s"
            return None
        except CloudUnreachableError as error:
            self.report.time_sync_skipped = f"offline: {error}"
            return None
        except CloudClientError as error:
            self.report.time_sync_skipped = f"the cloud refused: {error}"
            return None
        except (KeyError, TypeError, ValueError) as error:  # a malformed answer or frame
            logger.warning("time sync: the cloud's answer is unusable: %r", error)
            self.report.time_sync_skipped = f"the cloud's answer is unusable: {error!r}"
            return None
        if frame is None:
            self.report.time_sync_skipped = "the cloud found the lock's clock right"
        return frame

    async def _deliver_silent(
        self, link: FrameLink, frame: bytes, about: MessageType, step: str
    ) -> ErrorMessage | None:
        """Send a frame the lock takes without an answer; return its ERROR if it refused it."""
        await link.send(frame, f"send {step}")
        quiet = self.config.silent_accept_s
        try:
            await self._answer(link, step, set(), about=about, within=quiet)
        except LinkTimeoutError:
            return None  # no refusal within the quiet interval: the lock took it
        error = self.report.errors[-1]
        logger.info("%s: the lock refused it: %s", step, error.code.name)
        return error

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

    async def _deliver_bundle(
        self, link: FrameLink, bundle: bytes, step: str, *, ack: bytes | None = None
    ) -> None:
        """§6.2-§6.3: send the bundle (and ``ack`` right behind it); keep the RECEIPT, or
        the lock's ERROR about the bundle."""
        async with self._timed(step):
            self.report.bundle_sent = True
            resumed_from = await link.send(bundle, f"send {step}")
            if resumed_from:
                self.report.resumed_from = resumed_from
            if ack is not None:
                await link.send(ack, "deliver audit ack")
                self.report.audit_ack_delivered = True
            frame = await self._answer(
                link, f"{step} receipt", {MessageType.RECEIPT}, about=MessageType.BUNDLE
            )
        if decode_frame(frame)[1] == MessageType.RECEIPT:
            self.report.version_after = _parse(f"{step} receipt", Receipt, frame).list_version
            self.report.receipt = frame

    async def _answer(
        self,
        link: FrameLink,
        step: str,
        wanted: set[int],
        *,
        about: int | None,
        within: float | None = None,
    ) -> bytes:
        """The next frame of a *wanted* type, or an ERROR *about* the request.

        AUDIT_BATCH frames that come first are collected; other ERRORs are recorded.
        *within* bounds the wait (default ``answer_timeout_s``).
        """
        loop = asyncio.get_running_loop()
        timeout = self.config.answer_timeout_s if within is None else within
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
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


def _signing_epoch(frame: bytes, kind: type[SealedBundle | AuditAck | TimeSync]) -> int | None:
    """The key epoch a cloud-signed frame names (parsed, not verified; None if unreadable)."""
    try:
        return kind.from_bytes(decode_frame(frame)[2]).key_epoch
    except ProtocolError:
        return None


def _parse(step: str, kind: type[_M], frame: bytes) -> _M:
    """The frame's payload as *kind*; bad bytes from the lock name the step."""
    try:
        return kind.from_bytes(decode_frame(frame)[2])
    except ProtocolError as error:
        raise LinkProtocolError(step, f"the lock sent a bad {kind.__name__}: {error}") from error
