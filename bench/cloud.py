"""Cloud sync speeds: sealed bundles per second, MQTT fan-out, API-to-receipt latency.

Theory of operation: every figure runs the real cloud code (:class:`cloud.service.CloudService`
on SQLite files in a temporary directory, :class:`cloud.mqtt_bridge.MqttBridge`) against
real lock cores, on one broker chosen once per run by :func:`infra.broker.pick_broker`
(Mosquitto at ``$LATCHSIM_MQTT_URL`` or ``mqtt://127.0.0.1:1883`` if reachable, else an
embedded amqtt broker in this process; ``broker_is_mosquitto`` says which).

* **Activations → sealed bundles.** A manager activates and deactivates a resident's
  keycard in turn, one committed transaction each. The resident can open one online
  door, so each activation seals exactly one bundle into the outbox; the rate is
  bundles per second (:func:`bench._timing.measure_rate`). Each transaction is a raw
  one (:func:`cloud.raw_tx.raw_service`, as bulk and simulated callers run changes);
  ``activations_per_s_in_orm_sessions`` is the same in an ORM session each, as the
  HTTP API runs them (its request handling is not timed). The same for a resident of
  20 online doors shows how the cost scales per door (one set-based pass over all its
  doors). ``activation_sql_statements`` counts the SQL statements one single-door
  activation runs and ``sql_select_us`` times the cheapest one (a prepared primary-key
  SELECT in its own transaction): their product is the floor under one activation.
* **Fan-out to 1,000 doors.** 1,000 aiomqtt clients in one process would measure the
  client library, not the cloud, so the doors are 1,000 real
  :class:`controller.core.Controller` cores behind *one* aiomqtt client subscribed to
  ``latchsim/v1/doors/+/bundle`` (:class:`DoorHub`): it hands each bundle to its door's
  core and publishes the core's signed receipt on that door's ``receipt`` topic, as an
  MQTT door would. The hub runs in a child process (doors are not inside the cloud, and
  sharing the cloud's interpreter lock would charge their 1,000 unseal-verify-sign
  rounds to the cloud). One activation (a resident of a 1,000-door property) is
  committed (sealing is not timed); the clock runs from the commit (``notify()``) until
  the bridge has verified and committed all 1,000 receipts, each in its own transaction.
* **API to receipt.** One real :class:`controller.mqtt_door.MqttDoor`: the time from an
  activation's commit plus ``notify()`` until its receipt is ingested; median and p99.
  Each sample starts when the previous one has settled (the lock's audit events of the
  last change acknowledged), so a sample does not queue behind the last one's traffic.
  ``raw_mqtt_rtt_ms_median`` is a bare aiomqtt QoS 1 ping-pong between two clients on
  the same broker in the same run; the goal is ``median <= 2 x raw + 5`` ms, reported as
  ``api_to_receipt_headroom_ms`` (goal >= 0).

Retained bundles, HELLOs and statuses the run leaves on the broker are cleared at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import statistics
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from sqlalchemy import Engine, bindparam, event, func, select

from cloud.db import create_schema, make_engine, session_factory
from cloud.keys import ensure_key
from cloud.models import (
    Door,
    Grant,
    Keycard,
    Manager,
    ManagerPortfolio,
    MqttOutbox,
    Person,
    Portfolio,
    Property,
)
from cloud.mqtt_bridge import BridgeConfig, MqttBridge
from cloud.raw_tx import raw_service
from cloud.service import CloudService, hash_code
from cloud.sync import BundleCache
from controller.config import ControllerConfig
from controller.core import Controller
from controller.events import MQTT, FrameReceived, Send
from controller.identity import LockIdentity
from controller.mqtt_door import MqttDoor, topic_for_frame
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium
from infra.broker import DEFAULT_URL, BrokerChoice, pick_broker
from protocol.transport import TOPIC_PREFIX, door_topic

from . import Figures, Goal
from ._timing import Loop, measure_rate

__all__ = ["GOALS", "UNITS", "run"]

GOALS: dict[str, Goal] = {
    "activations_to_sealed_bundles_per_s": (">=", 2000),
    "fanout_1000_online_doors_s": ("<=", 2),
    "api_to_receipt_headroom_ms": (">=", 0),
}
UNITS: dict[str, str] = {
    "fanout_1000_online_doors_s": "s",
    "api_to_receipt_ms_median": "ms",
    "api_to_receipt_ms_p99": "ms",
    "raw_mqtt_rtt_ms_median": "ms",
    "api_to_receipt_headroom_ms": "ms",
    "activations_per_s_in_orm_sessions": "activations/s",
    "activation_sql_statements": "statements",
    "sql_select_us": "us",
    "broker_is_mosquitto": "1 = yes",
}
NOW = 1_800_000_000
FANOUT_DOORS = 1_000
MANY_DOORS = 20
WAIT = 60.0
"""Upper bound for any one awaited outcome."""
Random = Callable[[int], bytes]


def run(quick: bool) -> Figures:
    """Measure every figure; ``quick``: shorter rate loops and fewer latency samples."""
    with tempfile.TemporaryDirectory(prefix="latchsim-bench-cloud-") as tmp:
        figures = activation_rates(Path(tmp), seconds=0.3 if quick else 1.0)
        figures |= asyncio.run(_mqtt_figures(Path(tmp), samples=40 if quick else 300))
    return figures


# --- a cloud to measure ------------------------------------------------------------------


@dataclass
class BenchCloud:
    """A SQLite cloud: one portfolio and property, ``doors`` online doors, one resident."""

    engine: Engine
    random: Random
    identities: dict[str, LockIdentity] = field(default_factory=dict)
    cache: BundleCache = field(default_factory=BundleCache)
    manager: str = ""
    person: str = ""
    card: str = ""
    active: bool = False

    def __post_init__(self) -> None:
        create_schema(self.engine)
        self.sessions = session_factory(self.engine)

    def new_id(self) -> str:
        return self.random(16).hex()

    @contextlib.contextmanager
    def service(self, *, raw: bool = True) -> Iterator[CloudService]:
        """One transaction: raw (:func:`cloud.raw_tx.raw_service`) or an ORM session's."""
        if raw:
            with raw_service(self.engine, NOW, self.random, self.cache) as cloud:
                yield cloud
            return
        with self.sessions.begin() as session:
            yield CloudService(session, NOW, self.random, self.cache)

    def toggle(self, *, raw: bool = True) -> int:
        """Activate the resident's card, or deactivate it; return how many doors changed."""
        with self.service(raw=raw) as cloud:
            act = cloud.deactivate_on_behalf if self.active else cloud.activate_on_behalf
            changes = act(self.manager, self.person, self.card)
        self.active = not self.active
        return len(changes)

    def cloud_public(self) -> bytes:
        with self.sessions.begin() as session:
            return ensure_key(session, self.random).public

    def count(self, query: Any) -> int:
        with self.sessions() as session:
            return int(session.execute(query).scalar_one())


def build_cloud(path: Path, doors: int, random: Random) -> BenchCloud:
    """A fresh cloud database at ``path`` with ``doors`` online doors the resident can open."""
    cloud = BenchCloud(make_engine(f"sqlite:///{path}"), random)
    portfolio, building = cloud.new_id(), cloud.new_id()
    cloud.manager, cloud.person, cloud.card = cloud.new_id(), cloud.new_id(), random(7).hex()
    with cloud.sessions.begin() as session:
        ensure_key(session, random)
        session.add(Portfolio(id=portfolio, name="Bench Portfolio"))
        session.add(Property(id=building, portfolio_id=portfolio, name="Bench Tower"))
        session.add(Manager(id=cloud.manager, name="Bench Manager", email="m@example.com"))
        session.add(Person(id=cloud.person, name="Bench Resident", email="r@example.com"))
        session.flush()
        session.add(ManagerPortfolio(manager_id=cloud.manager, portfolio_id=portfolio))
        session.add(Grant(id=cloud.new_id(), person_id=cloud.person, property_id=building))
        session.add(
            Keycard(uid=cloud.card, card_key=random(16), activation_code_hash=hash_code("X"))
        )
        for n in range(doors):
            session.add(_door(cloud, building, n))
    return cloud


def _door(cloud: BenchCloud, building: str, n: int) -> Door:
    identity = LockIdentity.generate(
        door_id=cloud.random(16),
        property_id=bytes(16),
        doorcode_secret=cloud.random(32),
        random=cloud.random,
    )
    cloud.identities[identity.door_id.hex()] = identity
    return Door(
        id=identity.door_id.hex(),
        property_id=building,
        name=f"Door {n}",
        online=True,
        identity_public=identity.identity_public,
        sealing_public=identity.sealing_public,
        doorcode_secret=identity.doorcode_secret,
    )


# --- activations -> sealed bundles ---------------------------------------------------------


def activation_rates(tmp: Path, *, seconds: float) -> Figures:
    """Sealed bundles per second from activations, for a 1-door and a 20-door resident."""
    single = build_cloud(tmp / "one-door.db", 1, os.urandom)
    statements = _statements_per_activation(single)
    many = build_cloud(tmp / "many-doors.db", MANY_DOORS, os.urandom)
    assert many.toggle() == MANY_DOORS
    return {
        "activations_to_sealed_bundles_per_s": measure_rate(_toggling(single), seconds=seconds),
        "activations_per_s_in_orm_sessions": measure_rate(
            _toggling(single, raw=False), seconds=seconds
        ),
        f"sealed_bundles_per_s_{MANY_DOORS}_door_resident": round(
            measure_rate(_toggling(many), seconds=seconds) * MANY_DOORS, 1
        ),
        "activation_sql_statements": statements,
        "sql_select_us": round(1e6 / measure_rate(_selecting(single), seconds=seconds), 1),
    }


def _selecting(cloud: BenchCloud) -> Callable[[int], Loop]:
    """One prepared primary-key SELECT through SQLAlchemy, in a transaction of its own each:
    the floor under every statement an activation runs."""
    query = select(Person.name).where(Person.id == bindparam("id"))

    def workload(count: int) -> Loop:
        def loop() -> None:
            for _ in range(count):
                with cloud.sessions.begin() as session:
                    session.execute(query, {"id": cloud.person}).one()

        return loop

    return workload


def _toggling(cloud: BenchCloud, *, raw: bool = True) -> Callable[[int], Loop]:
    def workload(count: int) -> Loop:
        def loop() -> None:
            for _ in range(count):
                cloud.toggle(raw=raw)

        return loop

    return workload


def _statements_per_activation(cloud: BenchCloud) -> int:
    """SQL statements one activation sends to SQLite (its driver's own count: the hot path
    bypasses SQLAlchemy), BEGIN and COMMIT included; checks it sealed exactly one bundle."""
    executed = 0

    def count(_statement: str) -> None:
        nonlocal executed
        executed += 1

    unsent = select(func.count()).select_from(MqttOutbox)
    before = cloud.count(unsent)
    traced: list[Any] = []

    def trace(driver: Any, *_: object) -> None:
        driver.set_trace_callback(count)
        traced.append(driver)

    event.listen(cloud.engine, "checkout", trace)
    try:
        changed = cloud.toggle()
    finally:
        event.remove(cloud.engine, "checkout", trace)
        for driver in traced:
            driver.set_trace_callback(None)
    assert changed == 1 and cloud.count(unsent) == before + 1, "an activation must seal 1 bundle"
    return executed


# --- MQTT -------------------------------------------------------------------------------------


async def _mqtt_figures(tmp: Path, *, samples: int) -> Figures:
    broker = await pick_broker(os.environ.get("LATCHSIM_MQTT_URL", DEFAULT_URL))
    try:
        raw = await raw_rtt_ms(broker, samples)
        median, p99 = await api_to_receipt_ms(tmp / "latency.db", broker, samples)
        fanout = await fanout_s(tmp / "fanout.db", broker, FANOUT_DOORS)
    finally:
        await broker.close()
    return {
        "fanout_1000_online_doors_s": round(fanout, 3),
        "api_to_receipt_ms_median": round(median, 2),
        "api_to_receipt_ms_p99": round(p99, 2),
        "raw_mqtt_rtt_ms_median": round(raw, 2),
        "api_to_receipt_headroom_ms": round(2 * raw + 5 - median, 2),
        "broker_is_mosquitto": int(broker.kind == "mosquitto"),
    }


def _client(host: str, port: int, *, inflight: int = 20) -> aiomqtt.Client:
    """A client like the bridge's and the doors' (Nagle off), for ``inflight`` publishes."""
    client = aiomqtt.Client(
        host,
        port,
        identifier=f"bench-{os.urandom(6).hex()}",
        max_inflight_messages=inflight,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    client.pending_calls_threshold = 4 * FANOUT_DOORS
    return client


async def raw_rtt_ms(broker: BrokerChoice, samples: int) -> float:
    """Median ms of a bare QoS 1 ping-pong: A publishes, B answers, A receives."""
    base = f"{TOPIC_PREFIX}bench/{os.urandom(6).hex()}"
    loop, times = asyncio.get_running_loop(), []
    async with _client(broker.host, broker.port) as a, _client(broker.host, broker.port) as b:
        await b.subscribe(f"{base}/ping", qos=1)
        await a.subscribe(f"{base}/pong", qos=1)
        echo = asyncio.create_task(_echo(b, f"{base}/pong"))
        replies = aiter(a.messages)
        for n in range(samples + 5):
            start = loop.time()
            await a.publish(f"{base}/ping", n.to_bytes(4, "big"), qos=1)
            async with asyncio.timeout(WAIT):
                await anext(replies)
            times.append(loop.time() - start)
    await echo  # ends when its client disconnects
    return statistics.median(times[5:]) * 1000


async def _echo(client: aiomqtt.Client, topic: str) -> None:
    """Answer every ping on ``topic`` until the client disconnects.

    Ended by the disconnect rather than by ``cancel()``: aiomqtt's publish may swallow a
    cancellation on Python 3.11 (its ``wait_for``), and a swallowed one would hang here.
    """
    with contextlib.suppress(aiomqtt.MqttError):
        async for message in client.messages:
            await client.publish(topic, message.payload, qos=1)


@contextlib.asynccontextmanager
async def running_bridge(cloud: BenchCloud, broker: BrokerChoice) -> AsyncIterator[MqttBridge]:
    """A bridge on ``cloud``'s database, drained and subscribed; stopped afterwards."""
    group = f"bench-{os.urandom(6).hex()}"
    bridge = MqttBridge(
        cloud.sessions,
        host=broker.host,
        port=broker.port,
        clock=lambda: NOW,
        random=cloud.random,
        cache=cloud.cache,
        config=BridgeConfig(share_group=group, poll_interval=60.0, max_inflight=1000),
    )
    task = asyncio.create_task(bridge.run())
    try:
        async with asyncio.timeout(WAIT):
            await bridge.ready.wait()
        yield bridge
    finally:
        await bridge.stop()
        await task


async def api_to_receipt_ms(path: Path, broker: BrokerChoice, samples: int) -> tuple[float, float]:
    """Median and p99 ms from an activation's commit + notify to its receipt ingested."""
    cloud = build_cloud(path, 1, os.urandom)
    ((door_id, identity),) = cloud.identities.items()
    loop = asyncio.get_running_loop()
    runtime = LockRuntime.provision(
        Flash(MemoryMedium()),
        identity,
        cloud.cloud_public(),
        config=ControllerConfig(),
        clock=loop.time,
        wall_time=NOW,
    )
    rotations = f"{TOPIC_PREFIX}bench/{door_id}/keyrotation"
    door = MqttDoor(runtime, host=broker.host, port=broker.port, key_rotation_topic=rotations)
    times = []
    try:
        async with running_bridge(cloud, broker) as bridge, running_door(door):
            for _ in range(samples + 5):
                await _quiet(runtime)
                times.append(await _one_activation(cloud, bridge, loop))
    finally:
        await _clear(broker, [door_id], forget_sessions=True)
        cloud.engine.dispose()
    times = sorted(times[5:])
    return statistics.median(times) * 1000, times[(len(times) - 1) * 99 // 100] * 1000


@contextlib.asynccontextmanager
async def running_door(door: MqttDoor) -> AsyncIterator[MqttDoor]:
    """Run ``door`` (start it after the bridge: its first audit batch is not retained)."""
    task = asyncio.create_task(door.run())
    try:
        async with asyncio.timeout(WAIT):
            await door.connected.wait()
        yield door
    finally:
        async with asyncio.timeout(WAIT):
            await door.stop()
            await task


async def _quiet(runtime: LockRuntime) -> None:
    """Wait until the lock holds no unacknowledged audit event: nothing is in flight."""
    async with asyncio.timeout(WAIT):
        while runtime.controller.state.audit.pending:
            await asyncio.sleep(0.001)


async def _one_activation(
    cloud: BenchCloud, bridge: MqttBridge, loop: asyncio.AbstractEventLoop
) -> float:
    target = bridge.counters.receipts + 1
    cloud.toggle()
    start = loop.time()
    bridge.notify()
    async with asyncio.timeout(WAIT):
        await bridge.wait_until(lambda: bridge.counters.receipts >= target)
    return loop.time() - start


# --- fan-out ---------------------------------------------------------------------------------


class DoorHub:
    """Many lock cores behind one MQTT client: bundles in, signed receipts out."""

    def __init__(self, cores: dict[str, Controller], host: str, port: int) -> None:
        self.cores, self.host, self.port = cores, host, port
        self.ready = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        async with _client(self.host, self.port, inflight=1000) as client:
            await client.subscribe(f"{TOPIC_PREFIX}doors/+/bundle", qos=1)
            self.ready.set()
            async for message in client.messages:
                self._deliver(client, message)

    def _deliver(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        door_id = message.topic.value.split("/")[-2]
        core = self.cores.get(door_id)
        if core is None or not isinstance(message.payload, bytes) or not message.payload:
            return  # another run's retained bundle, or a cleared one
        for action in core.handle(FrameReceived(MQTT, message.payload), 1.0):
            topic = (
                topic_for_frame(core.door_id, action.frame) if isinstance(action, Send) else None
            )
            if isinstance(action, Send) and topic is not None:
                send = asyncio.create_task(client.publish(topic, action.frame, qos=1))
                self._sends.add(send)
                send.add_done_callback(self._sends.discard)


def _hub_process(
    identities: dict[str, LockIdentity], public: bytes, host: str, port: int, ready: Any, stop: Any
) -> None:
    """Child-process entry: provision the locks, serve their bundles until ``stop`` is set."""
    asyncio.run(_serve_hub(identities, public, host, port, ready, stop))


async def _serve_hub(
    identities: dict[str, LockIdentity], public: bytes, host: str, port: int, ready: Any, stop: Any
) -> None:
    cores = {
        door_id: Controller.provision(
            identity, public, ControllerConfig(), random=os.urandom, now=0.0, wall_time=NOW
        )[0]
        for door_id, identity in identities.items()
    }
    hub = DoorHub(cores, host, port)
    task = asyncio.create_task(hub.run())
    async with asyncio.timeout(WAIT):
        await hub.ready.wait()
    ready.set()
    await asyncio.to_thread(stop.wait)
    while not task.done():  # aiomqtt may swallow one cancellation (Python 3.11 wait_for)
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)


@contextlib.asynccontextmanager
async def door_hub_process(
    cloud: BenchCloud, broker: BrokerChoice
) -> AsyncIterator[multiprocessing.process.BaseProcess]:
    """Run every lock of ``cloud`` in one child process, subscribed before this yields."""
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    args = (cloud.identities, cloud.cloud_public(), broker.host, broker.port, ready, stop)
    process = context.Process(target=_hub_process, args=args, name="latchsim-bench-doors")
    process.start()
    try:
        if not await asyncio.to_thread(ready.wait, WAIT):
            raise RuntimeError("the door hub process did not subscribe in time")
        yield process
    finally:
        stop.set()
        await asyncio.to_thread(process.join, WAIT)
        if process.is_alive():
            process.terminate()
            process.join()


async def fanout_s(path: Path, broker: BrokerChoice, doors: int) -> float:
    """Seconds from one change's commit until all ``doors`` receipts are ingested."""
    cloud = build_cloud(path, doors, os.urandom)
    try:
        async with door_hub_process(cloud, broker), running_bridge(cloud, broker) as bridge:
            return await _timed_fanout(cloud, bridge, doors)
    finally:
        await _clear(broker, list(cloud.identities), forget_sessions=False)
        cloud.engine.dispose()


async def _timed_fanout(cloud: BenchCloud, bridge: MqttBridge, doors: int) -> float:
    loop = asyncio.get_running_loop()
    assert await asyncio.to_thread(cloud.toggle) == doors  # seals every bundle: not timed
    start = loop.time()
    bridge.notify()
    async with asyncio.timeout(WAIT):
        await bridge.wait_until(lambda: bridge.counters.receipts >= doors)
    elapsed = loop.time() - start
    synced = select(func.count()).select_from(Door).where(Door.synced_version == 1)
    assert cloud.count(synced) == doors, "every door must have receipted version 1"
    return elapsed


async def _clear(broker: BrokerChoice, door_ids: list[str], *, forget_sessions: bool) -> None:
    """Clear the retained topics of ``door_ids``; optionally wipe their MQTT sessions."""
    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
        async with (
            asyncio.timeout(WAIT),
            _client(broker.host, broker.port, inflight=1000) as client,
        ):
            await asyncio.gather(
                *(
                    client.publish(door_topic(bytes.fromhex(d), leaf), b"", qos=1, retain=True)
                    for d in door_ids
                    for leaf in ("bundle", "hello", "status")
                )
            )
        for door_id in door_ids if forget_sessions else []:
            async with aiomqtt.Client(
                broker.host, broker.port, identifier=f"door-{door_id}", clean_session=True
            ):
                pass
