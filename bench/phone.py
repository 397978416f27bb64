"""Phone visit speed: a whole door visit through bleak on bumble's radio, against a bare cycle.

Theory of operation: one asyncio run, one :class:`infra.radio.RadioLink` with no timing
model (frames cross in the event loop), one provisioned lock served by a real
:class:`controller.ble_door.BleDoor` face over :class:`controller.runtime.LockRuntime`
on in-memory flash, and a phone radio driving it through ``BleakClient`` with the
:class:`phone_bridge.bleak_bumble.BumbleClient` backend.

* ``door_visit_ms_median``: :func:`phone_bridge.visit.visit_door` on the first lock, which
  holds the resident: connect (MTU exchange, discovery), notifications, HELLO, AUTH and
  the unlock, a one-change bundle (a new keycard; sealed untimed before each sample and
  held in a real :class:`~phone_bridge.store.PhoneStore` SQLite file), the signed
  receipt, the audit batches and the AUDIT_ACK held from the last sample, disconnect.
  The visit ends audit collection after a quiet interval (the lock does not announce how
  many batches follow); on this radio frames cross in well under a millisecond, so the
  bench waits ``audit_quiet_ms``, reported with the figures.
* ``bare_connect_write_ms_median``: ``BleakClient`` connect (the same MTU exchange and
  discovery), one 244-byte write without response (zeros: the lock refuses the segment
  at once and its state does not change), disconnect, on the same lock. Visits and bare
  cycles alternate, so both see the same machine and the same advertising (a central
  connects on the peer's next advertisement, and a lock advertises again as soon as a
  phone leaves); the goal is ``visit <= 2 x bare`` (``door_visit_over_bare``).
* ``door_visit_ms_modelled``: the same visit with the link's timing model
  (:class:`infra.radio.RadioTiming`, 30 ms connection interval, 4 packets of 27 bytes
  per event), what a real phone would see; a few samples, no goal.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bleak import BleakClient
from bumble.device import Device

from controller.ble_door import BleDoor
from controller.config import ControllerConfig
from controller.events import MQTT, FrameReceived
from controller.identity import LockIdentity
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium
from infra.radio import RadioLink, RadioTiming, device_on_link
from phone_bridge.bleak_bumble import BumbleClient
from phone_bridge.link import LinkSession
from phone_bridge.store import PhoneStore
from phone_bridge.visit import ClientFactory, VisitConfig, VisitReport, visit_door
from protocol import (
    AuditAck,
    AuditBatch,
    Credential,
    CredentialHistory,
    CredentialKind,
    MobileCredential,
    Reason,
    ScopeKind,
)
from protocol.crypto import ed25519_private_from_seed, public_bytes
from protocol.frame import decode_frame
from protocol.transport import CHAR_RX_UUID, SERVICE_UUID
from simulators.fixture import World, counting_random, fixed_bytes

from . import Figures, Goal

__all__ = ["GOALS", "UNITS", "run"]

GOALS: dict[str, Goal] = {"door_visit_over_bare": ("<=", 2.0)}
UNITS = {
    "door_visit_ms_median": "ms",
    "bare_connect_write_ms_median": "ms",
    "door_visit_over_bare": "x",
    "door_visit_ms_modelled": "ms",
    "audit_quiet_ms": "ms",
}
WALL_TIME = 1_800_000_000
PERSON = fixed_bytes("bench phone person", 16)
AUDIT_QUIET_S = 0.002
WAIT = 10.0
"""Upper bound of one visit or bare cycle."""
MODELLED = RadioTiming(connection_interval=0.030)


def run(quick: bool) -> Figures:
    """Measure the figures (``quick``: fewer samples)."""
    samples, modelled = (15, 2) if quick else (60, 5)
    with tempfile.TemporaryDirectory(prefix="latchsim-bench-phone-") as tmp:
        fast = asyncio.run(_fast_figures(Path(tmp), samples))
        slow = asyncio.run(_modelled_ms(Path(tmp), modelled))
    visit, bare = fast
    return {
        "door_visit_ms_median": round(visit, 2),
        "bare_connect_write_ms_median": round(bare, 2),
        "door_visit_over_bare": round(visit / bare, 2),
        "door_visit_ms_modelled": round(slow, 1),
        "audit_quiet_ms": AUDIT_QUIET_S * 1000,
    }


async def _fast_figures(tmp: Path, samples: int) -> tuple[float, float]:
    scene = await Scene.start(RadioLink(), tmp / "fast.sqlite", "fast")
    visits: list[float] = []
    bares: list[float] = []
    try:
        await scene.sample()  # warm up: first connection, imports, SQLite file
        await _bare_cycle(scene.phone, scene.door)
        for _ in range(samples):
            visits.append(await scene.sample())
            bares.append(await _timed(lambda: _bare_cycle(scene.phone, scene.door)))
    finally:
        await scene.stop()
    return statistics.median(visits) * 1000, statistics.median(bares) * 1000


async def _modelled_ms(tmp: Path, samples: int) -> float:
    scene = await Scene.start(RadioLink(timing=MODELLED), tmp / "modelled.sqlite", "modelled")
    try:
        await scene.sample()
        times = [await scene.sample() for _ in range(samples)]
    finally:
        await scene.stop()
    return statistics.median(times) * 1000


async def _timed(work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    async with asyncio.timeout(WAIT):
        await work()
    return time.perf_counter() - started


# --- the scene ---------------------------------------------------------------------------


@dataclass
class Scene:
    """A lock that holds the resident, its phone radio, store and held AUDIT_ACK."""

    world: World
    door: BleDoor
    phone: Device
    history: CredentialHistory
    store: PhoneStore
    credential: MobileCredential
    label: str
    session: LinkSession = field(default_factory=LinkSession)
    ack: bytes | None = None
    changes: int = 0

    @classmethod
    async def start(cls, link: RadioLink, store_path: Path, label: str) -> Scene:
        world = World()
        door = await _door(link, label, world)
        phone = device_on_link(link, f"bench phone {label}", "F0:00:00:00:00:01")
        await phone.power_on()
        history = CredentialHistory(door.door_id)
        history.commit(upserts=[Credential(kind=CredentialKind.PERSON, credential_id=PERSON)])
        scene = cls(
            world, door, phone, history, PhoneStore(store_path), _credential(world, door), label
        )
        scene._apply(scene._bundle())  # the lock holds the resident before the first visit
        return scene

    def _bundle(self) -> bytes:
        base = self.history.current.version - 1
        sealed = self.history.bundle(
            base,
            door_public=self.door.runtime.controller.state.identity.sealing_key().public_key(),
            cloud_key=self.world.cloud_key,
            key_epoch=0,
            ephemeral=self.world.ephemeral(f"bench {self.label} {self.changes}"),
        )
        return sealed.to_frame()

    def _apply(self, frame: bytes) -> None:
        self.door.runtime.handle(FrameReceived(MQTT, frame))

    async def sample(self) -> float:
        """Seconds of one visit carrying a one-change bundle (sealed and checked untimed)."""
        self.changes += 1
        card = fixed_bytes(f"bench card {self.changes}", 7)
        key = fixed_bytes(f"bench card key {self.changes}", 16)
        upsert = Credential(kind=CredentialKind.KEYCARD, credential_id=card, card_key=key)
        self.history.commit(upserts=[upsert])
        self.store.keep_bundles({self.door.door_id.hex(): self._bundle()}, now=WALL_TIME)
        reports: list[VisitReport] = []
        elapsed = await _timed(lambda: self._visit(reports))
        self._check(reports[0])
        return elapsed

    async def _visit(self, reports: list[VisitReport]) -> None:
        reports.append(
            await visit_door(
                self._clients(),
                credential=self.credential,
                phone_key=_PHONE_KEY,
                store=self.store,
                audit_ack=self.ack,
                session=self.session,
                config=VisitConfig(audit_quiet_s=AUDIT_QUIET_S),
                wall_time=lambda: WALL_TIME,
            )
        )

    def _check(self, report: VisitReport) -> None:
        if report.reason is not Reason.GRANTED or report.receipt is None:
            raise RuntimeError(f"the bench visit failed: {report.reason}, {report.errors}")
        if report.version_after != self.history.current.version:
            raise RuntimeError(f"the lock is at {report.version_after}, not the bundle's target")
        for upload in self.store.uploads():
            self.store.uploaded(upload)
        if report.audit_batches:  # what the cloud would answer: ack the last batch
            identity = self.door.runtime.controller.state.identity.identity_key().public_key()
            batch = AuditBatch.verified_from_bytes(
                decode_frame(report.audit_batches[-1])[2], identity
            )
            ack = AuditAck(door_id=self.door.door_id, key_epoch=0, up_to_seq=batch.last_seq)
            self.ack = ack.signed(self.world.cloud_key).to_frame()

    def _clients(self) -> ClientFactory:
        address = self.door.address.to_string(False)
        return lambda closed: BleakClient(
            address,
            closed,
            services=[SERVICE_UUID],  # as the phone does: discover the door service only
            backend=BumbleClient,
            central=self.phone,
            timeout=WAIT,
        )

    async def stop(self) -> None:
        await self.door.stop()
        await self.phone.power_off()


_PHONE_KEY = ed25519_private_from_seed(fixed_bytes("bench phone key"))


def _credential(world: World, door: BleDoor) -> MobileCredential:
    return MobileCredential(
        key_epoch=0,
        credential_id=fixed_bytes("bench mobile credential", 16),
        person_id=PERSON,
        phone_public_key=public_bytes(_PHONE_KEY),
        valid_from=WALL_TIME - 60,
        valid_until=WALL_TIME + 86_400,
        scope_kind=ScopeKind.DOORS,
        scope_ids=(door.door_id,),
    ).signed(world.cloud_key)


async def _door(link: RadioLink, label: str, world: World | None = None) -> BleDoor:
    identity = LockIdentity.generate(
        door_id=fixed_bytes(f"bench door {label}", 16),
        property_id=fixed_bytes("bench property", 16),
        doorcode_secret=fixed_bytes(f"bench doorcode {label}"),
        random=counting_random(f"bench lock {label}"),
    )
    runtime = LockRuntime.provision(
        Flash(MemoryMedium()),
        identity,
        public_bytes((world or World()).cloud_key),
        config=ControllerConfig(),
        clock=asyncio.get_running_loop().time,
        wall_time=WALL_TIME,
        random=counting_random(f"bench runtime {label}"),
    )
    door = BleDoor.on_link(runtime, link, advertising_interval_ms=100.0)
    await door.start()
    return door


async def _bare_cycle(phone: Device, door: BleDoor) -> None:
    """A bleak connect, one 244-byte write without response, a disconnect."""
    address = door.address.to_string(False)
    client = BleakClient(address, backend=BumbleClient, central=phone, timeout=WAIT)
    await client.connect()
    try:
        await client.write_gatt_char(CHAR_RX_UUID, bytes(244), response=False)
    finally:
        await client.disconnect()
