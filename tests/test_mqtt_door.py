"""The MQTT face of the lock (``controller.mqtt_door``) against a real broker.

Theory of operation: each test provisions a fresh lock (random door id, so retained
messages of other runs cannot interfere) on in-memory flash, runs an
:class:`MqttDoor` for it, and plays the cloud with its own aiomqtt client
(:class:`Cloud`): it publishes sealed bundles and hostile bytes to the door's topics
and reads what the door publishes, verifying signatures with the door's public key.

Broker: the ``mqtt_broker`` fixture (``tests/conftest.py``) is Mosquitto when
``$LATCHSIM_MQTT_URL`` (default ``mqtt://127.0.0.1:1883``) is reachable, else an
embedded amqtt broker; the broker tests run twice, once on that "preferred" broker
and once on an embedded one, and each records which broker it used. The restart
test always uses an embedded broker, because a test cannot restart the shared
system Mosquitto. A lost link is simulated by :class:`LinkCutter`, a TCP relay
between the door and the broker whose connections the test aborts.

Nothing sleeps and hopes: every wait is for a message or an event, bounded by
``asyncio.timeout``. Teardown stops each door, clears its retained topics and wipes
its persistent session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from controller.config import ControllerConfig
from controller.events import Action, CardChallenge, CardTapped
from controller.identity import LockIdentity
from controller.mqtt_door import Backoff, MqttDoor, topic_for_frame
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium
from infra.broker import BrokerChoice, start_embedded_broker
from protocol import (
    AuditBatch,
    AuditEventKind,
    Credential,
    CredentialHistory,
    CredentialKind,
    ErrorCode,
    ErrorMessage,
    Frame,
    Hello,
    MessageType,
    Receipt,
    ReceiptStatus,
)
from protocol.crypto import public_bytes
from protocol.errors import ProtocolError
from protocol.frame import decode_frame
from protocol.transport import KEY_ROTATION_TOPIC, TOPIC_PREFIX, door_topic
from simulators.fixture import World

WORLD = World()
WAIT = 5.0
"""Upper bound for any one expected message or event."""
FAST = Backoff(initial=0.05, cap=0.5)
BOTH_BROKERS = pytest.mark.parametrize("mqtt_broker", ["preferred", "embedded"], indirect=True)
NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
CLOUD_LEAVES = ("hello", "receipt", "audit", "error", "status")
RETAINED_LEAVES = ("hello", "bundle", "status")


# --- the lock and the cloud's bundles ------------------------------------------------


def provision(clock: Callable[[], float], config: ControllerConfig) -> LockRuntime:
    """A new lock with a random door id on in-memory flash, trusting the fixture cloud key."""
    identity = LockIdentity.generate(
        door_id=os.urandom(16),
        property_id=os.urandom(16),
        doorcode_secret=os.urandom(32),
        random=os.urandom,
    )
    return LockRuntime.provision(
        Flash(MemoryMedium()),
        identity,
        public_bytes(WORLD.cloud_key),
        config=config,
        clock=clock,
        wall_time=int(time.time()),
    )


def person() -> Credential:
    return Credential(kind=CredentialKind.PERSON, credential_id=os.urandom(16))


def sealed(history: CredentialHistory, base: int, identity: LockIdentity) -> bytes:
    """A BUNDLE frame from ``base`` to the history's newest version, sealed to the lock."""
    bundle = history.bundle(
        base,
        door_public=X25519PublicKey.from_public_bytes(identity.sealing_public),
        cloud_key=WORLD.cloud_key,
        key_epoch=0,
        ephemeral=WORLD.ephemeral(os.urandom(8).hex()),
    )
    return bundle.to_frame()


def payload_of(frame: bytes, expected: MessageType) -> bytes:
    _, kind, payload = decode_frame(frame)
    assert kind == expected, f"expected {expected.name}, got type {kind:#04x}"
    return payload


def error_of(frame: bytes) -> ErrorMessage:
    return ErrorMessage.from_bytes(payload_of(frame, MessageType.ERROR))


def verified_receipt(frame: bytes, identity: LockIdentity) -> Receipt:
    key = Ed25519PublicKey.from_public_bytes(identity.identity_public)
    return Receipt.verified_from_bytes(payload_of(frame, MessageType.RECEIPT), key)


async def audit_with(cloud: Cloud, kind: AuditEventKind, identity: LockIdentity) -> AuditBatch:
    """The first lock-signed AUDIT_BATCH holding an event of ``kind``.

    The batch a door sends on connect may come before the cloud subscribed (it is not
    retained), so earlier batches are verified and skipped.
    """
    key = Ed25519PublicKey.from_public_bytes(identity.identity_public)
    while True:
        frame = await cloud.expect("audit")
        batch = AuditBatch.verified_from_bytes(payload_of(frame, MessageType.AUDIT_BATCH), key)
        if any(event.kind == kind for event in batch.events):
            return batch


# --- test harness: the cloud side, a cuttable link, running doors ----------------------


@dataclass
class Cloud:
    """The test's cloud: publishes to one door's topics and queues what the door sends."""

    client: aiomqtt.Client
    door_id: bytes
    inbox: dict[str, asyncio.Queue[bytes]] = field(
        default_factory=lambda: {leaf: asyncio.Queue() for leaf in CLOUD_LEAVES}
    )

    async def expect(self, leaf: str) -> bytes:
        """The next payload the door published on ``leaf``."""
        async with asyncio.timeout(WAIT):
            return await self.inbox[leaf].get()

    async def expect_hello(self) -> Hello:
        return Hello.from_bytes(payload_of(await self.expect("hello"), MessageType.HELLO))

    async def publish(self, leaf_or_topic: str, payload: bytes, *, retain: bool = False) -> None:
        topic = leaf_or_topic if "/" in leaf_or_topic else door_topic(self.door_id, leaf_or_topic)
        await self.client.publish(topic, payload, qos=1, retain=retain)

    async def _read(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            self.inbox[message.topic.value.rsplit("/", 1)[1]].put_nowait(message.payload)


@contextlib.asynccontextmanager
async def cloud_for(host: str, port: int, door_id: bytes) -> AsyncIterator[Cloud]:
    """A connected :class:`Cloud` subscribed to everything ``door_id`` publishes."""
    client = aiomqtt.Client(
        host, port, identifier=f"test-cloud-{os.urandom(6).hex()}", socket_options=[NO_DELAY]
    )
    async with client:
        await client.subscribe([(door_topic(door_id, leaf), 1) for leaf in CLOUD_LEAVES])
        cloud = Cloud(client, door_id)
        reader = asyncio.create_task(cloud._read())
        try:
            yield cloud
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader


class LinkCutter:
    """A TCP relay to the broker; :meth:`cut` aborts every live link (a crash, a pulled cable)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes one way until EOF or a reset, then close the other side."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@dataclass
class RunningDoor:
    """An :class:`MqttDoor` whose ``run()`` is a task, with what it handed on locally."""

    door: MqttDoor
    task: asyncio.Task[None]
    identity: LockIdentity
    actions: list[Action]

    @property
    def runtime(self) -> LockRuntime:
        return self.door.runtime

    @property
    def version(self) -> int:
        return self.runtime.controller.state.held.version


class DoorLab:
    """Starts doors; on close stops them and leaves nothing behind on the broker."""

    def __init__(self) -> None:
        self.doors: list[tuple[RunningDoor, str, int]] = []

    async def start(
        self, host: str, port: int, *, via: tuple[str, int] | None = None, **options: Any
    ) -> RunningDoor:
        """Run a new door against ``host:port`` (``via``: connect through a relay instead)."""
        config = options.pop("config", ControllerConfig())
        runtime = provision(asyncio.get_running_loop().time, config)
        actions: list[Action] = []
        connect_host, connect_port = via or (host, port)
        door = MqttDoor(
            runtime,
            host=connect_host,
            port=connect_port,
            on_action=actions.append,
            backoff=options.pop("backoff", FAST),
            key_rotation_topic=f"{TOPIC_PREFIX}test/{runtime.controller.door_id.hex()}/keyrot",
            **options,
        )
        task = asyncio.create_task(door.run())
        running = RunningDoor(door, task, runtime.controller.state.identity, actions)
        self.doors.append((running, host, port))
        return running

    async def close(self) -> None:
        for running, host, port in self.doors:
            await running.door.stop()
            await running.task
            await _forget_door(running.door, host, port)


async def _forget_door(door: MqttDoor, host: str, port: int) -> None:
    """Clear the door's retained topics and wipe its persistent session (clean connect)."""
    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
        async with asyncio.timeout(WAIT):
            client = aiomqtt.Client(host, port, identifier=door.client_id, clean_session=True)
            async with client:
                for leaf in RETAINED_LEAVES:
                    await client.publish(door_topic(door.door_id, leaf), b"", qos=1, retain=True)


@pytest.fixture
async def lab() -> AsyncIterator[DoorLab]:
    doors = DoorLab()
    try:
        yield doors
    finally:
        await doors.close()


async def connected(running: RunningDoor) -> None:
    async with asyncio.timeout(WAIT):
        await running.door.connected.wait()


# --- units: topics and backoff -----------------------------------------------------------


def test_frames_go_to_their_section_10_topics() -> None:
    door_id = bytes(range(16))
    hello = Frame(type=MessageType.HELLO, payload=b"").to_bytes()
    error = ErrorMessage(code=ErrorCode.MALFORMED).to_frame()
    unlock = Frame(type=MessageType.UNLOCK_RESULT, payload=b"").to_bytes()
    assert topic_for_frame(door_id, hello) == door_topic(door_id, "hello")
    assert topic_for_frame(door_id, error) == f"latchsim/v1/doors/{door_id.hex()}/error"
    assert topic_for_frame(door_id, unlock) is None
    assert topic_for_frame(door_id, b"LK\x01") is None


def test_door_subscribes_to_its_inbound_topics_and_key_rotation() -> None:
    runtime = provision(lambda: 0.0, ControllerConfig())
    door = MqttDoor(runtime, host="127.0.0.1")
    door_id = runtime.controller.door_id
    expected = [(door_topic(door_id, leaf), 1) for leaf in ("bundle", "ack", "time")]
    assert door.subscriptions() == [*expected, (KEY_ROTATION_TOPIC, 1)]
    assert door.client_id == f"door-{door_id.hex()}"


async def test_a_message_on_a_topic_the_door_did_not_subscribe_to_is_ignored() -> None:
    """A broker that leaks other topics' retained messages (amqtt 0.12 does) must not make
    the door answer for another door: only its own topics reach the core."""
    runtime = provision(lambda: 0.0, ControllerConfig())
    door = MqttDoor(runtime, host="127.0.0.1")
    handled: list[Sequence[Action]] = []

    async def dispatch(actions: Sequence[Action]) -> None:
        handled.append(actions)

    door._dispatch = dispatch  # type: ignore[method-assign]
    garbage = b"\x4c\x4b\x01garbage"
    other = door_topic(bytes(16), "hello")
    await door._on_message(aiomqtt.Message(other, garbage, 1, True, 1, None))
    assert door.counters.ignored == 1 and handled == []
    own = door_topic(runtime.controller.door_id, "bundle")
    await door._on_message(aiomqtt.Message(own, garbage, 1, False, 2, None))
    assert door.counters.ignored == 1 and len(handled) == 1  # the core answered (an ERROR)


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    backoff = Backoff(initial=0.1, cap=5.0)
    assert [backoff.delay(n, lambda: 1.0) for n in range(3)] == [0.1, 0.2, 0.4]
    assert backoff.delay(2, lambda: 0.0) == 0.2
    assert backoff.delay(10_000, lambda: 1.0) == 5.0
    with pytest.raises(ValueError):
        Backoff(initial=0.0)


async def test_timers_and_local_events_run_without_a_broker(lab: DoorLab) -> None:
    """Nothing listens on the port: the door keeps retrying, yet serves its card reader."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    config = ControllerConfig(card_response_timeout_s=0.2)
    running = await lab.start("127.0.0.1", closed_port, config=config)
    timed_out = asyncio.Event()
    original = running.runtime.handle_timeout

    def handle_timeout() -> list[Action]:
        timed_out.set()
        return original()

    running.runtime.handle_timeout = handle_timeout  # type: ignore[method-assign]
    await running.door.feed(CardTapped(b"\x04\x01\x02\x03"))
    assert [type(a) for a in running.actions] == [CardChallenge]
    async with asyncio.timeout(WAIT):
        await timed_out.wait()
    assert running.runtime.next_deadline() is None
    assert running.door.counters.failures >= 1
    assert not running.door.connected.is_set()


async def test_stop_returns_even_when_a_session_swallows_its_cancellation(lab: DoorLab) -> None:
    """aiomqtt's disconnect (Python 3.11 ``wait_for``) can eat one cancel; stop() must repeat it."""
    swallowed = asyncio.Event()

    async def stubborn_session() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # the first cancel is lost, as in the race
        await asyncio.Event().wait()  # only a second cancel ends this

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    running = await lab.start("127.0.0.1", closed_port)
    running.door._session = stubborn_session  # type: ignore[method-assign]
    async with asyncio.timeout(WAIT):
        while running.door._session_task is None or running.door._session_task.done():
            await asyncio.sleep(0.01)  # poll for the next attempt, which now never connects
        await running.door.stop()
        await running.task
    assert swallowed.is_set()


# --- against the broker ------------------------------------------------------------------


@BOTH_BROKERS
async def test_bundle_is_applied_and_a_signed_receipt_arrives(
    mqtt_broker: BrokerChoice, lab: DoorLab
) -> None:
    host, port = mqtt_broker.host, mqtt_broker.port
    running = await lab.start(host, port)
    door_id, identity = running.door.door_id, running.identity
    async with cloud_for(host, port, door_id) as cloud:
        hello = await cloud.expect_hello()  # retained: arrives whether we were first or not
        assert (hello.door_id, hello.list_version) == (door_id, 0)
        history = CredentialHistory(door_id)
        history.commit(upserts=[person(), person()])
        await cloud.publish("bundle", sealed(history, 0, identity), retain=True)

        receipt = verified_receipt(await cloud.expect("receipt"), identity)
        assert (receipt.door_id, receipt.list_version) == (door_id, 1)
        assert (receipt.status, receipt.list_digest) == (ReceiptStatus.OK, history.current.digest)
        assert running.version == 1
        batch = await audit_with(cloud, AuditEventKind.BUNDLE_APPLIED, identity)
        assert batch.door_id == door_id
    assert running.door.counters.internal_errors == 0


@BOTH_BROKERS
async def test_status_is_online_then_offline_by_last_will(
    mqtt_broker: BrokerChoice, lab: DoorLab
) -> None:
    host, port = mqtt_broker.host, mqtt_broker.port
    link = LinkCutter(host, port)
    relay_port = await link.start()
    try:
        running = await lab.start(host, port, via=("127.0.0.1", relay_port))
        async with cloud_for(host, port, running.door.door_id) as cloud:
            await connected(running)
            assert await cloud.expect("status") == b"online"
            link.cut()  # no DISCONNECT packet: the broker must publish the will
            assert await cloud.expect("status") == b"offline"
            assert await cloud.expect("status") == b"online"  # reconnected with backoff
            assert [(await cloud.expect_hello()).list_version for _ in range(2)] == [0, 0]
            await connected(running)  # cleared when the link broke, set after the new HELLO
            assert running.door.counters.connects == 2
            await running.door.stop(announce_offline=True)  # a clean stop discards the will
            assert await cloud.expect("status") == b"offline"
    finally:
        await link.close()


def hostile_payloads(valid: bytes, other_door: bytes, rng: random.Random) -> list[bytes]:
    """Random, truncated, bit-flipped and well-formed-but-wrong frames."""
    _, _, payload = decode_frame(valid)
    forged = bytearray(payload)
    forged[rng.randrange(len(forged))] ^= 0x01
    flips = []
    for _ in range(12):
        flipped = bytearray(valid)
        flipped[rng.randrange(len(valid))] ^= 1 << rng.randrange(8)
        flips.append(bytes(flipped))
    return [
        b"\x00",
        b"LK",
        rng.randbytes(12),
        rng.randbytes(300),
        valid[:-1],
        valid + b"\x00",
        valid[:8] + rng.randbytes(len(valid) - 8),
        b"LK\x09" + valid[3:],  # unsupported protocol version
        b"LK\x01\x04\xff\xff\xff\xff" + valid[8:],  # length beyond every cap
        Frame(type=MessageType.BUNDLE, payload=bytes(forged)).to_bytes(),  # CRC ok, bad signature
        Frame(type=MessageType.HELLO, payload=b"").to_bytes(),  # a type a lock never accepts
        other_door,  # genuine, but sealed and signed for another door
        *flips,
    ]


@BOTH_BROKERS
async def test_hostile_payloads_get_error_frames_and_change_nothing(
    mqtt_broker: BrokerChoice, lab: DoorLab
) -> None:
    host, port = mqtt_broker.host, mqtt_broker.port
    running = await lab.start(host, port)
    door, identity = running.door, running.identity
    history, elsewhere = CredentialHistory(door.door_id), CredentialHistory(os.urandom(16))
    history.commit(upserts=[person()])
    elsewhere.commit(upserts=[person()])
    valid = sealed(history, 0, identity)
    hostile = hostile_payloads(valid, sealed(elsewhere, 0, identity), random.Random(1234))
    async with cloud_for(host, port, door.door_id) as cloud:
        await connected(running)
        before = (running.runtime.controller.state.to_snapshot(), running.runtime.flash.stats())
        expected = Counter(_about_type(data) for data in hostile)
        for topic in ("bundle", "ack", "time", door.key_rotation_topic):
            for data in hostile:  # all at once: one answer each, in any order
                await cloud.publish(topic, data)
            errors = [await cloud.expect("error") for _ in hostile]
            about = Counter(error_of(frame).about_type for frame in errors)
            assert about == expected, topic
        after = (running.runtime.controller.state.to_snapshot(), running.runtime.flash.stats())
        assert after == before
        assert door.connected.is_set() and not running.task.done()
        assert door.counters.internal_errors == 0

        await cloud.publish("bundle", valid)  # and the door still works
        assert verified_receipt(await cloud.expect("receipt"), identity).list_version == 1
    assert cloud.inbox["error"].empty()


async def test_broker_restart_door_reconnects_and_catches_up(
    lab: DoorLab, record_property: Callable[[str, object], None]
) -> None:
    """Always on an embedded broker (the shared Mosquitto cannot be restarted by a test).

    The broker goes down and comes back empty on the same port; while the door waits
    out its backoff the cloud publishes a retained bundle. The door reconnects,
    re-announces its version in HELLO and applies the bundle it missed.
    """
    broker = await start_embedded_broker()
    host, port = broker.host, broker.port
    record_property("mqtt_broker", f"embedded amqtt broker at {broker.url} (restarted)")
    print(f"MQTT broker: embedded amqtt broker at {broker.url}, restarted mid-test")
    running = await lab.start(host, port, backoff=Backoff(initial=0.4, cap=1.0), random=lambda: 0.5)
    door_id, identity = running.door.door_id, running.identity
    history = CredentialHistory(door_id)
    try:
        async with cloud_for(host, port, door_id) as cloud:
            assert (await cloud.expect_hello()).list_version == 0
            history.commit(upserts=[person()])
            await cloud.publish("bundle", sealed(history, 0, identity), retain=True)
            assert verified_receipt(await cloud.expect("receipt"), identity).list_version == 1

        await broker.stop()
        async with asyncio.timeout(WAIT):
            await running.door.disconnected.wait()
        broker = await start_embedded_broker(port)

        async with cloud_for(host, port, door_id) as cloud:
            history.commit(upserts=[person()])
            await cloud.publish("bundle", sealed(history, 1, identity), retain=True)
            assert not running.door.connected.is_set(), "the bundle was meant to wait for the door"
            assert (await cloud.expect_hello()).list_version == 1  # what the door holds
            receipt = verified_receipt(await cloud.expect("receipt"), identity)
            assert (receipt.list_version, receipt.status) == (2, ReceiptStatus.OK)
        assert running.version == 2
        assert running.door.counters.connects == 2
        assert running.door.counters.failures >= 1
    finally:
        await broker.stop()


def _about_type(data: bytes) -> int:
    """The ``about_type`` §4.4 asks for: the frame's type if the frame decodes, else 0."""
    try:
        return decode_frame(data)[1]
    except ProtocolError:
        return 0
