"""The resident's phone as one object: log in, prefetch bundles, visit doors, drain uploads.

Theory of operation
-------------------
A :class:`Phone` joins the phone bridge's parts: its Ed25519 key, a
:class:`~phone_bridge.store.PhoneStore` file, a :class:`~phone_bridge.cloud_client.CloudClient`
and a *door finder* (door id → a bleak client factory for that door; :class:`BleakDoors`
scans for the door's advertisement, ``docs/protocol.md`` §7.1.5). It holds no state of
its own but the link session: everything that must survive a restart is in the store.

* :meth:`Phone.login` logs the phone in with the resident's token and keeps the phone
  token and mobile credential in the store; a phone built later on the same file is
  logged in already.
* :meth:`Phone.prefetch` replaces the held bundles with the cloud's pending ones and adds
  the cloud's newer KEY_ROTATION frames; with no signal it keeps what it held (the point
  of prefetching is the basement door).
* :meth:`Phone.visit` runs :func:`~phone_bridge.visit.visit_door` for one door, delivering
  the AUDIT_ACK held for that door, then tries :meth:`Phone.drain` (a refused phone token
  is reported in the result's ``drain.stopped``, not raised, so the visit's report is
  kept). A lock checks AUTH
  before it takes the bundle (§4), so a lock that learns of the resident from the very
  bundle the phone carries refuses the first AUTH; an unlock visit then connects once
  more (the lock now holds the newer list), at most once.
* :meth:`Phone.drain` uploads the queue oldest first, taking each item off only after the
  cloud has it. No answer stops the drain and keeps the rest in order. A refusal of one
  item (4xx) is logged and the item dropped, since sending it again cannot succeed; a
  refused *token* (401) is not the item's fault: the drain stops, keeps everything and
  raises. The AUDIT_ACK frames the cloud answers audit uploads with are kept per door
  for the next visit there.

Errors are :class:`PhoneError` subclasses; ``step`` names the step that failed (``login``,
``prefetch``, ``scan``, ``visit: connect``, ``drain`` …) and the message starts with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError

from protocol import Intent, MobileCredential, ProtocolError, Reason, ScopeKind
from protocol.crypto import public_bytes
from protocol.transport import ADVERTISING_COMPANY_ID, SERVICE_UUID

from .cloud_client import (
    CloudClient,
    CloudClientError,
    CloudRefusedError,
    CloudUnreachableError,
    PhoneLogin,
)
from .errors import StepError
from .link import LinkSession
from .store import HeldLogin, PhoneStore, StoreError, Upload
from .visit import (
    ClientFactory,
    VisitConfig,
    VisitError,
    VisitReport,
    cloud_time_sync,
    visit_door,
)

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "BleakDoors",
    "DoorFinder",
    "DoorInRange",
    "DoorNotFoundError",
    "DoorScanner",
    "DrainResult",
    "NotLoggedInError",
    "Phone",
    "PhoneError",
    "PhoneOfflineError",
    "PhoneRefusedError",
    "PhoneVisit",
    "PhoneVisitError",
    "PrefetchResult",
    "SyncOutcome",
]

logger = logging.getLogger(__name__)

DoorFinder = Callable[[str], Awaitable[ClientFactory]]
"""Door id (hex) → a factory of unconnected bleak clients for that door."""


class PhoneError(StepError):
    """A phone step failed; ``step`` names it and the message says why."""


class NotLoggedInError(PhoneError):
    """The step needs a login: call :meth:`Phone.login` first."""


class PhoneOfflineError(PhoneError):
    """The cloud did not answer (no signal, server down)."""


class PhoneRefusedError(PhoneError):
    """The cloud refused the step; ``status`` and ``detail`` are its answer."""

    def __init__(self, step: str, refused: CloudRefusedError) -> None:
        super().__init__(step, f"the cloud refused: {refused.status} {refused.detail}")
        self.status, self.detail = refused.status, refused.detail


class DoorNotFoundError(PhoneError):
    """No advertisement of the door was heard in time."""


class PhoneVisitError(PhoneError):
    """A visit failed on the link; ``report`` holds what was done before the failure."""

    def __init__(self, step: str, message: str, report: VisitReport) -> None:
        super().__init__(step, message)
        self.report = report


@dataclass(frozen=True)
class PrefetchResult:
    """``online``: the cloud answered; ``doors``: the doors a bundle is held for."""

    online: bool
    doors: tuple[str, ...]


@dataclass
class DrainResult:
    """What a drain did: uploads that went, refused (and dropped), and what still waits."""

    uploaded: int = 0
    refused: list[tuple[Upload, CloudRefusedError]] = field(default_factory=list)
    acks_kept: int = 0
    offline: bool = False
    """The cloud stopped answering; ``waiting`` items stay queued, in order."""
    waiting: int = 0
    stopped: str | None = None
    """Why a drain after a visit stopped early (the cloud refused the phone token)."""


@dataclass(frozen=True)
class PhoneVisit:
    """A visit's report and the drain that followed it.

    ``first`` is the report of a first session whose AUTH the lock refused before it
    applied the bundle the phone carried; ``report`` is then the second session's.
    """

    report: VisitReport
    drain: DrainResult
    first: VisitReport | None = None


@dataclass(frozen=True)
class DoorInRange:
    """A door heard advertising: its id (hex), BLE address and signal strength (dBm)."""

    door_id: str
    address: str
    rssi: int | None


@dataclass(frozen=True)
class SyncOutcome:
    """One door of :meth:`Phone.sync_all`: the visit, or the error that ended it."""

    door: DoorInRange
    visit: PhoneVisit | None = None
    error: PhoneError | None = None


@runtime_checkable
class DoorScanner(Protocol):
    """A door finder that can also list the doors in range (:class:`BleakDoors` can)."""

    async def scan(self, seconds: float) -> list[DoorInRange]: ...


@dataclass
class BleakDoors:
    """Finds a door by scanning with bleak for its door id in the advertisement (§7.1.5).

    *scanner_kwargs* / *client_kwargs* go to ``BleakScanner`` / ``BleakClient``: none on
    real hardware (the platform backend), ``bumble_backends(central)`` on bumble's radio.
    """

    scanner_kwargs: Mapping[str, Any] = field(default_factory=dict)
    client_kwargs: Mapping[str, Any] = field(default_factory=dict)
    scan_timeout_s: float = 5.0
    client_timeout_s: float = 10.0

    async def __call__(self, door_id: str) -> ClientFactory:
        wanted = bytes.fromhex(door_id)

        def is_door(_device: BLEDevice, adv: AdvertisementData) -> bool:
            return adv.manufacturer_data.get(ADVERTISING_COMPANY_ID) == wanted

        scanner_kwargs: dict[str, Any] = {"service_uuids": [SERVICE_UUID], **self.scanner_kwargs}
        try:
            device = await BleakScanner.find_device_by_filter(
                is_door, timeout=self.scan_timeout_s, **scanner_kwargs
            )
        except BleakError as error:
            raise PhoneError("scan", f"door {door_id}: {error}") from error
        if device is None:
            raise DoorNotFoundError(
                "scan", f"door {door_id} was not heard within {self.scan_timeout_s} s"
            )
        found: BLEDevice = device
        # Discovering the door service alone skips the GAP and GATT services' round trips
        # (a third of a connect at a 30 ms interval).
        return lambda closed: BleakClient(
            found,
            closed,
            services=[SERVICE_UUID],
            timeout=self.client_timeout_s,
            **self.client_kwargs,
        )

    async def scan(self, seconds: float) -> list[DoorInRange]:
        """Every door heard advertising its door id (§7.1.5) within *seconds*, by door id."""
        scanner_kwargs: dict[str, Any] = {"service_uuids": [SERVICE_UUID], **self.scanner_kwargs}
        try:
            heard = await BleakScanner.discover(seconds, return_adv=True, **scanner_kwargs)
        except BleakError as error:
            raise PhoneError("scan", str(error)) from error
        doors: dict[str, DoorInRange] = {}
        for device, adv in heard.values():
            door_id = adv.manufacturer_data.get(ADVERTISING_COMPANY_ID)
            if door_id is None or len(door_id) != 16:
                continue
            doors[door_id.hex()] = DoorInRange(door_id.hex(), device.address, adv.rssi)
        return [doors[d] for d in sorted(doors)]


class Phone:
    """One resident's phone (see the module docstring)."""

    def __init__(
        self,
        *,
        key: Ed25519PrivateKey,
        store: PhoneStore,
        cloud: CloudClient,
        doors: DoorFinder,
        session: LinkSession | None = None,
        config: VisitConfig | None = None,
        wall_time: Callable[[], int] = lambda: int(time.time()),
    ) -> None:
        self.key, self.store, self.cloud, self.doors = key, store, cloud, doors
        self.session = session or LinkSession()
        self.config = config or VisitConfig()
        self.wall_time = wall_time
        held = store.login()
        if held is not None:
            cloud.token = held.token

    @property
    def logged_in(self) -> HeldLogin | None:
        """The login the store holds, if any."""
        return self.store.login()

    async def login(self, resident_token: str) -> PhoneLogin:
        """Log this phone in for the resident; keep the phone token and mobile credential."""
        try:
            login = await self.cloud.login(resident_token, public_bytes(self.key))
        except CloudClientError as error:
            raise _cloud_error("login", error) from error
        held = HeldLogin(
            phone_id=login.phone_id,
            token=login.token,
            credential=login.credential,
            valid_from=login.valid_from,
            valid_until=login.valid_until,
            logged_in_at=self.wall_time(),
        )
        await asyncio.to_thread(self.store.keep_login, held)
        return login

    async def prefetch(self) -> PrefetchResult:
        """Hold the cloud's pending bundles and key rotations; with no answer, keep what was held.

        Rotations (§6.7) are fetched above the newest one held and kept with the older ones,
        so the phone carries them to a lock at any older epoch, offline too.
        """
        await self._require_login("prefetch")
        try:
            frames = await self.cloud.bundles()
        except CloudUnreachableError as error:
            logger.info("prefetch: offline, keeping the held bundles: %s", error)
            held = await asyncio.to_thread(self.store.bundles)
            return PrefetchResult(online=False, doors=tuple(b.door_id for b in held))
        except CloudClientError as error:
            raise _cloud_error("prefetch", error) from error
        try:
            await asyncio.to_thread(self.store.keep_bundles, frames, now=self.wall_time())
        except StoreError as error:
            raise PhoneError("prefetch", f"the cloud sent a bad frame: {error}") from error
        await self._prefetch_rotations()
        return PrefetchResult(online=True, doors=tuple(sorted(frames)))

    async def _prefetch_rotations(self) -> None:
        """Best effort: the bundles just held stay held if the rotations cannot be had."""
        try:
            held_epoch = await asyncio.to_thread(self.store.newest_rotation_epoch)
            rotations = await self.cloud.rotations(after=held_epoch)
            await asyncio.to_thread(
                self.store.keep_rotations, rotations.frames, now=self.wall_time()
            )
        except (CloudClientError, StoreError) as error:
            logger.warning("prefetch: key rotations not fetched: %s", error)

    async def visit(self, door: str, *, unlock: bool = True) -> PhoneVisit:
        """Visit *door* (id, hex): unlock (or only sync), carry bundle and ack; then drain."""
        door = door.lower()
        held = await self._require_login("visit")
        client_factory = await self.doors(door)
        intent = Intent.UNLOCK if unlock else Intent.SYNC_ONLY
        report = await self._visit_once(door, client_factory, held, intent)
        first = None
        if unlock and _bundle_may_grant(report):
            logger.info("visit %s: refused (%s) before the bundle; again", door, report.reason)
            first, report = report, await self._visit_once(door, client_factory, held, intent)
        return PhoneVisit(report, await self._drain_after_visit(), first)

    async def _drain_after_visit(self) -> DrainResult:
        """A drain whose refused token does not hide the visit's report."""
        try:
            return await self.drain()
        except PhoneRefusedError as error:
            waiting = len(await asyncio.to_thread(self.store.uploads))
            return DrainResult(waiting=waiting, stopped=str(error))

    async def _visit_once(
        self, door: str, client_factory: ClientFactory, held: HeldLogin, intent: Intent
    ) -> VisitReport:
        ack = await asyncio.to_thread(self.store.ack_for, door)
        try:
            report = await visit_door(
                client_factory,
                credential=held.credential,
                phone_key=self.key,
                store=self.store,
                intent=intent,
                audit_ack=ack,
                session=self.session,
                config=self.config,
                wall_time=self.wall_time,
                time_sync=cloud_time_sync(self.cloud, self.store, wall_time=self.wall_time),
            )
        except VisitError as error:
            raise PhoneVisitError(f"visit: {error.step}", error.reason, error.report) from error
        if ack is not None and report.audit_ack_delivered:
            await asyncio.to_thread(self.store.delivered_ack, door, ack)
        return report

    async def drain(self) -> DrainResult:
        """Upload what waits, oldest first (see the module docstring)."""
        await self._require_login("drain")
        result = DrainResult()
        pending = await asyncio.to_thread(self.store.uploads)
        for done, item in enumerate(pending):
            try:
                await self._upload(item, result)
            except CloudUnreachableError as error:
                logger.info("drain: offline, %d uploads wait: %s", len(pending) - done, error)
                result.offline, result.waiting = True, len(pending) - done
                return result
        return result

    async def _upload(self, item: Upload, result: DrainResult) -> None:
        try:
            answer = await self.cloud.upload(item)
        except CloudRefusedError as error:
            if error.status == 401:  # the token, not the item: keep everything
                raise PhoneRefusedError("drain", error) from error
            logger.warning(
                "drain: dropped %s %d of door %s: %s", item.kind, item.id, item.door_id, error
            )
            result.refused.append((item, error))
        else:
            result.uploaded += 1
            if answer.ack_frame is not None and await self._keep_ack(item, answer.ack_frame):
                result.acks_kept += 1
        await asyncio.to_thread(self.store.uploaded, item)

    async def _keep_ack(self, item: Upload, frame: bytes) -> bool:
        try:
            return await asyncio.to_thread(
                self.store.keep_ack, item.door_id, frame, now=self.wall_time()
            )
        except StoreError as error:
            logger.warning("drain: the cloud's audit ack is unusable: %s", error)
            return False

    async def _require_login(self, step: str) -> HeldLogin:
        held = await asyncio.to_thread(self.store.login)
        if held is None:
            raise NotLoggedInError(step, "log the phone in first")
        self.cloud.token = held.token
        return held

    # --- doors in range and manual sync of them all ----------------------------------------

    async def doors_in_range(self, seconds: float) -> list[DoorInRange]:
        """The doors heard within *seconds* (the door finder must be a :class:`DoorScanner`)."""
        if not isinstance(self.doors, DoorScanner):
            raise PhoneError("scan", "this phone's door finder cannot list the doors in range")
        return await self.doors.scan(seconds)

    async def own_doors(self) -> frozenset[str]:
        """Doors this phone syncs: those its mobile credential names, and those it holds a
        bundle for (a credential scoped to a property names no door ids)."""
        held = await self._require_login("sync")
        bundles = await asyncio.to_thread(self.store.bundles)
        return frozenset(_credential_doors(held.credential)) | {b.door_id for b in bundles}

    async def sync_all(self, *, seconds: float, also: Collection[str] = ()) -> list[SyncOutcome]:
        """Manual sync (no unlock) of every door in range that :meth:`own_doors` or *also*
        names, one after the other; a door's failure is its outcome, not raised."""
        wanted = await self.own_doors() | {d.lower() for d in also}
        outcomes = []
        for door in await self.doors_in_range(seconds):
            if door.door_id not in wanted:
                continue
            try:
                visit = await self.visit(door.door_id, unlock=False)
                outcomes.append(SyncOutcome(door, visit=visit))
            except PhoneError as error:
                outcomes.append(SyncOutcome(door, error=error))
        return outcomes


def _credential_doors(credential: bytes) -> tuple[str, ...]:
    """The door ids a held mobile credential names (none for a property scope)."""
    try:
        parsed = MobileCredential.from_bytes(credential)
    except ProtocolError:
        return ()
    if parsed.scope_kind is ScopeKind.PROPERTY:
        return ()
    return tuple(d.hex() for d in parsed.scope_ids)


def _bundle_may_grant(report: VisitReport) -> bool:
    """The lock refused the AUTH, then applied a newer list: it may know the phone now."""
    before, after = report.version_before, report.version_after
    refused = report.reason is not None and report.reason is not Reason.GRANTED
    return refused and before is not None and after is not None and after > before


def _cloud_error(step: str, error: CloudClientError) -> PhoneError:
    if isinstance(error, CloudRefusedError):
        return PhoneRefusedError(step, error)
    if isinstance(error, CloudUnreachableError):
        return PhoneOfflineError(step, str(error))
    return PhoneError(step, str(error))
