"""Online doors get a TIME_SYNC from the MQTT bridge when their HELLO's clock is off (issue #4).

Theory of operation: the world of :mod:`tests.test_cloud_mqtt` (the seeded database, real
:class:`controller.mqtt_door.MqttDoor` locks, a real broker: Mosquitto when reachable, else
embedded amqtt), with one difference: the cloud's clock is not frozen at ``T0`` but is
``T0`` plus the seconds the event loop has run since the test began, the clock the locks
run on too. A lock provisioned with ``wall_time = T0 + DRIFT_S`` is ten minutes fast.

The bridge (:func:`cloud.mqtt_bridge.record_hello`) signs a TIME_SYNC bound to the
challenge of a *live* HELLO whose ``lock_time`` is off by more than the tolerance and queues
it, not retained, on the door's ``time`` topic (§10), where the lock listens. The lock
checks it (§6.6), moves its clock, records the sequence and logs TIME_CORRECTED, which the
cloud stores when the lock next sends its audit. A right clock, or a retained HELLO (whose
``lock_time`` is of unknown age), gets nothing. Every wait is for a condition
(:func:`tests.test_cloud_mqtt.until`), bounded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import select

from cloud.keys import current_key, rotate
from cloud.models import AuditRecord, MqttOutbox
from cloud.mqtt_bridge import BridgeConfig, MqttBridge, record_hello
from cloud.time_sync import MIN_CORRECTION_S
from controller.config import ControllerConfig
from controller.mqtt_door import MqttDoor
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium
from infra.broker import BrokerChoice
from protocol import AuditEventKind, Hello, TimeSync
from protocol.cloud_messages import NO_CHALLENGE
from protocol.crypto import ed25519_public_from_bytes
from protocol.frame import decode_frame
from protocol.transport import door_topic
from tests.cloud_world import T0, counting_random
from tests.test_cloud_mqtt import (  # noqa: F401  (cloud_db: a fixture)
    BOTH_BROKERS,
    BOTH_DATABASES,
    WAIT,
    MqttWorld,
    cloud_db,
    until,
)

DRIFT_S = 600
"""Ten minutes fast: within the reference lock's bound for a challenge-bound step (a day)."""
LOBBY = "Tower lobby"


@pytest.fixture
async def world(
    cloud_db: str,  # noqa: F811
    mqtt_broker: BrokerChoice,
) -> AsyncIterator[MqttWorld]:
    """:func:`tests.test_cloud_mqtt.world`: the seeded world on its own topics, torn down."""
    made = MqttWorld(cloud_db, uuid.uuid4().hex, mqtt_broker)
    try:
        yield made
    finally:
        await made.close()


class WorldClock:
    """Unix seconds: ``T0`` plus the event loop's seconds since this clock was made."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()

    def __call__(self) -> int:
        return T0 + int(self.loop.time() - self.start)

    def wall_time(self, drift: int) -> int:
        """What a lock provisioned now, ``drift`` seconds off, believes the time is."""
        return self() + drift


async def start_bridge(world: MqttWorld, clock: Callable[[], int], **config: Any) -> MqttBridge:
    """:meth:`MqttWorld.start_bridge`, but on ``clock`` (the world's bridge is frozen at T0)."""
    options = {"share_group": f"cloud-{world.label}", "poll_interval": 60.0, **config}
    bridge = MqttBridge(
        world.sessions,
        host=world.host,
        port=world.port,
        clock=clock,
        random=world.random,
        cache=world.cache,
        config=BridgeConfig(key_rotation_topic=world.rotation_topic, **options),
    )
    world.bridges.append((bridge, asyncio.create_task(bridge.run())))
    async with asyncio.timeout(WAIT):
        await bridge.ready.wait()
    return bridge


def provision(world: MqttWorld, name: str, clock: WorldClock, drift: int) -> LockRuntime:
    """Provision door ``name``'s lock with its clock ``drift`` s off (before it first runs)."""
    door_id = world.door_id(name)
    assert door_id not in world.runtimes
    world.runtimes[door_id] = LockRuntime.provision(
        Flash(MemoryMedium()),
        world.identities[door_id],
        world.cloud_public,
        config=ControllerConfig(),
        clock=clock.loop.time,
        wall_time=clock.wall_time(drift),
        random=counting_random(f"{world.label} rt {door_id}"),
    )
    return world.runtimes[door_id]


def lock_time(runtime: LockRuntime) -> int:
    return runtime.controller.lock_time(runtime.clock())


def lock_seq(runtime: LockRuntime) -> int:
    """The sequence of the last TIME_SYNC the lock accepted (0: none)."""
    return runtime.controller.state.time_sync_seq


def time_rows(world: MqttWorld, name: str) -> list[tuple[bytes, bool]]:
    """The (payload, retain) of every outbox row for door ``name``'s ``time`` topic."""
    topic = door_topic(bytes.fromhex(world.door_id(name)), "time")
    with world.sessions() as session:
        rows = session.execute(
            select(MqttOutbox.payload, MqttOutbox.retain)
            .where(MqttOutbox.topic == topic)
            .order_by(MqttOutbox.id)
        ).all()
    return [(bytes(payload), retain) for payload, retain in rows]


def stored_events(world: MqttWorld, name: str) -> list[tuple[AuditEventKind, int]]:
    """The (kind, detail) of the audit events the cloud stored for door ``name``, by seq."""
    with world.sessions() as session:
        rows = session.execute(
            select(AuditRecord.kind, AuditRecord.detail)
            .where(AuditRecord.door_id == world.door_id(name))
            .order_by(AuditRecord.seq)
        ).all()
        return [(AuditEventKind(kind), detail) for kind, detail in rows]


async def retained_hello(world: MqttWorld, name: str) -> Hello:
    """The HELLO the broker holds (retained) for door ``name``: its latest connect's."""
    topic = door_topic(bytes.fromhex(world.door_id(name)), "hello")
    async with aiomqtt.Client(world.host, world.port) as spy:
        await spy.subscribe(topic, qos=1)
        async with asyncio.timeout(WAIT):
            async for message in spy.messages:
                assert isinstance(message.payload, bytes) and message.retain
                _, _, payload = decode_frame(message.payload)
                return Hello.from_bytes(payload)
    raise AssertionError("unreachable")


def verified_sync(world: MqttWorld, frame: bytes) -> TimeSync:
    """The TIME_SYNC in ``frame``, verified with the cloud's current key."""
    with world.sessions() as session:
        public = current_key(session).public
    _, _, payload = decode_frame(frame)
    return TimeSync.verified_from_bytes(payload, ed25519_public_from_bytes(public))


async def reconnect(world: MqttWorld, door: MqttDoor, name: str, bridge: MqttBridge) -> MqttDoor:
    """Stop door ``name`` and start it again; return once the bridge ingested its new HELLO."""
    hellos = bridge.counters.hellos
    await world.stop_door(door)
    again = await world.start_door(name)
    await until(bridge, lambda: bridge.counters.hellos > hellos)
    return again


# --- the flows ---------------------------------------------------------------------------------


@BOTH_BROKERS
@BOTH_DATABASES
async def test_a_drifted_online_door_is_corrected_once_by_a_time_sync_bound_to_its_hello(
    world: MqttWorld,
) -> None:
    clock = WorldClock()
    bridge = await start_bridge(world, clock)
    runtime = provision(world, LOBBY, clock, DRIFT_S)
    assert abs(lock_time(runtime) - clock() - DRIFT_S) <= 1
    lobby = await world.start_door(LOBBY)
    await until(bridge, lambda: lock_seq(runtime) == 1)

    assert abs(lock_time(runtime) - clock()) <= MIN_CORRECTION_S
    assert world.door_row(LOBBY).time_sync_seq == 1
    assert bridge.counters.time_syncs == 1
    ((frame, retain),) = time_rows(world, LOBBY)
    assert not retain  # bound to one challenge: a retained copy would only be refused later
    sync = verified_sync(world, frame)
    hello = await retained_hello(world, LOBBY)
    assert (sync.sequence, sync.door_id, sync.challenge) == (1, hello.door_id, hello.challenge)
    assert abs(sync.cloud_time - hello.lock_time + DRIFT_S) <= MIN_CORRECTION_S

    await reconnect(world, lobby, LOBBY, bridge)  # its clock is right now: nothing is sent
    await until(bridge, world.acknowledged(LOBBY))  # its audit is stored, TIME_CORRECTED too
    (before,) = [d for kind, d in stored_events(world, LOBBY) if kind is kind.TIME_CORRECTED]
    assert abs(before - hello.lock_time) <= MIN_CORRECTION_S  # §6.4: the time before the step
    assert world.door_row(LOBBY).time_sync_seq == lock_seq(runtime) == 1
    assert bridge.counters.time_syncs == 1 and len(time_rows(world, LOBBY)) == 1
    assert (bridge.counters.errors, bridge.counters.forged, bridge.counters.refused) == (0, 0, 0)
    assert lobby.counters.internal_errors == 0


async def test_a_door_whose_clock_is_right_gets_no_time_sync(world: MqttWorld) -> None:
    clock = WorldClock()
    bridge = await start_bridge(world, clock)
    runtime = provision(world, LOBBY, clock, 0)
    await world.start_door(LOBBY)
    await until(bridge, lambda: bridge.counters.hellos >= 1)
    await until(bridge, world.acknowledged(LOBBY))  # the HELLO's transaction is long done

    assert bridge.counters.time_syncs == 0 and time_rows(world, LOBBY) == []
    assert world.door_row(LOBBY).time_sync_seq == lock_seq(runtime) == 0
    assert [kind for kind, _ in stored_events(world, LOBBY)] == [AuditEventKind.BOOT]


async def test_a_retained_hello_of_unknown_age_gets_no_time_sync_the_next_connect_does(
    world: MqttWorld,
) -> None:
    clock = WorldClock()
    runtime = provision(world, LOBBY, clock, DRIFT_S)
    lobby = await world.start_door(LOBBY)  # its HELLO waits, retained, for a cloud
    bridge = await start_bridge(world, clock)
    await until(bridge, lambda: bridge.counters.hellos >= 1)  # the retained one (committed)
    assert bridge.counters.time_syncs == 0 and time_rows(world, LOBBY) == []
    assert lock_seq(runtime) == 0 and abs(lock_time(runtime) - clock() - DRIFT_S) <= 1

    await reconnect(world, lobby, LOBBY, bridge)  # a live HELLO
    await until(bridge, lambda: lock_seq(runtime) == 1)
    assert abs(lock_time(runtime) - clock()) <= MIN_CORRECTION_S
    assert world.door_row(LOBBY).time_sync_seq == 1


async def test_a_door_behind_on_key_epoch_gets_the_rotation_before_its_time_sync(
    world: MqttWorld,
) -> None:
    clock = WorldClock()
    bridge = await start_bridge(world, clock)
    with world.sessions.begin() as session:
        rotate(session, world.random)  # not published: only the door's HELLO brings it
    runtime = provision(world, LOBBY, clock, -DRIFT_S)  # ten minutes slow, at epoch 0
    await world.start_door(LOBBY)
    await until(bridge, lambda: lock_seq(runtime) == 1)

    assert runtime.controller.state.cloud.epoch == 1
    (frame, _), *_ = time_rows(world, LOBBY)
    assert verified_sync(world, frame).key_epoch == 1  # signed by the key it was just given
    assert abs(lock_time(runtime) - clock()) <= MIN_CORRECTION_S
    assert bridge.counters.rotations == 1 and bridge.counters.time_syncs == 1


# --- the parts ---------------------------------------------------------------------------------


def hello_of(
    world: MqttWorld, name: str, *, lock_time: int, challenge: bytes, key_epoch: int = 0
) -> bytes:
    hello = Hello(
        door_id=bytes.fromhex(world.door_id(name)),
        list_version=0,
        list_age_s=0,
        battery_pct=90,
        audit_head_seq=0,
        key_epoch=key_epoch,
        lock_time=lock_time,
        challenge=challenge,
        supported_versions=(1,),
    )
    return hello.to_bytes()


BOUND = b"\x01" * 16
"""A challenge, as a lock's HELLO carries one."""


@pytest.mark.parametrize(
    ("options", "offset", "challenge", "expected"),
    [
        pytest.param({}, DRIFT_S, BOUND, 1, id="live and off"),
        pytest.param({}, MIN_CORRECTION_S, BOUND, None, id="live, off by the tolerance"),
        pytest.param({}, -MIN_CORRECTION_S - 1, BOUND, 1, id="live, slow beyond it"),
        pytest.param({"live": False}, DRIFT_S, BOUND, None, id="retained"),
        pytest.param({"time_sync_tolerance_s": None}, DRIFT_S, BOUND, None, id="turned off"),
        pytest.param({"time_sync_tolerance_s": DRIFT_S}, DRIFT_S, BOUND, None, id="wider"),
        pytest.param({}, DRIFT_S, NO_CHALLENGE, None, id="no challenge to bind to"),
    ],
)
async def test_record_hello_queues_a_time_sync_only_for_a_live_hello_whose_clock_is_off(
    world: MqttWorld,
    options: dict[str, Any],
    offset: int,
    challenge: bytes,
    expected: int | None,
) -> None:
    payload = hello_of(world, LOBBY, lock_time=T0 + offset, challenge=challenge)
    with world.service() as cloud:  # the cloud's clock: T0
        outcome = record_hello(cloud, world.door_id(LOBBY), payload, **options)
    assert outcome.time_sync_seq == expected
    rows = time_rows(world, LOBBY)
    assert len(rows) == (expected or 0) and not any(retain for _, retain in rows)
    assert world.door_row(LOBBY).time_sync_seq == (expected or 0)


@pytest.mark.parametrize("live", [True, False])
async def test_an_unsigned_hello_cannot_make_a_door_look_rotated(
    world: MqttWorld, live: bool
) -> None:
    """HELLO carries no signature: a forged one claiming a newer key epoch must not hide a
    door from the doors that have not rotated (only signed audit events raise it)."""
    payload = hello_of(world, LOBBY, lock_time=T0, challenge=BOUND, key_epoch=7)
    with world.service() as cloud:
        record_hello(cloud, world.door_id(LOBBY), payload, live=live)
    assert world.door_row(LOBBY).key_epoch == 0


def test_bridge_config_refuses_a_negative_time_sync_tolerance() -> None:
    with pytest.raises(ValueError, match="time_sync_tolerance_s"):
        BridgeConfig(time_sync_tolerance_s=-1)
    assert BridgeConfig().time_sync_tolerance_s == MIN_CORRECTION_S
    assert BridgeConfig(time_sync_tolerance_s=None).time_sync_tolerance_s is None
