"""The cloud's MQTT bridge (``cloud.mqtt_bridge``) against a real broker and real MQTT doors.

Theory of operation: each test seeds the demo world (``cloud.seed``) into a fresh database
with lock identities made the way :mod:`tests.cloud_world` makes them, and runs the online
doors of that world as real :class:`controller.mqtt_door.MqttDoor` instances (a
:class:`~controller.runtime.LockRuntime` on in-memory flash each). The cloud side is one or
two :class:`~cloud.mqtt_bridge.MqttBridge` tasks on the same database; the test drives the
cloud through :class:`~cloud.service.CloudService` and calls ``bridge.notify()`` after
each commit, as the API does.

Isolation on a shared broker: every test gets its own random label, from which the seed
derives every id, so door topics never collide with another run's; the key-rotation topic
and the bridge's shared-subscription group are per test too. Teardown stops doors and
bridges, clears every retained topic the test may have left, and wipes the doors'
persistent sessions.

Broker: the ``mqtt_broker`` fixture (Mosquitto when reachable, else embedded amqtt; set
``LATCHSIM_MQTT_URL=mqtt://127.0.0.1:1`` to force amqtt). Nothing sleeps and hopes: every
wait is for a condition, re-checked whenever the bridge handled a message
(:meth:`MqttBridge.wait_until`) or a door changed, bounded by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import func, select

from cloud.db import create_schema, make_engine, session_factory
from cloud.keys import current_key, rotate
from cloud.models import AuditRecord, Door, DoorVersion, MqttOutbox
from cloud.mqtt_bridge import BridgeConfig, MqttBridge
from cloud.mqtt_ingest import claim_unsent, make_durable
from cloud.seed import seed_demo
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.sync import BundleCache
from controller.config import ControllerConfig
from controller.identity import LockIdentity
from controller.mqtt_door import Backoff, MqttDoor
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium
from infra.broker import BrokerChoice
from protocol import (
    AuditAck,
    AuditBatch,
    AuditEvent,
    AuditEventKind,
    Frame,
    MessageType,
    Receipt,
)
from protocol.crypto import ed25519_private_from_seed, ed25519_public_from_bytes
from protocol.frame import decode_frame
from protocol.transport import TOPIC_PREFIX, door_topic
from simulators.fixture import fixed_bytes
from tests.cloud_world import CLOUD_SEED, T0, counting_random
from tests.db_fixtures import fresh_database

WAIT = 10.0
"""Upper bound for any one expected outcome."""
RECHECK = 0.02
FAST = Backoff(initial=0.05, cap=0.5)
BOTH_BROKERS = pytest.mark.parametrize("mqtt_broker", ["preferred", "embedded"], indirect=True)
BOTH_DATABASES = pytest.mark.parametrize("cloud_db", ["sqlite", "postgresql"], indirect=True)
ONLINE = ("Tower lobby", "Lofts entrance", "Elm Court gate")
RETAINED_LEAVES = ("hello", "bundle", "status")


class MqttWorld:
    """A seeded cloud database, its locks, and the doors and bridges a test started."""

    def __init__(self, url: str, label: str, broker: BrokerChoice) -> None:
        self.label, self.host, self.port = label, broker.host, broker.port
        self.engine = make_engine(url)
        create_schema(self.engine)
        self.sessions = session_factory(self.engine)
        self.random = counting_random(f"{label} cloud")
        self.cache = BundleCache()
        self.rotation_topic = f"{TOPIC_PREFIX}test/{label}/keyrotation"
        self.identities: dict[str, LockIdentity] = {}
        with self.sessions.begin() as session:
            self.seed = seed_demo(
                session, self.random, door_keys=self._door_keys, cloud_seed=CLOUD_SEED
            )
            self.cloud_public = current_key(session).public
        self.runtimes: dict[str, LockRuntime] = {}
        self.doors: list[tuple[MqttDoor, asyncio.Task[None]]] = []
        self.bridges: list[tuple[MqttBridge, asyncio.Task[None]]] = []

    def _door_keys(self, door_id: str) -> tuple[bytes, bytes, bytes]:
        identity = LockIdentity.generate(
            door_id=bytes.fromhex(door_id),
            property_id=bytes(16),
            doorcode_secret=fixed_bytes(f"code {door_id}"),
            random=counting_random(f"{self.label} lock {door_id}"),
        )
        self.identities[door_id] = identity
        return identity.identity_public, identity.sealing_public, identity.doorcode_secret

    # --- the cloud -------------------------------------------------------------------------

    def door_id(self, name: str) -> str:
        return self.seed.doors[name]

    @contextlib.contextmanager
    def service(self) -> Iterator[CloudService]:
        """One committed transaction of the cloud."""
        with self.sessions.begin() as session:
            yield CloudService(session, T0, self.random, self.cache)

    def door_row(self, name: str) -> Door:
        with self.sessions() as session:
            door = session.get(Door, self.door_id(name))
            assert door is not None
            return door

    def unsent(self) -> int:
        with self.sessions() as session:
            query = select(func.count()).select_from(MqttOutbox).where(MqttOutbox.sent.is_(False))
            return session.execute(query).scalar_one()

    def in_sync(self, *names: str) -> Callable[[], bool]:
        """A predicate: every named door's receipted version is its list version."""

        def check() -> bool:
            rows = [self.door_row(name) for name in names]
            return all(0 < r.list_version == r.synced_version for r in rows)

        return check

    async def start_bridge(self, **config: Any) -> MqttBridge:
        """Run a bridge on this world's database; return once it has drained the outbox."""
        options = {"share_group": f"cloud-{self.label}", "poll_interval": 60.0, **config}
        bridge = MqttBridge(
            self.sessions,
            host=self.host,
            port=self.port,
            clock=lambda: T0,
            random=self.random,
            cache=self.cache,
            config=BridgeConfig(key_rotation_topic=self.rotation_topic, **options),
        )
        self.bridges.append((bridge, asyncio.create_task(bridge.run())))
        async with asyncio.timeout(WAIT):
            await bridge.ready.wait()
        return bridge

    # --- the locks -------------------------------------------------------------------------

    def runtime(self, name: str) -> LockRuntime:
        """The lock of door ``name``, provisioned on first use (its flash outlives restarts)."""
        door_id = self.door_id(name)
        if door_id not in self.runtimes:
            self.runtimes[door_id] = LockRuntime.provision(
                Flash(MemoryMedium()),
                self.identities[door_id],
                self.cloud_public,
                config=ControllerConfig(),
                clock=asyncio.get_running_loop().time,
                wall_time=T0,
                random=counting_random(f"{self.label} rt {door_id}"),
            )
        return self.runtimes[door_id]

    async def start_door(self, name: str) -> MqttDoor:
        """Run door ``name`` on MQTT; return once it has announced itself."""
        door = MqttDoor(
            self.runtime(name),
            host=self.host,
            port=self.port,
            backoff=FAST,
            key_rotation_topic=self.rotation_topic,
        )
        self.doors.append((door, asyncio.create_task(door.run())))
        async with asyncio.timeout(WAIT):
            await door.connected.wait()
        return door

    async def forget_session(self, name: str) -> None:
        """What a broker that lost its state does: drop the door's session and retained bundle."""
        door_id = bytes.fromhex(self.door_id(name))
        async with aiomqtt.Client(
            self.host, self.port, identifier=f"door-{door_id.hex()}", clean_session=True
        ) as client:
            await client.publish(door_topic(door_id, "bundle"), b"", qos=1, retain=True)

    def version(self, name: str) -> int:
        return self.runtime(name).controller.state.held.version

    def at_epoch(self, name: str, epoch: int) -> Callable[[], bool]:
        """A predicate: the lock of door ``name`` trusts the cloud key of ``epoch``."""
        return lambda: self.runtime(name).controller.state.cloud.epoch == epoch

    def acknowledged(self, name: str) -> Callable[[], bool]:
        """A predicate: the lock of door ``name`` holds no unacknowledged audit event."""
        return lambda: self.runtime(name).controller.state.audit.pending == 0

    # --- teardown --------------------------------------------------------------------------

    async def stop_door(self, door: MqttDoor, *, announce_offline: bool = False) -> None:
        """Stop a door this world started (see :func:`stop_door`)."""
        (task,) = [task for running, task in self.doors if running is door]
        await stop_door(door, task, announce_offline=announce_offline)

    async def close(self) -> None:
        for door, task in self.doors:
            await stop_door(door, task)
        for bridge, task in self.bridges:
            async with asyncio.timeout(WAIT):
                await bridge.stop()
                await task
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(WAIT):
                await self._clear_broker()
        self.engine.dispose()

    async def _clear_broker(self) -> None:
        async with aiomqtt.Client(self.host, self.port) as client:
            await client.publish(self.rotation_topic, b"", qos=1, retain=True)
            for door_id in self.seed.doors.values():
                for leaf in RETAINED_LEAVES:
                    topic = door_topic(bytes.fromhex(door_id), leaf)
                    await client.publish(topic, b"", qos=1, retain=True)
        for door_id in self.runtimes:
            identifier = f"door-{door_id}"
            async with aiomqtt.Client(
                self.host, self.port, identifier=identifier, clean_session=True
            ):
                pass


@pytest.fixture
def cloud_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: SQLite unless parametrized with ``"postgresql"``."""
    with fresh_database(getattr(request, "param", "sqlite"), tmp_path) as url:
        yield url


@pytest.fixture
async def world(
    request: pytest.FixtureRequest, cloud_db: str, mqtt_broker: BrokerChoice
) -> AsyncIterator[MqttWorld]:
    label = uuid.uuid4().hex
    seeded = MqttWorld(cloud_db, label, mqtt_broker)
    try:
        yield seeded
    finally:
        await seeded.close()


async def stop_door(door: MqttDoor, task: asyncio.Task[None], **options: bool) -> None:
    """``door.stop()`` and the end of its ``run()`` task, bounded."""
    async with asyncio.timeout(WAIT):
        await door.stop(**options)
        await task


async def until(bridge: MqttBridge, predicate: Callable[[], bool]) -> None:
    """Wait (bounded) until ``predicate`` holds.

    It is re-checked after every message and drain of ``bridge`` and, for changes only a
    door sees (a rotation applied, an ack processed), every ``RECHECK`` seconds.
    """
    async with asyncio.timeout(WAIT):
        while not predicate():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECHECK):
                    await bridge.wait_until(predicate)


def pending_doors(world: MqttWorld, person: str) -> tuple[str, tuple[str, ...]]:
    with world.service() as cloud:
        card = cloud.person_status(world.seed.people[person]).keycards[0]
    return card.status, card.pending_doors


# --- units ---------------------------------------------------------------------------------


def test_bridge_settings_subscriptions_and_backoff(tmp_path: Path) -> None:
    settings = CloudSettings(
        database_url=f"sqlite:///{tmp_path / 'cloud.db'}", mqtt_url="mqtt://broker.invalid:1884"
    )
    bridge = MqttBridge.from_settings(settings, client_id="cloud-test")
    assert (bridge.host, bridge.port, bridge.client_id) == ("broker.invalid", 1884, "cloud-test")
    assert bridge.subscriptions(shared=True)[0] == ("$share/cloud/latchsim/v1/doors/+/receipt", 1)
    assert [t for t, _ in bridge.subscriptions(shared=False)] == [
        f"latchsim/v1/doors/+/{leaf}" for leaf in ("receipt", "audit", "hello")
    ]
    config = BridgeConfig(reconnect_initial=0.1, reconnect_cap=1.0)
    assert [config.reconnect_delay(n, 1.0) for n in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert config.reconnect_delay(2, 0.0) == 0.2
    with pytest.raises(ValueError, match="MQTT_URL"):
        MqttBridge.from_settings(CloudSettings(database_url=settings.database_url, mqtt_url=None))
    with pytest.raises(ValueError, match="share_group"):
        BridgeConfig(share_group="a/b")


# --- the flows ---------------------------------------------------------------------------


@BOTH_BROKERS
@BOTH_DATABASES
async def test_activation_reaches_online_doors_at_once_and_offline_ones_stay_pending(
    world: MqttWorld, mqtt_broker: BrokerChoice
) -> None:
    bridge = await world.start_bridge()
    assert bridge.shared_subscriptions is (mqtt_broker.kind == "mosquitto")
    lobby = await world.start_door("Tower lobby")
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    with world.service() as cloud:
        changes = cloud.activate_on_behalf(maya, ana, world.seed.cards["card-1"][0])
    bridge.notify()
    assert len(changes) == 3

    await until(bridge, world.in_sync("Tower lobby"))
    assert world.version("Tower lobby") == world.door_row("Tower lobby").list_version == 1
    status, pending = pending_doors(world, "Ana Ruiz")
    offline = {world.door_id("Tower basement"), world.door_id("Tower gym")}
    assert (status, set(pending)) == ("activation pending", offline)
    health = world.door_row("Tower lobby")
    assert health.last_seen is not None and health.battery_pct == 100
    assert health.key_epoch == 0 and health.list_age_s is not None and health.list_age_s < WAIT
    assert (bridge.counters.forged, bridge.counters.errors) == (0, 0)
    assert lobby.counters.internal_errors == 0


async def test_a_crash_between_commit_and_publish_loses_nothing(world: MqttWorld) -> None:
    for name in ONLINE:
        await world.start_door(name)
    chloe = world.seed.people["Chloe Martin"]
    uid, code = world.seed.cards["card-3"]
    with world.service() as cloud:
        cloud.self_activate(chloe, uid, code)  # committed; no bridge runs to publish it
    assert world.unsent() == 2  # the two online doors of Chloe's three

    bridge = await world.start_bridge()  # a new cloud process after the crash
    in_sync = world.in_sync("Lofts entrance", "Elm Court gate")
    await until(bridge, lambda: in_sync() and world.unsent() == 0)
    assert bridge.counters.published >= 2
    assert world.version("Lofts entrance") == world.version("Elm Court gate") == 1
    status, pending = pending_doors(world, "Chloe Martin")
    assert (status, pending) == ("activation pending", (world.door_id("Elm Court bike room"),))


async def test_published_outbox_rows_are_pruned_to_the_newest_kept(world: MqttWorld) -> None:
    bridge = await world.start_bridge(keep_sent=1)
    chloe = world.seed.people["Chloe Martin"]
    uid, code = world.seed.cards["card-3"]
    for change in ("activate", "deactivate", "activate"):
        with world.service() as cloud:
            if change == "activate":
                cloud.self_activate(chloe, uid, code)
            else:
                cloud.self_deactivate(chloe, uid)
        bridge.notify()
        await until(bridge, lambda: world.unsent() == 0)
    # The bridge marks rows sent in its worker thread, then counts them on the loop.
    await until(bridge, lambda: bridge.counters.published >= 6)  # 2 online doors, 3 changes
    with world.sessions() as session:
        kept = session.scalars(select(MqttOutbox.id)).all()
    assert len(kept) == 1  # only the newest published row is kept


async def test_a_door_offline_during_a_change_gets_what_it_missed_from_its_hello(
    world: MqttWorld,
) -> None:
    bridge = await world.start_bridge()
    lobby = await world.start_door("Tower lobby")
    await world.stop_door(lobby, announce_offline=True)
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    with world.service() as cloud:
        cloud.activate_on_behalf(maya, ana, world.seed.cards["card-1"][0])
    bridge.notify()
    await until(bridge, lambda: world.unsent() == 0)
    await world.forget_session("Tower lobby")  # only the door's HELLO can bring it back now

    catch_ups = bridge.counters.catch_ups
    await world.start_door("Tower lobby")  # announces version 0
    await until(bridge, world.in_sync("Tower lobby"))
    assert world.version("Tower lobby") == 1
    assert bridge.counters.catch_ups > catch_ups


async def test_a_forged_receipt_is_refused_and_changes_nothing(
    world: MqttWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloud.mqtt_bridge")
    bridge = await world.start_bridge()
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    with world.service() as cloud:
        cloud.activate_on_behalf(maya, ana, world.seed.cards["card-1"][0])
    bridge.notify()
    lobby_id = world.door_id("Tower lobby")
    with world.sessions() as session:
        version = session.get(DoorVersion, (lobby_id, 1))
        assert version is not None
        digest = version.digest
    claim = Receipt(
        door_id=bytes.fromhex(lobby_id), requested_version=1, list_version=1, list_digest=digest
    )
    forged = claim.signed(ed25519_private_from_seed(fixed_bytes("a relay's own key")))
    other_lock = world.identities[world.door_id("Lofts entrance")].identity_key()
    borrowed = claim.signed(other_lock)  # a genuine lock signature, but not the lobby's
    topic = door_topic(bytes.fromhex(lobby_id), "receipt")
    async with aiomqtt.Client(world.host, world.port) as relay:
        for receipt in (forged, borrowed):
            await relay.publish(topic, receipt.to_frame(), qos=1)
        await relay.publish(topic, b"LK\x01garbage", qos=1)
        await relay.publish(topic, Frame(type=MessageType.HELLO, payload=b"").to_bytes(), qos=1)
    forged_on = f"{bridge.client_id}: refused a forged frame on {topic}:"
    malformed_on = f"{bridge.client_id}: refused a frame on {topic}:"
    # Other runs' doors may share the broker (and the bridge's counters): count by topic.
    await until(bridge, lambda: _logged(caplog, forged_on) == _logged(caplog, malformed_on) == 2)
    assert bridge.counters.forged == 2
    assert world.door_row("Tower lobby").synced_version == 0
    assert lobby_id in pending_doors(world, "Ana Ruiz")[1]
    await world.start_door("Tower lobby")  # the real lock still gets through
    await until(bridge, world.in_sync("Tower lobby"))
    assert bridge.counters.errors == 0


@BOTH_DATABASES
async def test_a_bad_message_in_a_batch_costs_the_others_nothing(world: MqttWorld) -> None:
    """Receipts arriving together share a transaction; a forged one among them is redone alone."""
    bridge = MqttBridge(
        world.sessions, host=world.host, port=world.port, clock=lambda: T0, random=world.random
    )
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    with world.service() as cloud:
        changed = [
            c.door_id for c in cloud.activate_on_behalf(maya, ana, world.seed.cards["card-1"][0])
        ]
    assert len(changed) >= 2
    messages = []
    for door_id in changed[:2]:
        with world.sessions() as session:
            version = session.get(DoorVersion, (door_id, 1))
            assert version is not None
            claim = Receipt(
                door_id=bytes.fromhex(door_id),
                requested_version=1,
                list_version=1,
                list_digest=version.digest,
            )
        topic = door_topic(bytes.fromhex(door_id), "receipt")
        forged = claim.signed(ed25519_private_from_seed(fixed_bytes("a relay's own key")))
        genuine = claim.signed(world.identities[door_id].identity_key())
        messages += [
            aiomqtt.Message(topic, forged.to_frame(), 1, False, 1, None),
            aiomqtt.Message(topic, b"LK\x01garbage", 1, False, 2, None),
            aiomqtt.Message(topic, genuine.to_frame(), 1, False, 3, None),
        ]
    await bridge._ingest(messages)  # as if all six had queued up during the last batch
    counters = bridge.counters
    assert (counters.receipts, counters.forged, counters.refused) == (2, 2, 2)
    assert counters.errors == 0
    with world.sessions() as session:
        for door_id in changed[:2]:
            door = session.get(Door, door_id)
            assert door is not None and door.synced_version == 1


async def test_audit_batches_are_stored_acknowledged_and_gaps_flagged(world: MqttWorld) -> None:
    bridge = await world.start_bridge(ack_repeat_s=60.0)
    lobby_id = world.door_id("Tower lobby")
    acks: list[AuditAck] = []
    async with aiomqtt.Client(world.host, world.port) as spy:
        await spy.subscribe(door_topic(bytes.fromhex(lobby_id), "ack"), qos=1)
        reader = asyncio.create_task(_collect_acks(spy, world, acks))
        lobby = await world.start_door("Tower lobby")  # sends its BOOT event on connect
        audit = lobby.runtime.controller.state.audit
        await until(bridge, lambda: bridge.counters.audits >= 1 and audit.pending == 0)
        ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
        with world.service() as cloud:
            cloud.activate_on_behalf(maya, ana, world.seed.cards["card-1"][0])
        bridge.notify()
        await until(bridge, lambda: audit.head_seq >= 2 and audit.pending == 0 and len(acks) >= 2)
        reader.cancel()

    with world.sessions() as session:
        records = session.execute(
            select(AuditRecord).where(AuditRecord.door_id == lobby_id).order_by(AuditRecord.seq)
        ).scalars()
        kinds = [(r.seq, AuditEventKind(r.kind)) for r in records]
    assert kinds == [(1, AuditEventKind.BOOT), (2, AuditEventKind.BUNDLE_APPLIED)]
    assert [ack.up_to_seq for ack in acks][-1] == 2

    audits, withheld = bridge.counters.audits, bridge.counters.acks_withheld
    copy = _signed_batch(world, lobby_id, seq=1)  # a copy of a stored, acknowledged event
    gap = _signed_batch(world, lobby_id, seq=10)  # events 3 to 9 never arrived
    async with aiomqtt.Client(world.host, world.port) as relay:
        for batch in (copy, gap):
            await relay.publish(door_topic(bytes.fromhex(lobby_id), "audit"), batch, qos=1)
    await until(bridge, lambda: bridge.counters.audits == audits + 2)
    # Neither gets a second ack: the copy is stored already, and of the gap nothing is
    # stored (§6.5), so its ack would be the same up_to_seq 2 again.
    assert bridge.counters.acks_withheld == withheld + 2
    assert bridge.counters.audit_gaps == world.door_row("Tower lobby").audit_gaps == 1
    assert world.door_row("Tower lobby").audit_next_seq == 3
    with world.sessions() as session:
        stored = session.scalars(select(AuditRecord.seq).where(AuditRecord.door_id == lobby_id))
        assert sorted(stored) == [1, 2]


def _signed_batch(world: MqttWorld, door_id: str, *, seq: int) -> bytes:
    """An AUDIT_BATCH frame of one event, signed with the door's own lock key."""
    identity = world.identities[door_id]
    event = AuditEvent(seq=seq, time=T0, kind=AuditEventKind.BOOT)
    batch = AuditBatch(door_id=identity.door_id, events=(event,))
    return batch.signed(identity.identity_key()).to_frame()


def _logged(caplog: pytest.LogCaptureFixture, prefix: str) -> int:
    """How many captured log lines start with ``prefix``."""
    return sum(record.getMessage().startswith(prefix) for record in caplog.records)


async def _collect_acks(client: aiomqtt.Client, world: MqttWorld, acks: list[AuditAck]) -> None:
    """Verify every AUDIT_ACK with the cloud's key and keep it."""
    key = ed25519_public_from_bytes(world.cloud_public)
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        _, kind, payload = decode_frame(message.payload)
        assert kind == MessageType.AUDIT_ACK
        acks.append(AuditAck.verified_from_bytes(payload, key))


@BOTH_DATABASES
async def test_two_clouds_side_by_side_ingest_duplicates_harmlessly(world: MqttWorld) -> None:
    first = await world.start_bridge(shared=False)  # every message reaches both clouds
    second = await world.start_bridge(shared=False)
    for name in ONLINE:
        await world.start_door(name)
    chloe = world.seed.people["Chloe Martin"]
    uid, code = world.seed.cards["card-3"]
    with world.service() as cloud:
        cloud.self_activate(chloe, uid, code)
    first.notify()
    second.notify()

    in_sync = world.in_sync("Lofts entrance", "Elm Court gate")
    await until(
        first, lambda: in_sync() and min(first.counters.receipts, second.counters.receipts) >= 2
    )
    for name in ("Lofts entrance", "Elm Court gate"):
        audit = world.runtime(name).controller.state.audit
        await until(first, world.acknowledged(name))
        with world.sessions() as session:
            query = select(AuditRecord.seq).where(AuditRecord.door_id == world.door_id(name))
            seqs = sorted(session.execute(query).scalars())
        assert seqs == list(range(1, audit.head_seq + 1))
    assert first.counters.errors == second.counters.errors == 0
    assert world.door_row("Lofts entrance").audit_gaps == 0


async def test_key_rotation_reaches_doors_and_a_door_epochs_behind_gets_each_rotation(
    world: MqttWorld,
) -> None:
    bridge = await world.start_bridge()
    lofts = await world.start_door("Lofts entrance")
    lobby = await world.start_door("Tower lobby")
    await world.stop_door(lobby, announce_offline=True)
    for epoch in (1, 2):
        with world.sessions.begin() as session:
            rotate(session, world.random)
        assert await bridge.publish_key_rotation()
        await until(bridge, world.at_epoch("Lofts entrance", epoch))
    await until(bridge, lambda: world.unsent() == 0)
    await world.forget_session("Tower lobby")

    rotations = bridge.counters.rotations
    lobby_again = await world.start_door("Tower lobby")  # HELLO: epoch 0, needs rotations 1, 2
    await until(bridge, world.at_epoch("Tower lobby", 2))
    assert bridge.counters.rotations - rotations == 2
    ana, maya = world.seed.people["Ana Ruiz"], world.seed.managers["Maya Chen"]
    with world.service() as cloud:
        cloud.activate_on_behalf(maya, ana, world.seed.cards["card-1"][0])
    bridge.notify()
    await until(bridge, world.in_sync("Tower lobby"))  # signed with the epoch-2 key

    rotations, hellos = bridge.counters.rotations, bridge.counters.hellos
    await world.stop_door(lobby_again)
    await world.start_door("Tower lobby")  # a door that is current is sent nothing
    await until(bridge, lambda: bridge.counters.hellos > hellos)
    assert world.door_row("Tower lobby").key_epoch == 2
    assert bridge.counters.rotations == rotations
    assert lofts.counters.internal_errors == 0


def test_claimed_rows_are_on_disk_before_they_are_published(tmp_path: Path) -> None:
    """SQLite commits reach the disk at checkpoints: a drain checkpoints before publishing."""
    engine = make_engine(f"sqlite:///{tmp_path / 'durable.db'}")
    try:
        create_schema(engine)
        sessions = session_factory(engine)
        with sessions.begin() as session:
            session.add(MqttOutbox(topic="t", payload=b"frame", retain=False))
        wal = tmp_path / "durable.db-wal"
        assert wal.stat().st_size > 0  # the commit sits in the write-ahead log
        with sessions() as session:
            assert claim_unsent(session, 10)
            make_durable(session)
            database_file_alone = tmp_path / "alone.db"  # what survives without the log
            shutil.copyfile(tmp_path / "durable.db", database_file_alone)
        alone = sqlite3.connect(database_file_alone)
        try:
            assert alone.execute("SELECT count(*) FROM mqtt_outbox").fetchone() == (1,)
        finally:
            alone.close()
    finally:
        engine.dispose()
