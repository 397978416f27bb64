"""Live mode's runner: a scenario on real components, replayed in compressed wall time.

Theory of operation
-------------------
:class:`LiveRun` builds a :class:`~simulators.building.Building` from the scenario
(:mod:`._seed`: the cloud's database; every lock a :class:`~._lock.PoweredRuntime` on
its own flash and :class:`~._clock.LockClock`, commissioned with its first list; online
doors on MQTT *and* on the radio, offline doors on the radio), gives every resident with
the app a phone (its cloud calls through a switchable :class:`~._signal.Signal`; it logs in
at its first visit), and starts the scenario clock. Then it replays one timeline in
order, each item at its scenario time:

* the scenario's openings (:func:`simulators.traffic.openings`, the very list fast mode
  replays), each one decision (:mod:`._openings`: a card tap at the lock's reader, or a
  phone's visit over bumble);
* the scripted events and the faults, through :mod:`._events`.

Items run one at a time, so two never race for a lock or a phone; ``max_lag_s`` says how
far behind its time the runner ever started one. A monitor task polls the cloud's doors
(synced and pending versions) and the audit records while the timeline runs, and tells
``progress`` the scenario seconds done. After the scenario's last second the runner lets
in-flight receipts land, takes the figures from the real final state
(:meth:`~._record.Tracker.figures`) and tears the building down.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sqlalchemy import func, select

from cloud.models import AuditRecord, Door
from controller.config import ControllerConfig
from controller.identity import LockIdentity
from controller.state import LockState

from ..building import Building, BuildingConfig, Clocks, Lock
from ..outcome import DoorTraffic, FaultRecord, RunOutcome
from ..scenario import Scenario
from ..traffic import Opening, openings
from ._clock import LockClock, ScenarioClock
from ._lock import CuttableFlash, LockMeter, PoweredRuntime, reboot, stored_state
from ._openings import Cards, LivePhone, open_door
from ._radio import LossyBleDoor
from ._record import AuditState, DoorState, Tracker, Update
from ._seed import LiveWorld, commission, door_key, scenario_seeder
from ._signal import Signal

if TYPE_CHECKING:
    from ._events import CutRecord

__all__ = ["LiveConfig", "LiveRun"]

log = logging.getLogger(__name__)

_POLL_S: Final = 0.05
"""How often (wall seconds) the monitor reads the cloud's doors."""
_AUDIT_EVERY: Final = 10
"""The monitor samples audit completeness every this many polls."""
Item = Callable[[], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class LiveConfig:
    """How a live run runs (the scenario says what happens)."""

    speed: float = 1.0
    """Scenario seconds per wall second."""
    mqtt_url: str | None = None
    """A running broker (Mosquitto) to use; None: an embedded amqtt broker."""
    timeout_s: float = 10.0
    """Upper bound (wall seconds) of each start-up step and each wait on a part."""

    def lock_config(self) -> ControllerConfig:
        """The locks' configuration. Timeouts that stand for physics (a card answers its
        challenge in milliseconds; a phone's visit takes a fraction of a second) are
        stretched by ``speed``, so compressing scenario time does not make hardware slow."""
        return ControllerConfig(
            card_response_timeout_s=max(1.0, 0.5 * self.speed),
            challenge_lifetime_s=max(600.0, 10.0 * self.speed),
        )


class LiveRun:
    """One live run of one scenario (see the module docstring)."""

    def __init__(
        self,
        scenario: Scenario,
        config: LiveConfig,
        *,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.scenario, self.config, self.progress = scenario, config, progress
        self.world = LiveWorld()
        self.tracker = Tracker()
        self.phones: dict[str, LivePhone] = {}
        """Every resident's phone that has the app, by person."""
        self.cards = Cards(current={p.name: p.cards[0] for p in scenario.people if p.cards})
        self.faults: list[tuple[float, str, str, Callable[[], str]]] = []
        """(at, kind, target, effect): the effect is written when the run ends."""
        self.off: set[str] = set()
        """Doors whose lock has no power now."""
        self.lossy: set[str] = set()
        """Doors whose BLE links drop mid-visit now (a ``ble_link_loss``)."""
        self.clocks: dict[str, LockClock] = {}
        self.meters: dict[str, LockMeter] = {}
        self.broker_note = ""
        self.cloud_back_at: float | None = None
        """While the cloud is down: the scenario time it comes back."""
        self.cuts: dict[str, CutRecord] = {}
        """Doors armed for a power cut during their next update."""
        self.booted_after: dict[str, int] = {}
        """The list version each lock held when it last booted after a power cut."""
        self.doors: dict[str, tuple[bool, DoorState]] = {}
        """The cloud's view of every door at the last poll."""
        self.names = {
            door_key(b.name, d.name): (b.name, d.name) for b in scenario.buildings for d in b.doors
        }
        """Door key → (building, door)."""
        self._building: Building | None = None
        self._clock: ScenarioClock | None = None
        self._timeline: list[tuple[float, int, int, Item]] = []
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- what the event handlers use ---------------------------------------------------

    @property
    def building(self) -> Building:
        if self._building is None:
            raise RuntimeError("the building is not running")
        return self._building

    @property
    def clock(self) -> ScenarioClock:
        if self._clock is None:
            raise RuntimeError("the scenario clock is not running")
        return self._clock

    def now(self) -> float:
        return self.clock.now()

    def at(self, at_s: float, item: Item, *, rank: int = 1) -> None:
        """Run ``item`` at scenario time ``at_s`` (ties: lower ``rank`` first, then in order)."""
        heapq.heappush(self._timeline, (at_s, rank, next(self._order), item))
        self._changed.set()

    def fault(self, at_s: float, kind: str, target: str, effect: Callable[[], str]) -> None:
        self.faults.append((at_s, kind, target, effect))

    def lock(self, key: str) -> Lock:
        return self.building.locks[key]

    def runtime(self, key: str) -> PoweredRuntime:
        runtime = self.lock(key).runtime
        assert isinstance(runtime, PoweredRuntime)
        return runtime

    def background(self, work: Awaitable[None]) -> None:
        """Run ``work`` beside the timeline (kept until done)."""

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("live run: background step failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def power_off(self, key: str) -> None:
        """Cut the lock's power: its faces go; its runtime (RAM) is dropped at the reboot."""
        self.off.add(key)
        self.runtime(key).dark = True
        await self.building.stop_face(self.lock(key))

    async def power_on(self, key: str) -> None:
        """Boot the lock from its flash and serve it again."""
        lock = self.lock(key)
        runtime = reboot(
            self.runtime(key), config=self.config.lock_config(), random=self.building.random
        )
        lock.runtime = runtime
        self.booted_after[key] = runtime.controller.state.held.version
        self.off.discard(key)
        await self.start_faces(key)

    async def start_faces(self, key: str) -> None:
        lock = self.lock(key)
        await self.building.start_face(lock)
        if isinstance(lock.ble, LossyBleDoor):
            lock.ble.lossy = key in self.lossy

    def stored_version(self, key: str) -> int:
        """The list version the lock holds now, or would hold after booting from flash."""
        runtime = self.runtime(key)
        if not runtime.dark:
            return runtime.controller.state.held.version
        return self.booted_state(key).held.version

    def booted_state(self, key: str) -> LockState:
        """The lock's state; a dark lock's is what its flash holds (its RAM is gone)."""
        runtime = self.runtime(key)
        if not runtime.dark:
            return runtime.controller.state
        return stored_state(runtime, config=self.config.lock_config())

    # --- the run -------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._clock = ScenarioClock(self.scenario.start, speed=self.config.speed)
        async with self._new_building() as building:
            self._building = building
            await self._make_phones()
            self._schedule()
            self.clock.start()
            monitor = asyncio.create_task(self._monitor(), name="live monitor")
            try:
                await self._replay()
                await self.clock.sleep_until(self.scenario.duration_s)
                await self._settle()
            finally:
                monitor.cancel()
                await asyncio.gather(monitor, return_exceptions=True)
            await self._poll()
            outcome = self._outcome()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        outcome.figures["wall_s"] = round(loop.time() - started, 3)
        outcome.figures["speed"] = self.config.speed
        return outcome

    def _new_building(self) -> Building:
        from ._events import needs_own_broker

        url = self.config.mqtt_url
        if url is not None and needs_own_broker(self.scenario):
            self.broker_note = (
                f"run on the embedded amqtt broker: the broker at {url} is not ours to stop"
            )
            url = None
        config = BuildingConfig(
            mqtt_url=url,
            timeout_s=self.config.timeout_s,
            lock_config=self.config.lock_config(),
            ble_on_online_doors=True,
        )
        return Building(
            config,
            seeder=scenario_seeder(self.scenario, self.world),
            clocks=Clocks(wall=self._clock_wall),
            provisioner=self._provision,
            ble_door=LossyBleDoor,
        )

    def _clock_wall(self) -> int:
        return self.clock.wall()

    def _provision(self, building: Building, key: str, identity: LockIdentity) -> PoweredRuntime:
        clock = self.clocks[key] = LockClock(self.clock)
        runtime = PoweredRuntime.provision(
            CuttableFlash(),
            identity,
            building.cloud_public,
            config=self.config.lock_config(),
            clock=clock,
            wall_time=self.clock.start_unix + int(clock()),
            random=building.random,
        )
        assert isinstance(runtime, PoweredRuntime)
        with building.sessions.begin() as session:
            commission(session, runtime, identity.door_id.hex(), building.random)
        runtime.meter = self.meters[key] = LockMeter()
        runtime.on_version = lambda version: self._applied(key, version)
        runtime.on_power_lost = lambda: self._power_lost(key)
        return runtime

    def _applied(self, key: str, version: int) -> None:
        if self._clock is not None and self.clock.started:
            self.tracker.applied(key, version, self.now())

    def _power_lost(self, key: str) -> None:
        from ._events import power_lost

        power_lost(self, key)

    async def _make_phones(self) -> None:
        """Every resident with the app gets a phone (logged in at its first visit)."""
        for person in self.scenario.people:
            if not person.phone:
                continue
            signal = Signal()
            phone = await self.building.phone(person.name, transport=signal)
            token = self.world.person_tokens[person.name]
            self.phones[person.name] = LivePhone(phone, signal, token)

    def _schedule(self) -> None:
        from ._events import schedule_event

        for opening in openings(self.scenario):
            self.at(opening.at_s, self._opener(opening), rank=2)
        for event in self.scenario.events:
            schedule_event(self, event)

    def _opener(self, opening: Opening) -> Item:
        async def run() -> None:
            await open_door(self, opening)

        return run

    async def _replay(self) -> None:
        while self._timeline:
            at_s, _, _, item = self._timeline[0]
            self._changed.clear()
            delay = self.clock.loop_time_at(at_s) - asyncio.get_running_loop().time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._changed.wait()
                continue  # the head may have changed meanwhile
            heapq.heappop(self._timeline)
            self.tracker.max_lag_s = max(self.tracker.max_lag_s, self.now() - at_s)
            try:
                await item()
            except Exception:  # one step's failure is reported; the run goes on
                log.exception("live run: the step due at %.3f s failed", at_s)
                self.tracker.errors += 1
            self._report_progress()

    def _report_progress(self) -> None:
        if self.progress is not None:
            self.progress(min(self.scenario.duration_s, max(0.0, self.now())))

    async def _settle(self) -> None:
        """Let what is in flight land: background steps, and online doors' receipts for
        updates their locks already applied (bounded by the timeout)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.config.timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        while loop.time() < deadline:
            await self._poll()
            if not any(
                u.applied_s is not None
                and u.synced_s is None
                and u.online
                and u.door not in self.off
                for u in self.tracker.updates
            ):
                return
            await asyncio.sleep(_POLL_S)

    def _receipt_due(self, update: Update) -> bool:
        """An online lock applied ``update``; its receipt is on its way to the cloud."""
        applied = update.applied_s is not None and update.synced_s is None
        return applied and update.online and update.door not in self.off

    # --- openings ------------------------------------------------------------------------

    # --- watching the cloud ----------------------------------------------------------------

    async def _monitor(self) -> None:
        for n in itertools.count():
            await self._poll(audit=n % _AUDIT_EVERY == 0)
            self._report_progress()
            await asyncio.sleep(_POLL_S)

    async def _poll(self, *, audit: bool = True) -> None:
        names = {door_id: key for key, door_id in self.building.seed.doors.items()}

        def read() -> tuple[dict[str, tuple[bool, DoorState]], int]:
            with self.building.read_sessions() as session:  # never queues behind writers
                rows = session.execute(
                    select(Door.id, Door.online, Door.list_version, Door.synced_version)
                ).all()
                stored = session.scalar(select(func.count()).select_from(AuditRecord)) or 0
            doors = {names[i]: (bool(o), DoorState(int(lv), int(sv))) for i, o, lv, sv in rows}
            return doors, int(stored)

        doors, stored = await asyncio.to_thread(read)
        now = self.now()
        self.doors = doors
        self.tracker.cloud(doors, now)
        if audit:
            made = sum(self.booted_state(key).audit.head_seq for key in doors)
            self.tracker.audit(now, made, stored)

    # --- the outcome -------------------------------------------------------------------------

    def _audit_states(self) -> dict[str, AuditState]:
        with self.building.sessions() as session:
            rows = session.execute(select(AuditRecord.door_id, AuditRecord.seq)).all()
        stored: dict[str, set[int]] = {}
        for door_id, seq in rows:
            stored.setdefault(door_id, set()).add(int(seq))
        states = {}
        for key, lock in self.building.locks.items():
            audit = self.booted_state(key).audit
            states[key] = AuditState(
                head_seq=audit.head_seq,
                held=frozenset(e.seq for e in audit.events()),
                dropped=audit.lost,
                stored=frozenset(stored.get(lock.door_id, set())),
            )
        return states

    def _outcome(self) -> RunOutcome:
        locks_hold = {key: self.stored_version(key) for key in self.building.locks}
        figures = self.tracker.figures(
            locks_hold=locks_hold, doors=self.doors, audits=self._audit_states()
        )
        series = self.tracker.series
        series.doors = [self._door_traffic(key) for key in sorted(self.building.locks)]
        faults = [
            FaultRecord(at_s, kind, target, effect())
            for at_s, kind, target, effect in sorted(self.faults, key=lambda f: f[0])
        ]
        return RunOutcome(
            scenario=self.scenario.name,
            mode="live",
            seed=self.scenario.seed,
            duration_s=self.scenario.duration_s,
            figures=figures,
            decisions=sorted(self.tracker.decisions, key=lambda d: d.at_s),
            faults=faults,
            series=series,
        )

    def _door_traffic(self, key: str) -> DoorTraffic:
        building, door = self.names[key]
        meter, lock = self.meters[key], self.lock(key)
        return DoorTraffic(
            building=building,
            door=door,
            online=lock.online,
            bundle_bytes=meter.bundle_bytes,
            ble_airtime_s=0.0 if lock.online else round(meter.ble_airtime_s, 6),
        )
