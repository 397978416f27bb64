"""A live building: the real cloud, broker, MQTT doors, BLE doors and phones in one event loop.

Theory of operation
-------------------
:class:`Building` is an async context manager that starts the real components on embedded
defaults and tears them down again (DESIGN.md, "Simulation", live mode):

* **cloud** — a SQLite file in a temporary directory, seeded with the demo world
  (:func:`cloud.seed.seed_demo`) whose door keys are those of locks provisioned here;
  the HTTP API (:func:`cloud.api.create_app`) served by uvicorn on a free localhost port in
  a thread; the email sender with the logging backend (emails stay in the outbox); and the
  MQTT bridge (:class:`cloud.mqtt_bridge.MqttBridge`), which the API wakes after every
  commit that queued MQTT frames (``create_app(on_outbox=bridge.notify)``), so online doors
  get a change within milliseconds instead of at the bridge's next poll.
* **broker** — an embedded amqtt broker on a free port, or the broker at
  ``BuildingConfig.mqtt_url`` (Mosquitto). An unreachable URL raises
  :class:`BrokerUnreachableError` before anything else starts. On a shared broker every
  run uses its own share group and key-rotation topic, and teardown clears the retained
  topics and persistent sessions of its doors.
* **locks** — one :class:`~controller.runtime.LockRuntime` on in-memory flash per door,
  provisioned with the identity the cloud registered. Online doors run as
  :class:`~controller.mqtt_door.MqttDoor`, offline doors as
  :class:`~controller.ble_door.BleDoor` on one :class:`~infra.radio.RadioLink`. Extra doors
  (``extra_online_doors`` / ``extra_offline_doors``) are registered at Harbor Tower
  through ``POST /v1/doors``, as an installer would. Doors named in ``unpowered_doors``
  are provisioned and registered but never powered on (out of reach of every phone).
* **phones** — :meth:`Building.phone` makes a resident's
  :class:`~phone_bridge.phone.Phone`: its own radio on the link (bleak on bumble), its own
  store file and a cloud client over TCP.
* **keycards** — :meth:`Building.tap` holds a card to a lock's reader: ``CardTapped``, the
  lock's challenge, the card's CMAC answer (:func:`protocol.keycard.card_response`), and
  returns the lock's decision. The card's key comes from the cloud's inventory, where the
  card factory recorded it.

Live mode (:mod:`simulators.live`) builds its scenario's world with the same class, through
hooks that default to the demo's behaviour:

* ``seeder`` fills the database instead of :func:`cloud.seed.seed_demo` (a
  :class:`~cloud.seed.SeedResult` whose door names key :attr:`Building.locks`);
  ``provisioner`` makes each lock's runtime (its flash, its clock, its first list);
  ``clocks`` gives the locks' clock and the wall clock the cloud, the bridge, the phones
  and provisioning read; ``ble_door`` is the class of every BLE face.
* ``BuildingConfig.ble_on_online_doors`` puts online doors on the radio too, so phones
  open them as well; ``lock_config`` is every lock's :class:`ControllerConfig`.
* Faults: :meth:`Building.stop_broker` / :meth:`Building.restart_broker` (the embedded
  broker only: a shared Mosquitto is not ours to stop), :meth:`Building.stop_cloud` /
  :meth:`Building.start_cloud` (the API comes back on its port, a new bridge drains the
  outbox), :meth:`Building.stop_face` / :meth:`Building.start_face` (a lock's power) and
  :meth:`Building.stop_ble` / :meth:`Building.start_ble` (its radio alone).

Every await of start-up and teardown is bounded by ``BuildingConfig.timeout_s``; teardown
runs in reverse order and goes on past a part that fails to stop. Randomness is
``os.urandom`` unless ``random`` is given; the clocks are the wall clock (the cloud) and
the event loop's clock (the locks' timers) unless ``clocks`` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import aiomqtt
import httpx
from bumble import hci
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.api import create_app
from cloud.db import create_schema, make_engine, read_only_sessions, session_factory
from cloud.email import EmailSender, LoggingBackend, OutgoingEmail
from cloud.keys import current_key
from cloud.models import Door, EmailOutbox, Keycard, Person
from cloud.mqtt_bridge import BridgeConfig, MqttBridge
from cloud.seed import DoorKeys, SeedResult, seed_demo
from cloud.settings import CloudSettings
from controller.ble_door import BleDoor
from controller.config import ControllerConfig
from controller.events import AccessDecided, Action, CardAnswered, CardChallenge, CardTapped
from controller.identity import LockIdentity
from controller.mqtt_door import Backoff, MqttDoor
from controller.runtime import LockRuntime
from controller.storage import Flash, MemoryMedium
from infra.broker import EmbeddedBroker, is_reachable, parse_mqtt_url, start_embedded_broker
from infra.radio import RadioLink, device_on_link, phone_address
from phone_bridge.bleak_bumble import bumble_backends
from phone_bridge.cloud_client import CloudClient
from phone_bridge.phone import BleakDoors, Phone
from phone_bridge.store import PhoneStore
from phone_bridge.visit import VisitConfig
from protocol import Reason
from protocol.crypto import ed25519_private_from_seed
from protocol.keycard import card_response
from protocol.transport import TOPIC_PREFIX, door_topic

from .api_server import ApiServer, ApiServerError

__all__ = [
    "BrokerUnreachableError",
    "Building",
    "BuildingConfig",
    "BuildingError",
    "Clocks",
    "Lock",
    "Provisioner",
    "Seeder",
]

log = logging.getLogger(__name__)

EXTRA_DOORS_AT: Final = "Harbor Tower"
"""The building extra doors are registered at."""
EXTRA_DOORS_MANAGER: Final = "Maya Chen"
"""The seed's manager of that building's portfolio, who registers them."""
_RETAINED_LEAVES: Final = ("hello", "bundle", "status")
_FAST_RECONNECT: Final = Backoff(initial=0.05, cap=1.0)
_POLL_S: Final = 0.002


Seeder = Callable[[Session, Callable[[int], bytes], DoorKeys], SeedResult]
"""Fills the empty cloud database (session, random, door keys) and says what it made:
:func:`cloud.seed.seed_demo` by default; live mode seeds a scenario's world."""
Provisioner = Callable[["Building", str, LockIdentity], LockRuntime]
"""Makes the runtime of one lock (building, lock name, identity) before its face starts."""


@dataclass(frozen=True, kw_only=True)
class Clocks:
    """The clocks every part reads: the locks' (seconds, monotonic) and the wall's (unix)."""

    lock: Callable[[], float] | None = None
    """None: the event loop's clock."""
    wall: Callable[[], int] = field(default=lambda: int(time.time()))
    """The cloud's, the MQTT bridge's and the phones' clock; a lock is provisioned with it."""


class BuildingError(Exception):
    """The building could not be started (the message says which part and why)."""


class BrokerUnreachableError(BuildingError):
    """The MQTT broker named by ``--mqtt`` did not accept a connection."""


@dataclass(frozen=True, kw_only=True)
class BuildingConfig:
    """What to start. The defaults are the embedded ones: amqtt, SQLite, bumble's radio."""

    mqtt_url: str | None = None
    """``mqtt://host:port`` of a running broker (Mosquitto); None starts amqtt in-process."""
    extra_online_doors: int = 0
    """Online doors registered at Harbor Tower besides the seeded ones."""
    extra_offline_doors: int = 0
    """Offline (BLE) doors registered at Harbor Tower besides the seeded ones."""
    unpowered_doors: frozenset[str] = frozenset()
    """Names of doors whose lock is never powered on (no phone can reach it)."""
    timeout_s: float = 10.0
    """Upper bound of each start-up and teardown step, and of each wait."""
    scan_timeout_s: float = 5.0
    """How long a phone listens for a door's advertisement before giving up."""
    advertising_interval_ms: float = 20.0
    workdir: Path | None = None
    """Where the SQLite file and the phones' stores go (default: a new temporary dir)."""
    lock_config: ControllerConfig = field(default_factory=ControllerConfig)
    """Every lock's configuration (caps, timers)."""
    ble_on_online_doors: bool = False
    """Online doors also serve BLE on the radio (phones can open them too)."""

    def __post_init__(self) -> None:
        if self.mqtt_url is not None:
            parse_mqtt_url(self.mqtt_url)  # ValueError for anything but mqtt://host[:port]
        if self.extra_online_doors < 0 or self.extra_offline_doors < 0:
            raise ValueError("extra door counts must be >= 0")
        if self.timeout_s <= 0 or self.scan_timeout_s <= 0:
            raise ValueError("timeouts must be positive")


@dataclass
class Lock:
    """One door's lock: its name and id, kind, runtime and the face serving it."""

    name: str
    door_id: str
    online: bool
    runtime: LockRuntime
    face: MqttDoor | BleDoor | None = None
    """None while the lock is unpowered."""
    task: asyncio.Task[None] | None = None
    """An online door's ``run()``."""
    ble: BleDoor | None = None
    """The lock's BLE face: an offline door's only one; an online door's second face if
    ``BuildingConfig.ble_on_online_doors`` (None while the lock or its radio is off)."""
    actions: list[Action] = field(default_factory=list)
    """Local actions an online door handed out (challenges, decisions) since the last tap."""

    @property
    def version(self) -> int:
        """The credential-list version the lock holds."""
        return self.runtime.controller.state.held.version

    async def handle(self, event: CardTapped | CardAnswered) -> list[Action]:
        """Feed a local event to the lock through its face; return the local actions."""
        if isinstance(self.face, MqttDoor):
            self.actions.clear()
            await self.face.feed(event)
            return list(self.actions)
        return self.runtime.handle(event)


# --- the building ---------------------------------------------------------------------------


class Building:
    """The live building (see the module docstring). Use ``async with Building(config)``."""

    def __init__(
        self,
        config: BuildingConfig | None = None,
        *,
        random: Callable[[int], bytes] = os.urandom,
        seeder: Seeder | None = None,
        clocks: Clocks | None = None,
        provisioner: Provisioner | None = None,
        ble_door: type[BleDoor] = BleDoor,
    ) -> None:
        self.config = config or BuildingConfig()
        self.random = random
        self.clocks = clocks or Clocks()
        self.locks: dict[str, Lock] = {}
        """Door name → its lock."""
        self.seed = SeedResult()
        self.base_url = ""
        self.broker_kind: Literal["mosquitto", "embedded amqtt"] = "embedded amqtt"
        self.broker_url = ""
        self.link = RadioLink()
        self.bridge: MqttBridge | None = None
        self.http: httpx.AsyncClient | None = None
        self._seeder: Seeder = seeder or (lambda s, r, k: seed_demo(s, r, door_keys=k))
        self._provisioner = provisioner
        self._ble_door = ble_door
        self._label = random(6).hex()
        self._stack = contextlib.AsyncExitStack()
        self._engine: Engine | None = None
        self._identities: dict[str, LockIdentity] = {}
        self._cloud_public = b""
        self._phones = 0
        self._dir = Path()
        self._embedded: EmbeddedBroker | None = None
        self._api: ApiServer | None = None
        self._bridge_task: asyncio.Task[None] | None = None

    @property
    def cloud_public(self) -> bytes:
        """The cloud's signing key (epoch 0) that locks are provisioned with."""
        return self._cloud_public

    def _lock_clock(self) -> Callable[[], float]:
        return self.clocks.lock or asyncio.get_running_loop().time

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Building:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        await self._start_broker()
        self._dir = self._workdir()
        self._seed(self._dir / "cloud.db")
        await self._serve_api()
        await self._register_extra_doors()
        await self._start_bridge()
        self._start_email_sender()
        await self._start_locks()

    def _workdir(self) -> Path:
        if self.config.workdir is not None:
            self.config.workdir.mkdir(parents=True, exist_ok=True)
            return self.config.workdir
        made = tempfile.TemporaryDirectory(prefix="doorsim-")
        self._stack.callback(made.cleanup)
        return Path(made.name)

    async def _bounded(self, what: str, awaitable: Awaitable[Any]) -> Any:
        """Await ``awaitable`` within the configured timeout; name ``what`` if it overran."""
        try:
            async with asyncio.timeout(self.config.timeout_s):
                return await awaitable
        except TimeoutError:
            raise BuildingError(f"{what}: no answer within {self.config.timeout_s} s") from None

    async def _quietly(self, what: str, stop: Callable[[], Awaitable[Any]]) -> None:
        """A teardown step: ``stop()``, bounded; a failure is logged rather than raised."""
        try:
            await self._bounded(what, stop())
        except Exception as exc:
            log.warning("teardown: %s failed: %s", what, exc)

    # --- broker -----------------------------------------------------------------------------

    async def _start_broker(self) -> None:
        url = self.config.mqtt_url
        if url is None:
            broker: EmbeddedBroker = await self._bounded("amqtt", start_embedded_broker())
            self._embedded = broker
            self._stack.push_async_callback(self._quietly, "stop amqtt", self.stop_broker)
            self.broker_kind, self.broker_url = "embedded amqtt", broker.url
            return
        host, port = parse_mqtt_url(url)
        if not await is_reachable(host, port, timeout=min(2.0, self.config.timeout_s)):
            raise BrokerUnreachableError(f"MQTT broker {url} is not reachable")
        self.broker_kind, self.broker_url = "mosquitto", f"mqtt://{host}:{port}"
        self._stack.push_async_callback(self._quietly, "clean the broker", self._clean_broker)

    @property
    def broker_running(self) -> bool:
        """False between :meth:`stop_broker` and :meth:`restart_broker`."""
        return self.broker_kind == "mosquitto" or self._embedded is not None

    async def stop_broker(self) -> None:
        """Stop the embedded broker (a broker outage: every session and retained message
        goes, as in a restart without persistence). A shared Mosquitto is not ours to stop:
        :class:`BuildingError`."""
        if self.broker_kind == "mosquitto":
            raise BuildingError("the building does not own the Mosquitto broker; cannot stop it")
        broker, self._embedded = self._embedded, None
        if broker is not None:
            await broker.stop()

    async def restart_broker(self) -> None:
        """Start the embedded broker again on its old port (after :meth:`stop_broker`)."""
        if self._embedded is not None or self.broker_kind == "mosquitto":
            return
        _, port = self._broker
        self._embedded = await self._bounded("amqtt restart", start_embedded_broker(port))

    @property
    def _broker(self) -> tuple[str, int]:
        return parse_mqtt_url(self.broker_url)

    @property
    def key_rotation_topic(self) -> str:
        """This building's own key-rotation topic (a shared broker serves other clouds too)."""
        return f"{TOPIC_PREFIX}doorsim/{self._label}/keyrotation"

    async def _clean_broker(self) -> None:
        """Clear this run's retained topics and its doors' persistent sessions."""
        host, port = self._broker
        async with aiomqtt.Client(host, port) as client:
            await client.publish(self.key_rotation_topic, b"", qos=1, retain=True)
            for lock in self.locks.values():
                for leaf in _RETAINED_LEAVES:
                    topic = door_topic(bytes.fromhex(lock.door_id), leaf)
                    await client.publish(topic, b"", qos=1, retain=True)
        for lock in self.locks.values():
            if lock.online:
                async with aiomqtt.Client(
                    host, port, identifier=f"door-{lock.door_id}", clean_session=True
                ):
                    pass

    # --- cloud ------------------------------------------------------------------------------

    def _seed(self, path: Path) -> None:
        engine = make_engine(f"sqlite:///{path}")
        self._engine = engine
        self._stack.callback(engine.dispose)
        create_schema(engine)
        with session_factory(engine).begin() as session:
            self.seed = self._seeder(session, self.random, self._door_keys)
            self._cloud_public = current_key(session).public

    def _door_keys(self, door_id: str) -> tuple[bytes, bytes, bytes]:
        """Provision a lock's identity for a door the seed makes; the cloud gets its keys."""
        identity = LockIdentity.generate(
            door_id=bytes.fromhex(door_id),
            property_id=bytes(16),
            doorcode_secret=self.random(32),
            random=self.random,
        )
        self._identities[door_id] = identity
        return identity.identity_public, identity.sealing_public, identity.doorcode_secret

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The cloud database's session factory (for reading what the cloud recorded)."""
        if self._engine is None:
            raise BuildingError("the building is not running")
        return session_factory(self._engine)

    @property
    def read_sessions(self) -> sessionmaker[Session]:
        """Sessions that only read: they never wait for, or hold up, the cloud's writes
        (:func:`cloud.db.read_only_sessions`)."""
        if self._engine is None:
            raise BuildingError("the building is not running")
        return read_only_sessions(self._engine)

    async def _serve_api(self) -> None:
        engine = self._engine
        assert engine is not None
        settings = CloudSettings(
            database_url=str(engine.url), random=self.random, clock=self.clocks.wall
        )
        app = create_app(settings, engine=engine, on_outbox=self._notify)
        self._api = ApiServer(app, timeout_s=self.config.timeout_s)
        self._stack.push_async_callback(self._quietly, "stop the cloud API", self._api.stop)
        try:
            self.base_url = await self._api.start()
        except ApiServerError as exc:
            raise BuildingError(str(exc)) from exc
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=self.config.timeout_s)
        self._stack.push_async_callback(self._quietly, "close the API client", self.http.aclose)

    async def stop_cloud(self) -> None:
        """Stop the cloud: its HTTP API (same port later) and its MQTT bridge."""
        if self._api is not None:
            await self._api.stop()
        bridge, task = self.bridge, self._bridge_task
        self.bridge, self._bridge_task = None, None
        if bridge is not None and task is not None:
            await self._stop_task("the MQTT bridge", bridge.stop, task)

    async def start_cloud(self) -> None:
        """Start the cloud again after :meth:`stop_cloud`: the API on its old port, a new
        bridge (it drains the outbox the stopped one left)."""
        if self._api is not None and not self._api.running:
            await self._api.start()
        if self.bridge is None:
            await self._start_bridge(teardown=False)

    def _notify(self) -> None:
        if self.bridge is not None:
            self.bridge.notify()

    async def _start_bridge(self, *, teardown: bool = True) -> None:
        engine = self._engine
        assert engine is not None
        host, port = self._broker
        config = BridgeConfig(
            share_group=f"doorsim-{self._label}",
            key_rotation_topic=self.key_rotation_topic,
            reconnect_initial=0.05,
            reconnect_cap=1.0,
            timeout=self.config.timeout_s,
        )
        bridge = MqttBridge(
            session_factory(engine),
            host=host,
            port=port,
            clock=self.clocks.wall,
            random=self.random,
            config=config,
            client_id=f"doorsim-cloud-{self._label}",
        )
        task = asyncio.create_task(bridge.run(), name="doorsim mqtt bridge")
        self.bridge, self._bridge_task = bridge, task
        if teardown:
            self._stack.push_async_callback(self._stop_bridge)
        await self._bounded(f"the MQTT bridge at {self.broker_url}", bridge.ready.wait())

    async def _stop_bridge(self) -> None:
        bridge, task = self.bridge, self._bridge_task
        if bridge is not None and task is not None:
            await self._stop_task("the MQTT bridge", bridge.stop, task)

    def _start_email_sender(self) -> None:
        sender = EmailSender(self.sessions, LoggingBackend(), poll_interval_s=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop), name="doorsim email sender")

        async def set_stop() -> None:
            stop.set()

        self._stack.push_async_callback(self._stop_task, "the email sender", set_stop, task)

    async def _stop_task(
        self, what: str, stop: Callable[[], Awaitable[None]], task: asyncio.Task[None]
    ) -> None:
        await self._quietly(f"stop {what}", stop)
        if not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait({task}, timeout=self.config.timeout_s)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # --- doors ------------------------------------------------------------------------------

    async def _register_extra_doors(self) -> None:
        n_online, n_offline = self.config.extra_online_doors, self.config.extra_offline_doors
        wanted = [(f"Tower online door {n + 1}", True) for n in range(n_online)]
        wanted += [(f"Tower offline door {n + 1}", False) for n in range(n_offline)]
        for name, online in wanted:
            door_id = self.random(16).hex()
            identity = LockIdentity.generate(
                door_id=bytes.fromhex(door_id),
                property_id=bytes.fromhex(self.seed.properties[EXTRA_DOORS_AT]),
                doorcode_secret=self.random(32),
                random=self.random,
            )
            body = {
                "id": door_id,
                "property_id": self.seed.properties[EXTRA_DOORS_AT],
                "name": name,
                "online": online,
                "identity_public": identity.identity_public.hex(),
                "sealing_public": identity.sealing_public.hex(),
                "doorcode_secret": identity.doorcode_secret.hex(),
            }
            response = await self.api("POST", "/v1/doors", EXTRA_DOORS_MANAGER, body)
            if response.status_code != 201:
                raise BuildingError(f"registering {name}: {response.status_code} {response.text}")
            self._identities[door_id] = identity
            self.seed.doors[name] = door_id

    async def _start_locks(self) -> None:
        with self.sessions() as session:
            doors = {d.id: (d.name, d.online, d.property_id) for d in session.scalars(select(Door))}
        names = {door_id: name for name, door_id in self.seed.doors.items()}
        for door_id, (cloud_name, online, property_id) in sorted(
            doors.items(), key=lambda d: names.get(d[0], d[1][0])
        ):
            name = names.get(door_id, cloud_name)
            identity = replace(self._identities[door_id], property_id=bytes.fromhex(property_id))
            runtime = self._provision(name, identity)
            lock = Lock(name, door_id, online, runtime)
            self.locks[name] = lock
            self._stack.push_async_callback(self.stop_face, lock)
            if name not in self.config.unpowered_doors:
                await self.start_face(lock)

    def _provision(self, name: str, identity: LockIdentity) -> LockRuntime:
        if self._provisioner is not None:
            return self._provisioner(self, name, identity)
        return LockRuntime.provision(
            Flash(MemoryMedium()),
            identity,
            self._cloud_public,
            config=self.config.lock_config,
            clock=self._lock_clock(),
            wall_time=self.clocks.wall(),
            random=self.random,
        )

    async def start_face(self, lock: Lock) -> None:
        """Serve ``lock.runtime`` on MQTT or on the radio (power on, or back after a cut)."""
        if lock.online:
            await self._start_mqtt_door(lock)
        if not lock.online or self.config.ble_on_online_doors:
            await self.start_ble(lock)

    async def stop_face(self, lock: Lock) -> None:
        """Take the lock off MQTT and the radio (power off); its runtime stays as it was."""
        face, task = lock.face, lock.task
        lock.face, lock.task = None, None
        if isinstance(face, MqttDoor) and task is not None:
            await self._stop_task(f"door {lock.name}", face.stop, task)
        await self.stop_ble(lock)

    async def start_ble(self, lock: Lock) -> None:
        """Put the lock's BLE face on the radio (again)."""
        door = self._ble_door.on_link(
            lock.runtime, self.link, advertising_interval_ms=self.config.advertising_interval_ms
        )
        lock.ble = door
        if not lock.online:
            lock.face = door
        await self._bounded(f"door {lock.name} on the radio", door.start())

    async def stop_ble(self, lock: Lock) -> None:
        """Take the lock's BLE face off the radio (its link is lost; the lock runs on)."""
        door, lock.ble = lock.ble, None
        if lock.face is door:
            lock.face = None
        if door is not None:
            await self._quietly(f"stop door {lock.name} on the radio", door.stop)
            self._off_the_air(door.address)

    def _off_the_air(self, address: hci.Address) -> None:
        """Take the radio of a stopped door off the link, so a new one can use its address."""
        for controller in list(self.link.controllers):
            if address in (controller.random_address, controller.public_address):
                self.link.remove_controller(controller)

    async def _start_mqtt_door(self, lock: Lock) -> None:
        host, port = self._broker
        door = MqttDoor(
            lock.runtime,
            host=host,
            port=port,
            on_action=lock.actions.append,
            backoff=_FAST_RECONNECT,
            timeout=self.config.timeout_s,
            key_rotation_topic=self.key_rotation_topic,
        )
        lock.face, lock.task = door, asyncio.create_task(door.run(), name=f"door {lock.name}")
        if self.broker_running:
            await self._bounded(f"door {lock.name} on MQTT", door.connected.wait())

    # --- what the story uses -----------------------------------------------------------------

    def door_id(self, name: str) -> str:
        return self.seed.doors[name]

    def door_name(self, door_id: str) -> str:
        return next(name for name, ident in self.seed.doors.items() if ident == door_id)

    def token(self, who: str) -> str:
        return self.seed.tokens[who]

    def person_id(self, who: str) -> str:
        return self.seed.people[who]

    def card_uid(self, label: str) -> str:
        return self.seed.cards[label][0]

    def card_code(self, label: str) -> str:
        return self.seed.cards[label][1]

    async def api(
        self, method: str, path: str, who: str, json: dict[str, Any] | None = None
    ) -> httpx.Response:
        """Call the cloud API over TCP as ``who`` (a manager's or resident's bearer token)."""
        return await self.request(method, path, self.token(who), json)

    async def request(
        self, method: str, path: str, token: str, json: dict[str, Any] | None = None
    ) -> httpx.Response:
        """Call the cloud API over TCP with bearer ``token``."""
        if self.http is None:
            raise BuildingError("the building is not running")
        headers = {"Authorization": f"Bearer {token}"}
        return await self.http.request(method, path, headers=headers, json=json)

    async def phone(
        self,
        who: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        config: VisitConfig | None = None,
    ) -> Phone:
        """``who``'s phone: a new radio on the link, a store file, a cloud client (over
        ``transport`` if given, e.g. one that can lose signal), the building's wall clock."""
        self._phones += 1
        radio = device_on_link(self.link, f"{who}'s phone", phone_address(self._phones))
        await self._bounded(f"{who}'s phone radio", radio.power_on())
        self._stack.push_async_callback(self._quietly, f"{who}'s radio off", radio.power_off)
        cloud = CloudClient(self.base_url, timeout=self.config.timeout_s, transport=transport)
        self._stack.push_async_callback(self._quietly, f"{who}'s cloud client", cloud.aclose)
        scanner_kwargs, client_kwargs = bumble_backends(radio)
        store = PhoneStore(self._dir / f"phone-{self._phones}.sqlite")
        return Phone(
            key=ed25519_private_from_seed(self.random(32)),
            store=store,
            cloud=cloud,
            doors=BleakDoors(
                scanner_kwargs,
                client_kwargs,
                scan_timeout_s=self.config.scan_timeout_s,
                client_timeout_s=self.config.timeout_s,
            ),
            config=config,
            wall_time=self.clocks.wall,
        )

    async def tap(self, door: str, card: str) -> Reason:
        """Hold keycard ``card`` (a seed label) to door ``door``'s reader; the lock's decision."""
        lock = self.locks[door]
        uid = bytes.fromhex(self.card_uid(card))
        with self.sessions() as session:
            key = session.scalars(select(Keycard.card_key).where(Keycard.uid == uid.hex())).one()
        asked = await lock.handle(CardTapped(uid))
        (challenge,) = [a for a in asked if isinstance(a, CardChallenge)]
        answer = card_response(key, uid, challenge.challenge)
        answered = await lock.handle(CardAnswered(uid, answer))
        decided = [a for a in answered if isinstance(a, AccessDecided)]
        if not decided:
            raise BuildingError(f"door {door} made no decision on card {card}")
        return decided[-1].reason

    def emails_to(self, who: str) -> list[OutgoingEmail]:
        """The emails the cloud recorded for person ``who``, oldest first."""
        with self.sessions() as session:
            person = session.get(Person, self.person_id(who))
            assert person is not None
            rows = session.scalars(
                select(EmailOutbox)
                .where(EmailOutbox.recipient == person.email)
                .order_by(EmailOutbox.id)
            )
            return [OutgoingEmail.from_row(row) for row in rows]

    def record_app_use(self, who: str) -> None:
        """History: ``who`` has opened doors with the app before this run.

        The cloud learns this from lock-signed audit batches (a granted phone decision);
        a building that starts today writes it as the world's past.
        """
        with self.sessions.begin() as session:
            person = session.get(Person, self.person_id(who))
            assert person is not None
            person.used_app = True

    async def wait_until(
        self, what: str, predicate: Callable[[], bool], *, reads_database: bool = False
    ) -> None:
        """Return once ``predicate()`` holds; :class:`TimeoutError` naming ``what`` if it
        does not within the configured timeout (checked every couple of milliseconds).

        ``reads_database``: run it in a worker thread, since a SQLite transaction may wait
        for the bridge's or the API's (and must not stall the doors on this loop meanwhile).
        """

        async def holds() -> bool:
            return await asyncio.to_thread(predicate) if reads_database else predicate()

        try:
            async with asyncio.timeout(self.config.timeout_s):
                while not await holds():
                    await asyncio.sleep(_POLL_S)
        except TimeoutError:
            raise TimeoutError(f"{what}: not within {self.config.timeout_s} s") from None
