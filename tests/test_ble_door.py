"""The lock's BLE face over bumble's virtual radio, driven by a bumble GATT client.

Two bumble devices share one :class:`infra.radio.RadioLink` inside the test's
event loop: the door (:class:`controller.ble_door.BleDoor` over a provisioned
:class:`LockRuntime` on in-memory flash) and a minimal phone (:class:`PhoneLink`:
connect, exchange the MTU, discover the service, subscribe to ``tx`` and ``ack``,
write segments to ``rx``). Every wait is bounded by ``asyncio.timeout``; nothing
sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from bumble import core, hci
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.ble_door import BleDoor, advertising_payloads
from controller.config import ControllerConfig
from controller.events import Action, Event, FrameReceived
from controller.identity import LockIdentity
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium
from infra.radio import RadioLink, RadioTiming, device_on_link
from protocol import (
    AuditBatch,
    AuditEventKind,
    Auth,
    Credential,
    CredentialHistory,
    CredentialKind,
    ErrorCode,
    ErrorMessage,
    Hello,
    Intent,
    Message,
    MessageType,
    MobileCredential,
    Receipt,
    ReceiptStatus,
    ScopeKind,
    UnlockResult,
    decode_message,
)
from protocol.crypto import ed25519_private_from_seed, public_bytes
from protocol.frame import decode_frame, encode_frame
from protocol.segmentation import Reassembler, SegmentAck, segment_frame
from protocol.transport import (
    CHAR_ACK_UUID,
    CHAR_INFO_UUID,
    CHAR_RX_UUID,
    CHAR_TX_UUID,
    SERVICE_UUID,
)
from simulators.fixture import World, fixed_bytes

WALL_TIME = 1_750_000_000
PERSON = fixed_bytes("ble person", 16)
CARD_UID = bytes.fromhex("04a1b2c3d4e5f6")
WAIT = 5.0
"""Upper bound for any single wait (the radio answers in milliseconds)."""
ADVERTISING_MS = 20.0


@dataclass
class CountingRuntime(LockRuntime):
    """A runtime that remembers every event fed to it."""

    events: list[Event] = field(default_factory=list)

    def handle(self, event: Event) -> list[Action]:
        self.events.append(event)
        return super().handle(event)

    def frames_of(self, message_type: MessageType) -> int:
        """How many complete frames of *message_type* reached the core."""
        return sum(
            1
            for e in self.events
            if isinstance(e, FrameReceived) and len(e.data) > 3 and e.data[3] == message_type
        )


@dataclass
class Bench:
    """One door and one phone radio on a fresh virtual link."""

    world: World
    identity: LockIdentity
    runtime: CountingRuntime
    door: BleDoor
    phone: Device
    link: RadioLink
    history: CredentialHistory
    phone_key: Ed25519PrivateKey
    energised: list[int] = field(default_factory=list)

    def bundle(self, base_version: int, label: str) -> bytes:
        """The cloud's sealed bundle frame from *base_version* to the current list."""
        sealed = self.history.bundle(
            base_version,
            door_public=self.identity.sealing_key().public_key(),
            cloud_key=self.world.cloud_key,
            key_epoch=0,
            ephemeral=self.world.ephemeral(label),
        )
        return sealed.to_frame()

    def grant_person(self) -> bytes:
        """Commit the resident and a keycard; return the bundle that carries them."""
        self.history.commit(
            upserts=[
                Credential(kind=CredentialKind.PERSON, credential_id=PERSON),
                Credential(
                    kind=CredentialKind.KEYCARD,
                    credential_id=CARD_UID,
                    card_key=fixed_bytes("ble card", 16),
                ),
            ]
        )
        return self.bundle(0, "grant")

    def auth(self, hello: Hello, intent: Intent = Intent.UNLOCK) -> bytes:
        """An AUTH frame answering *hello* with a cloud-signed mobile credential."""
        credential = MobileCredential(
            key_epoch=0,
            credential_id=fixed_bytes("ble mobile credential", 16),
            person_id=PERSON,
            phone_public_key=public_bytes(self.phone_key),
            valid_from=WALL_TIME - 60,
            valid_until=WALL_TIME + 7 * 86_400,
            scope_kind=ScopeKind.DOORS,
            scope_ids=(self.identity.door_id,),
        ).signed(self.world.cloud_key)
        auth = Auth.create(
            credential=credential,
            phone_key=self.phone_key,
            door_id=hello.door_id,
            challenge=hello.challenge,
            intent=intent,
        )
        return auth.to_frame()


async def make_bench(link: RadioLink, number: int = 1) -> Bench:
    """Provision lock *number*, put it and a phone on *link*, start advertising."""
    world = World()
    rng = random.Random(number)
    identity = LockIdentity.generate(
        door_id=fixed_bytes(f"ble door {number}", 16),
        property_id=fixed_bytes("ble property", 16),
        doorcode_secret=fixed_bytes("ble doorcode"),
        random=rng.randbytes,
    )
    loop = asyncio.get_running_loop()
    runtime = CountingRuntime.provision(
        Flash(MemoryMedium()),
        identity,
        public_bytes(world.cloud_key),
        config=ControllerConfig(),
        clock=loop.time,
        wall_time=WALL_TIME,
        random=rng.randbytes,
    )
    assert isinstance(runtime, CountingRuntime)  # provision() is typed to return the base class
    energised: list[int] = []
    door = BleDoor.on_link(
        runtime, link, on_energise=energised.append, advertising_interval_ms=ADVERTISING_MS
    )
    await door.start()
    phone = device_on_link(link, f"phone {number}", f"F0:00:00:00:00:{number:02X}")
    await phone.power_on()
    return Bench(
        world=world,
        identity=identity,
        runtime=runtime,
        door=door,
        phone=phone,
        link=link,
        history=CredentialHistory(identity.door_id),
        phone_key=ed25519_private_from_seed(fixed_bytes("ble phone key")),
        energised=energised,
    )


@pytest.fixture
async def bench() -> AsyncIterator[Bench]:
    made = await make_bench(RadioLink())
    yield made
    await made.door.stop()
    await made.phone.power_off()


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The door logs no error: hostile bytes are refused quietly, never crash a callback."""
    caplog.set_level(logging.DEBUG, logger="controller")
    yield
    errors = [r for r in caplog.records if r.name.startswith("controller") and r.levelno >= 40]
    assert errors == []


# --- the phone: a minimal bumble GATT client -----------------------------------------------


@dataclass
class PhoneLink:
    """One connection from the phone to the door, speaking §7.1 by hand."""

    connection: Connection
    peer: Peer
    rx: CharacteristicProxy[bytes]
    ack_char: CharacteristicProxy[bytes]
    info: CharacteristicProxy[bytes]
    mtu: int
    frames: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    acks: asyncio.Queue[SegmentAck] = field(default_factory=asyncio.Queue)
    reassembler: Reassembler = field(default_factory=Reassembler)

    @classmethod
    async def connect(cls, phone: Device, door: BleDoor, mtu: int) -> PhoneLink:
        """Connect, exchange *mtu*, discover, then enable ``ack`` and ``tx`` notifications."""
        async with asyncio.timeout(WAIT):
            connection = await phone.connect(door.address, timeout=WAIT)
            peer = Peer(connection)
            if mtu > 23:
                assert await peer.request_mtu(mtu) == mtu
            await peer.discover_services([core.UUID(SERVICE_UUID)])
            (service,) = peer.get_services_by_uuid(core.UUID(SERVICE_UUID))
            await service.discover_characteristics()

            def characteristic(uuid: str) -> CharacteristicProxy[bytes]:
                (found,) = peer.get_characteristics_by_uuid(core.UUID(uuid), service)
                return found

            link = cls(
                connection,
                peer,
                characteristic(CHAR_RX_UUID),
                characteristic(CHAR_ACK_UUID),
                characteristic(CHAR_INFO_UUID),
                mtu,
            )
            await peer.subscribe(link.ack_char, link._on_ack)
            await peer.subscribe(characteristic(CHAR_TX_UUID), link._on_tx)
        return link

    def _on_tx(self, value: bytes) -> None:
        frame = self.reassembler.receive(value)
        if frame is not None:
            self.frames.put_nowait(frame)

    def _on_ack(self, value: bytes) -> None:
        self.acks.put_nowait(SegmentAck.from_bytes(value))

    async def write_segments(self, segments: list[bytes]) -> None:
        for segment in segments:
            await self.peer.write_value(self.rx, segment, with_response=False)

    async def send(self, frame: bytes, transfer_id: int) -> None:
        """Write *frame* to ``rx`` as one transfer at this link's MTU."""
        await self.write_segments(segment_frame(frame, mtu=self.mtu, transfer_id=transfer_id))

    async def frame(self) -> bytes:
        """The next complete frame on ``tx``; the phone acks it on ``ack``."""
        async with asyncio.timeout(WAIT):
            frame = await self.frames.get()
        ack = self.reassembler.ack()
        assert ack is not None
        await self.peer.write_value(self.ack_char, ack.to_bytes())
        return frame

    async def message(self) -> Message:
        return decode_message(await self.frame())

    async def ack(self) -> SegmentAck:
        async with asyncio.timeout(WAIT):
            return await self.acks.get()

    async def disconnect(self) -> None:
        async with asyncio.timeout(WAIT):
            await self.connection.disconnect()


async def expect(link: PhoneLink, kind: type[Message]) -> Message:
    message = await link.message()
    assert isinstance(message, kind), message
    return message


def payload(frame: bytes) -> bytes:
    return decode_frame(frame)[2]


# --- the session --------------------------------------------------------------------------


@pytest.mark.parametrize("mtu", [23, 247])
async def test_session_hello_auth_unlock_bundle_receipt_audit(bench: Bench, mtu: int) -> None:
    link = await PhoneLink.connect(bench.phone, bench.door, mtu)
    hello = await expect(link, Hello)
    assert isinstance(hello, Hello) and hello.door_id == bench.identity.door_id
    assert hello.list_version == 0

    grant = bench.grant_person()
    assert mtu != 23 or len(segment_frame(grant, mtu=mtu, transfer_id=1)) > 10
    await link.send(grant, transfer_id=1)
    assert await link.ack() == SegmentAck(transfer_id=1, next_index=-(-len(grant) // (mtu - 9)))
    receipt = await expect(link, Receipt)
    assert isinstance(receipt, Receipt) and receipt.list_version == 1

    await link.send(bench.auth(hello), transfer_id=2)
    await link.ack()
    result = await expect(link, UnlockResult)
    assert isinstance(result, UnlockResult) and result.opened
    assert bench.energised == [ControllerConfig().unlock_seconds]
    first_batch = AuditBatch.verified_from_bytes(
        payload(await link.frame()), bench.identity.identity_key().public_key()
    )
    assert AuditEventKind.PHONE_DECISION in {e.kind for e in first_batch.events}
    assert first_batch.events[-1].seq == result.audit_seq

    bench.history.commit(
        upserts=[
            Credential(
                kind=CredentialKind.KEYCARD,
                credential_id=b"\x04second",
                card_key=fixed_bytes("ble card 2", 16),
            )
        ]
    )
    update = bench.bundle(1, "update")
    await link.send(update, transfer_id=3)
    await link.ack()
    signed = Receipt.verified_from_bytes(
        payload(await link.frame()), bench.identity.identity_key().public_key()
    )
    assert signed.status is ReceiptStatus.OK and signed.list_version == 2
    assert signed.list_digest == bench.history.current.digest
    batch = AuditBatch.verified_from_bytes(
        payload(await link.frame()), bench.identity.identity_key().public_key()
    )
    assert batch.events[-1].kind is AuditEventKind.BUNDLE_APPLIED
    assert bench.runtime.controller.state.held.version == 2

    closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    link.connection.once(Connection.EVENT_DISCONNECTION, closed.set_result)
    await bench.door.stop()  # drops the phone (the fixture's second stop is a no-op)
    async with asyncio.timeout(WAIT):
        await closed


async def test_info_and_advertisement_carry_the_door_id(bench: Bench) -> None:
    door_id = bench.identity.door_id
    advertising, scan_response = advertising_payloads(door_id)
    uuid_list = bytes.fromhex("1107dec0d0110a5c3e9d8a4c1e7a01006b6c")
    assert advertising == bytes.fromhex("020106") + uuid_list  # §7.1.5, legacy: 21 bytes
    assert scan_response == bytes.fromhex("13ffffff") + door_id  # 20 bytes

    seen: asyncio.Queue[Advertisement] = asyncio.Queue()
    bench.phone.on(Device.EVENT_ADVERTISEMENT, seen.put_nowait)
    await bench.phone.start_scanning(active=True)
    async with asyncio.timeout(WAIT):
        while True:
            advert = await seen.get()
            if advert.address == bench.door.address and bytes(advert.data) == (
                advertising + scan_response
            ):
                break
    await bench.phone.stop_scanning()

    link = await PhoneLink.connect(bench.phone, bench.door, 23)
    assert await link.peer.read_value(link.info) == door_id
    await link.disconnect()


# --- resume after a dropped link -----------------------------------------------------------


@pytest.mark.parametrize(("first_mtu", "second_mtu"), [(23, 23), (23, 247)])
async def test_bundle_resumes_after_dropped_link_and_applies_once(
    bench: Bench, first_mtu: int, second_mtu: int
) -> None:
    grant = bench.grant_person()
    segments = segment_frame(grant, mtu=first_mtu, transfer_id=40)
    half = len(segments) // 2
    link = await PhoneLink.connect(bench.phone, bench.door, first_mtu)
    await expect(link, Hello)
    await link.write_segments(segments[:half])
    await link.disconnect()

    link = await PhoneLink.connect(bench.phone, bench.door, second_mtu)
    await expect(link, Hello)
    resume = await link.ack()  # the door's resume point, sent when ack notifications start
    assert resume == SegmentAck(transfer_id=40, next_index=half)
    if second_mtu == first_mtu:  # §7.1.3: resend from next_index
        await link.write_segments(
            segment_frame(grant, mtu=first_mtu, transfer_id=40, start_index=resume.next_index)
        )
    else:  # the MTU changed: start over with a new transfer id
        await link.send(grant, transfer_id=41)
    receipt = await expect(link, Receipt)
    assert isinstance(receipt, Receipt) and receipt.list_version == 1
    assert bench.runtime.frames_of(MessageType.BUNDLE) == 1
    applied = [
        e
        for e in bench.runtime.controller.state.audit.events()
        if e.kind is AuditEventKind.BUNDLE_APPLIED
    ]
    assert len(applied) == 1
    await link.disconnect()


# --- hostile input -------------------------------------------------------------------------


async def test_hostile_segments_and_frames_are_refused_and_the_door_keeps_serving(
    bench: Bench,
) -> None:
    link = await PhoneLink.connect(bench.phone, bench.door, 23)
    hello = await expect(link, Hello)
    assert isinstance(hello, Hello)
    # The lock's list must hold the person for the final AUTH; grant before the attack.
    grant = bench.grant_person()
    await link.send(grant, transfer_id=1)
    completed = await link.ack()
    await expect(link, Receipt)
    before = bench.runtime.controller.state.to_snapshot()
    rng = random.Random(2024)

    # Transport-level faults: an ack with the resume point, never an ERROR frame.
    stray = segment_frame(b"x" * 40, mtu=23, transfer_id=9)[1]  # transfer 9 never started
    for segment in (b"", b"\x00\x02", b"\x00\x05\x00\x00\x00\x00x", stray):
        await link.write_segments([segment])
        assert await link.ack() == completed
    # Bad frames in well-formed transfers: one ERROR frame each.
    valid_auth = bench.auth(hello)
    auth = bytearray(valid_auth)
    auth[len(auth) // 2] ^= 0x40
    bad_frames = [
        rng.randbytes(30),
        bytes(auth),
        encode_frame(0x7E, b"unknown type"),
        encode_frame(MessageType.RECEIPT, rng.randbytes(50)),
        *(encode_frame(t, rng.randbytes(rng.randrange(1, 60))) for t in _answered_types(rng)),
    ]
    for number, frame in enumerate(bad_frames, start=100):
        await link.send(frame, transfer_id=number)
        error = await expect(link, ErrorMessage)
        assert isinstance(error, ErrorMessage) and error.code is not ErrorCode.NONE
    # A valid AUTH whose segments were mutated in flight: the frame checks catch it.
    for number in range(200, 210):
        segments = [bytearray(s) for s in segment_frame(valid_auth, mtu=23, transfer_id=number)]
        victim = rng.choice(segments)
        victim[rng.randrange(6, len(victim))] ^= 1 << rng.randrange(8)
        await link.write_segments([bytes(s) for s in segments])
        await expect(link, ErrorMessage)
    # Garbage acks from the phone are ignored.
    for garbage in (b"", b"\x01", rng.randbytes(9)):
        await link.peer.write_value(link.ack_char, garbage)
    # Random writes: whatever they do, no exception escapes and no state changes.
    for _ in range(300):
        await link.write_segments([rng.randbytes(rng.randrange(0, 21))])
    assert bench.runtime.controller.state.to_snapshot() == before
    assert bench.energised == []

    await link.send(bench.auth(hello), transfer_id=_fresh_id(link))
    result = await _next_of(link, UnlockResult)
    assert isinstance(result, UnlockResult) and result.opened
    assert bench.energised == [ControllerConfig().unlock_seconds]
    await link.disconnect()


def _answered_types(rng: random.Random) -> list[MessageType]:
    """Message types the lock answers with an ERROR when their payload is garbage."""
    types = [t for t in MessageType if t is not MessageType.ERROR]
    return [rng.choice(types) for _ in range(12)]


def _fresh_id(link: PhoneLink) -> int:
    """A transfer id other than the one the door's latest ack names (§7.1.3)."""
    latest: SegmentAck | None = None
    while not link.acks.empty():
        latest = link.acks.get_nowait()
    return 500 if latest is None else (latest.transfer_id + 1) % 0x10000


async def _next_of(link: PhoneLink, kind: type[Message]) -> Message:
    """Skip frames (ERRORs answering random writes that completed) until one of *kind*."""
    async with asyncio.timeout(WAIT):
        while True:
            message = await link.message()
            if isinstance(message, kind):
                return message
            assert isinstance(message, ErrorMessage), message


# --- the radio -----------------------------------------------------------------------------


async def test_adverts_reach_only_listeners_and_connect_timeouts_return() -> None:
    link = RadioLink()
    doors = [await make_bench(link, number) for number in range(1, 4)]
    phone = doors[0].phone
    assert link.listeners == frozenset()
    await phone.start_scanning()
    assert {c.name for c in link.listeners} == {"phone 1"}
    await phone.stop_scanning()
    assert link.listeners == frozenset()

    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(WAIT):  # the stock controller would never answer the cancel
        with pytest.raises(core.TimeoutError):
            await phone.connect(hci.Address("F0:00:00:00:00:99"), timeout=0.05)
    assert loop.time() - started < 1.0
    assert link.listeners == frozenset()
    for made in doors:
        await made.door.stop()
        await made.phone.power_off()


async def test_timing_model_spaces_segments_by_connection_events() -> None:
    timing = RadioTiming(connection_interval=0.01, packets_per_interval=1)
    made = await make_bench(RadioLink(timing=timing))
    loop = asyncio.get_running_loop()
    link = await PhoneLink.connect(made.phone, made.door, 23)
    started = loop.time()
    hello = await expect(link, Hello)  # 67 bytes: 5 notifications, one per event
    assert isinstance(hello, Hello)
    assert loop.time() - started >= 4 * timing.connection_interval
    await link.disconnect()
    await made.door.stop()
    await made.phone.power_off()
