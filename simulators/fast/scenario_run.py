"""Fast mode runs a scenario file: its openings, its scripted events and faults, one outcome.

Theory of operation
-------------------
:func:`run_scenario` builds the scenario's world (:mod:`.scenario_setup`: the cloud
database, every lock commissioned, each lock on its own flash), then runs virtual time
(:class:`~simulators.fast.clock.Scheduler`) from 0 to the scenario's duration and returns a
:class:`~simulators.outcome.RunOutcome`. Everything that decides is real code: the lock
cores (real Ed25519/X25519/AEAD/CMAC), the cloud's rules and sync engine on in-memory
SQLite, the MQTT ingest functions. What is modelled is what lies between them:

* **openings** — exactly :func:`simulators.traffic.openings` of the scenario, the list live
  mode replays too. A card opening is a tap through the lock's challenge-response
  (:func:`protocol.keycard.card_response`); the card is the person's first, or the
  replacement a ``lost_card`` event issued for it. A phone opening is a BLE visit
  (:mod:`.scenario_visit`): at a BLE-only door it also carries the bundle the lock needs,
  a held AUDIT_ACK and a TIME_SYNC, and takes the receipt and audit batches out; at an
  online door it only unlocks (the door's MQTT session carries its updates and audit).
  Each access decision becomes a :class:`~simulators.outcome.Decision` at the opening's
  time with the lock's ``Reason`` name; a lock without power decides nothing and the
  decision reads ``NO_POWER``; a phone that never obtained a mobile credential (offline
  from its first use) reads ``NO_MOBILE_CREDENTIAL``; a visit the lock answered without a
  decision reads ``NO_LINK`` (live mode's names for the same cases).
* **MQTT** — after a cloud transaction that queued frames, the outbox drain runs
  :data:`DRAIN_DELAY_S` later (:func:`cloud.mqtt_ingest.claim_unsent`); frames travel on
  per-door :class:`~simulators.fast.net.MqttLink`s. An online door's HELLO (on connect,
  on reconnect and on each session refresh) goes through
  :func:`cloud.mqtt_ingest.record_hello`: a door behind gets a catch-up bundle and a
  drifted clock a TIME_SYNC bound to the HELLO's challenge.
* **changes** — ``activate``, ``deactivate`` and ``lost_card`` call the cloud's rules: by a
  manager (the portfolio rule applies; a refusal is counted, not an error) or by the
  person with the code printed on the card. Every door update they cause is tracked
  (:mod:`.report`): ``time_to_sync`` is change → receipt accepted, revocation latency is
  change → the lock holds the revoking list.
* **faults** (:mod:`.scenario_faults`) — each scenario fault is one
  :class:`~simulators.outcome.FaultRecord` whose sentence says what it did and whether
  anything was lost.

``lost_updates`` counts door updates a lock lacks although the cloud no longer shows them
pending; ``lost_audit_events`` counts events a lock made that neither reached the cloud nor
are still held by the lock (from its flash, if it is off at the end). Both must be 0.
Nothing reads wall time; every draw is seeded from the scenario's seed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property, partial
from operator import attrgetter

from sqlalchemy import false, func, select

from cloud.errors import CloudError
from cloud.models import AuditRecord, Door, DoorVersion, MqttOutbox
from cloud.mqtt_ingest import claim_unsent, ingest_audit, ingest_receipt, mark_sent, record_hello
from cloud.raw_tx import RawTransactions
from cloud.service import CloudService
from cloud.sync import took_outbox
from controller.events import (
    MQTT,
    AccessDecided,
    Action,
    CardAnswered,
    CardChallenge,
    CardTapped,
    Channel,
    Connected,
    Event,
    FrameReceived,
    Send,
)
from controller.state import LockState
from controller.storage import Flash, PowerLost
from protocol import MessageType, Reason
from protocol.crypto import ed25519_private_from_seed, public_bytes
from protocol.frame import decode_frame
from protocol.keycard import card_response
from simulators._scenario_model import Scenario
from simulators.fixture import fixed_bytes
from simulators.outcome import Decision, DoorTraffic, Figure, RunOutcome, Series
from simulators.traffic import Opening, openings

from .clock import Scheduler
from .collector import collector_for_run, collector_paused
from .net import BleModel, MqttLink, MqttModel
from .report import Tracked, Tracker, percentile
from .scenario_faults import Faults
from .scenario_parts import (
    LockClock,
    PendingDoors,
    SimDoor,
    SimPerson,
    SimPhone,
    decision_of,
    synced_version,
)
from .scenario_setup import ScenarioSetup, build_world, lock_config
from .scenario_visit import Visits

__all__ = ["DRAIN_DELAY_S", "ScenarioRun", "run_scenario"]

DRAIN_DELAY_S = 0.001
"""From a commit that queued frames to the outbox drain publishing them."""
AUDIT_FLUSH_S = 900.0
"""An online door holding unacknowledged audit refreshes its session this often."""
AUDIT_FLUSH_EVENTS = 200
SAMPLES = 240
"""Audit-completeness samples (and progress reports) over a run."""
_AUDIT_MADE = attrgetter("audit_made")
_LOCAL = frozenset({Send, CardChallenge, AccessDecided})
"""The lock actions :meth:`ScenarioRun.lock` hands back (BLE sends, card challenges,
decisions); MQTT sends it routes itself, and the rest (energise) need nothing."""


class ScenarioRun:
    """One scenario on a virtual clock (see the module docstring)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        progress: Callable[[float], None] | None = None,
        mqtt: MqttModel | None = None,
        ble: BleModel | None = None,
    ) -> None:
        with collector_paused():  # a world of long-lived objects, hardly any cycles
            self.scenario = scenario
            self.progress = progress
            self.clock = Scheduler()
            self.mqtt_model = mqtt or MqttModel()
            self.ble = ble or BleModel()
            clocks = [LockClock(self.clock) for _ in range(scenario.door_count)]
            self.setup: ScenarioSetup = build_world(scenario, lambda n: clocks[n])
            self.config = lock_config()
            self.cache = self.setup.cache
            self.doors = self._make_doors(clocks)
            self.door_index = {door.spec.id: door.spec.index for door in self.doors}
            self.people = self._make_people()
            self.tracker = Tracker(len(self.doors))
            self.pending = PendingDoors()
            self.decisions: list[Decision] = []
            self.samples: list[tuple[float, int, int]] = []
            self.counts: dict[str, int] = {}
            self.cloud_up = True
            self.broker_up = True
            self.held_for_cloud: list[Callable[[], object]] = []
            self._drain_due = False
            self.channels = itertools.count(1)
            self._openings = iter(openings(scenario))
            self.faults = Faults(self)
            self.visits = Visits(self)
            self._start()

    # --- construction -------------------------------------------------------------------

    def _make_doors(self, clocks: list[LockClock]) -> list[SimDoor]:
        net = random.Random(f"scenario {self.scenario.seed} network")
        doors = []
        for spec, lock, clock in zip(self.setup.doors, self.setup.locks, clocks, strict=True):
            door = SimDoor(spec, lock, lock.flash.medium, clock)
            if spec.online:
                door.down = MqttLink(self.clock, self.mqtt_model, net)
                door.up = MqttLink(self.clock, self.mqtt_model, net)
            door.audit_made = lock.controller.state.audit.next_seq - 1
            doors.append(door)
        return doors

    def _make_people(self) -> list[SimPerson]:
        people = []
        for spec in self.setup.people:
            phone = None
            if spec.phone:
                label = f"scenario {self.scenario.seed} phone {spec.name}"
                key = ed25519_private_from_seed(fixed_bytes(label))
                phone = SimPhone(key, public_bytes(key))
            card = spec.cards[0] if spec.cards else None
            people.append(SimPerson(spec.index, spec.name, spec.id, card, phone))
        return people

    def _start(self) -> None:
        phase = random.Random(f"scenario {self.scenario.seed} phases")
        for door in self.doors:
            if door.spec.online:
                self.clock.at(0.0, partial(self.connect, door))
                self.clock.at(phase.uniform(0, AUDIT_FLUSH_S), partial(self._refresh, door))
        self._next_opening()
        self.faults.schedule(self.scenario.events)
        step = self.scenario.duration_s / SAMPLES
        for n in range(SAMPLES + 1):
            self.clock.at(min(n * step, self.scenario.duration_s), self._sample)

    # --- running ------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        """Run to the scenario's end and return what happened."""
        try:
            with collector_for_run():
                self.clock.run_until(self.scenario.duration_s)
        finally:
            # Back to the pool from this thread: SQLite refuses to close a connection from
            # another one, where the garbage collector might otherwise drop it.
            self._transactions.close()
        return self.outcome()

    def count(self, what: str, amount: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + amount

    def _sample(self) -> None:
        made = sum(map(_AUDIT_MADE, self.doors))
        self.samples.append((self.clock.now, made, self._audit_stored()))
        if self.progress is not None:
            self.progress(self.clock.now)

    def _audit_stored(self) -> int:
        """The audit events the cloud holds: one statement on a pooled DB-API connection
        (an ORM session's query costs ~1 ms; a run takes :data:`SAMPLES` samples)."""
        pooled = self.setup.engine.raw_connection()
        try:
            cursor = pooled.cursor()
            cursor.execute("SELECT SUM(audit_next_seq - 1) FROM door")
            row = cursor.fetchone()
            cursor.close()
        finally:
            pooled.close()
        assert row is not None, "SUM gives one row"
        return int(row[0] or 0)

    # --- the cloud ----------------------------------------------------------------------

    @contextmanager
    def cloud(self) -> Iterator[CloudService]:
        """One cloud transaction at the current virtual time, on raw statements
        (:class:`cloud.raw_tx.RawTransactions`: the service's rules and sync engine
        without an ORM session's begin, flush and commit, on one connection for the
        whole run); then schedule the drain."""
        self.count("cloud_transactions")
        now = self.cloud_now()
        with self._transactions.service(now, self.setup.cloud_random, self.cache) as cloud:
            yield cloud
        if took_outbox(cloud.session):
            self.schedule_drain()

    @cached_property
    def _transactions(self) -> RawTransactions:
        return RawTransactions(self.setup.engine)

    def cloud_now(self) -> int:
        """The cloud's clock: unix seconds at the current virtual time."""
        return self.setup.wall_t0 + int(self.clock.now)

    def schedule_drain(self) -> None:
        if not self._drain_due:
            self._drain_due = True
            self.clock.after(DRAIN_DELAY_S, self.drain)

    def drain(self) -> None:
        """Publish the unsent outbox (not while the cloud or the broker is down)."""
        self._drain_due = False
        if not (self.cloud_up and self.broker_up):
            return
        with self.setup.sessions() as session:
            rows = claim_unsent(session, 100_000) or []
            if rows:
                mark_sent(session, [row.id for row in rows], keep=0)
        for row in rows:
            parts = row.topic.split("/")
            ours = len(parts) == 5 and parts[2] == "doors"
            index = self.door_index.get(parts[3]) if ours else None
            door = None if index is None else self.doors[index]
            if door is not None and door.down is not None:
                bundle = parts[4] == "bundle"
                door.down.send(partial(self.lock_frame, door, MQTT, row.payload, bundle=bundle))

    def unsent_frames(self) -> int:
        with self.setup.sessions() as session:
            query = select(func.count()).select_from(MqttOutbox).where(MqttOutbox.sent == false())
            return int(session.execute(query).scalar_one())

    def from_lock(self, door: SimDoor, frame: bytes) -> None:
        """A frame the lock published reaches the cloud (held by the broker while it is down)."""
        if not self.cloud_up:
            self.held_for_cloud.append(partial(self.from_lock, door, frame))
            return
        _, message_type, payload = decode_frame(frame)
        if message_type == MessageType.RECEIPT:
            with self.cloud() as cloud:
                ingest_receipt(cloud, door.spec.id, payload)
                synced = synced_version(cloud, door.spec.id)
            self.synced(door, synced)
        elif message_type == MessageType.AUDIT_BATCH:
            with self.cloud() as cloud:
                ack, _ = ingest_audit(cloud, door.spec.id, payload)
            if door.down is not None and self.broker_up:
                ack_frame = ack.to_frame()
                door.down.send(partial(self.lock_frame, door, MQTT, ack_frame))
        elif message_type == MessageType.HELLO:
            self.count("hellos")
            with self.cloud() as cloud:
                record_hello(cloud, door.spec.id, payload)
        else:
            self.count("lock_errors")

    def synced(self, door: SimDoor, version: int) -> None:
        self.tracker.synced(door.spec.index, version, self.clock.now)
        self.pending.synced(door.spec.index, version, self.clock.now)

    def track(self, door_index: int, version: int, revocation: bool) -> None:
        door = self.doors[door_index]
        now = self.clock.now
        self.tracker.add(Tracked(door_index, version, now, door.spec.online, revocation))
        self.pending.add(door_index, version, now)

    # --- locks --------------------------------------------------------------------------

    def lock(self, door: SimDoor, event: Event) -> list[Action]:
        """Feed the lock one event; route MQTT sends; return the local actions (BLE sends,
        card challenges, access decisions)."""
        runtime = door.lock
        if runtime is None:
            return []
        try:
            actions = runtime.handle(event)
        except PowerLost:
            self.faults.power_lost(door)
            return []
        local: list[Action] = []
        for action in actions:  # no action class has subclasses: identity is the test
            if type(action) is Send and action.channel == MQTT:
                if door.up is not None and self.broker_up:
                    door.up.send(partial(self.from_lock, door, action.frame))
                else:
                    self.count("lock_messages_unsent")
            elif type(action) in _LOCAL:
                local.append(action)
        door.audit_made = runtime.controller.state.audit.next_seq - 1
        return local

    def lock_frame(
        self, door: SimDoor, channel: Channel, frame: bytes, *, bundle: bool = False
    ) -> list[Action]:
        """Deliver one frame to the lock; note bundle bytes, clock corrections, versions."""
        runtime = door.lock
        if runtime is None:
            self.count("frames_to_unpowered_locks")
            return []
        offset = runtime.controller.state.clock_offset
        if bundle:
            door.bundle_bytes += len(frame)
            self.faults.before_bundle(door)
        local = self.lock(door, FrameReceived(channel, frame))
        runtime = door.lock
        if runtime is None:
            return []
        if bundle:
            self.faults.after_bundle(door)
            self.tracker.applied(door.spec.index, self.held_version(door), self.clock.now)
        if runtime.controller.state.clock_offset != offset:
            self.faults.clock_corrected(door, runtime.controller.state.clock_offset - offset)
        return local

    @staticmethod
    def held_version(door: SimDoor) -> int:
        assert door.lock is not None
        return door.lock.controller.state.held.version

    def state_of(self, door: SimDoor) -> LockState:
        """The lock's state: in RAM, or as its flash holds it while the power is off."""
        if door.lock is not None:
            return door.lock.controller.state
        loaded = Flash(door.medium).load()
        assert loaded.snapshot is not None
        return LockState.replay(
            loaded.snapshot, loaded.transactions, audit_capacity=self.config.audit_capacity
        )

    def connect(self, door: SimDoor) -> None:
        """The door's MQTT session (re)connects: HELLO and its unacknowledged audit."""
        if door.lock is not None and self.broker_up:
            door.flushed_at = self.clock.now
            self.lock(door, Connected(MQTT))

    def _refresh(self, door: SimDoor) -> None:
        """The periodic session refresh: only a door holding unacknowledged events."""
        if door.lock is not None and door.lock.controller.state.audit.pending:
            self.connect(door)
        self.clock.after(AUDIT_FLUSH_S, partial(self._refresh, door))

    def _after_decision(self, door: SimDoor) -> None:
        """A busy online door publishes a full batch at once (but once per round trip)."""
        runtime = door.lock
        if runtime is None or not door.spec.online:
            return
        full = runtime.controller.state.audit.pending >= AUDIT_FLUSH_EVENTS
        if full and self.clock.now - door.flushed_at > 1.0:
            self.connect(door)

    # --- openings -----------------------------------------------------------------------

    def _next_opening(self) -> None:
        opening = next(self._openings, None)
        if opening is not None:
            self.clock.at(opening.at_s, partial(self._open, opening))

    def _open(self, opening: Opening) -> None:
        self._next_opening()
        person = self.people[self.setup.person_at[opening.person]]
        door = self.doors[self.setup.door_at[(opening.building, opening.door)]]
        if door.lock is None:
            self.decide(opening, None)
        elif opening.via == "card":
            self.decide(opening, self.tap(person, door))
        else:
            self.visits.open(person, door, opening)

    def decide(self, opening: Opening, reason: Reason | str | None) -> None:
        """Record the decision about ``opening`` (None: the lock had no power)."""
        name = "NO_POWER" if reason is None else getattr(reason, "name", str(reason))
        granted = reason is Reason.GRANTED
        counts = self.counts  # as count(), inline: one call fewer per access event
        counts["access_events"] = counts.get("access_events", 0) + 1
        if not granted:
            counts["denied_events"] = counts.get("denied_events", 0) + 1
        self.decisions.append(
            Decision(
                opening.at_s, opening.person, opening.building, opening.door, opening.via,
                granted, name,
            )
        )  # fmt: skip

    def tap(self, person: SimPerson, door: SimDoor) -> Reason | None:
        """The person holds their card to the door's reader; return the decision."""
        card = person.card
        assert card is not None, "traffic never taps for a person without cards"
        self.count("card_taps")
        uid = card.uid_bytes
        for challenge in self.lock(door, CardTapped(uid)):
            if type(challenge) is CardChallenge:
                break
        else:
            return None
        response = card_response(card.key, uid, challenge.challenge)
        decided = decision_of(self.lock(door, CardAnswered(uid, response)))
        self._after_decision(door)
        return decided

    # --- changes ------------------------------------------------------------------------

    def change_refused(self, error: CloudError) -> None:
        self.count("refused_changes")
        self.faults.note_refusal(error)

    # --- the outcome --------------------------------------------------------------------

    def outcome(self) -> RunOutcome:
        """What the run produced so far, as the reports read it."""
        figures = self.figures()
        series = Series(
            pending_doors=list(self.pending.series),
            time_to_sync_s={
                "online": self.tracker.time_to_sync(online=True),
                "offline": self.tracker.time_to_sync(online=False),
            },
            revocation_latency_s=self.tracker.revocation_latency(),
            doors=[
                DoorTraffic(
                    d.spec.building, d.spec.name, d.spec.online, d.bundle_bytes, d.airtime_s
                )
                for d in self.doors
            ],
            audit_completeness=list(self.samples),
        )
        decisions = sorted(self.decisions, key=lambda d: (d.at_s, d.person, d.building, d.door))
        return RunOutcome(
            scenario=self.scenario.name,
            mode="fast",
            seed=self.scenario.seed,
            duration_s=self.scenario.duration_s,
            figures=figures,
            decisions=decisions,
            faults=self.faults.records(figures),
            series=series,
        )

    def figures(self) -> dict[str, Figure]:
        """The key figures (:data:`simulators.outcome.KEY_FIGURES`) and fast mode's own."""
        online = self.tracker.time_to_sync(online=True)
        offline = self.tracker.time_to_sync(online=False)
        revocation = self.tracker.revocation_latency()
        counts = self.counts
        links = [link for d in self.doors for link in (d.up, d.down) if link is not None]
        return {
            "changes": counts.get("changes", 0),
            "door_updates": len(self.tracker.records),
            "time_to_sync_s_p50_online": percentile(online, 50),
            "time_to_sync_s_p99_online": percentile(online, 99),
            "time_to_sync_s_p50_offline": percentile(offline, 50),
            "time_to_sync_s_p99_offline": percentile(offline, 99),
            "revocation_latency_s_p50": percentile(revocation, 50),
            "revocation_latency_s_p99": percentile(revocation, 99),
            "access_events": counts.get("access_events", 0),
            "denied_events": counts.get("denied_events", 0),
            "lost_audit_events": self.lost_audit_events(),
            "lost_updates": self.lost_updates(),
            "doors": len(self.doors),
            "online_doors": sum(d.spec.online for d in self.doors),
            "people": len(self.people),
            "sim_seconds": self.clock.now,
            "refused_changes": counts.get("refused_changes", 0),
            "pending_door_updates": self.tracker.pending(),
            "card_taps": counts.get("card_taps", 0),
            "phone_visits": counts.get("phone_visits", 0),
            "bundles_carried_by_phones": counts.get("bundles_carried", 0),
            "ble_airtime_s": sum(d.airtime_s for d in self.doors),
            "bundle_bytes": sum(d.bundle_bytes for d in self.doors),
            "mqtt_messages": sum(link.sent for link in links),
            "hellos": counts.get("hellos", 0),
            "time_syncs": counts.get("time_syncs", 0),
            "lock_errors": counts.get("lock_errors", 0),
            "cloud_transactions": counts.get("cloud_transactions", 0),
            "faults": len(self.faults.logs),
        }

    def lost_audit_events(self) -> int:
        """Events a lock made that neither reached the cloud nor are still held by it."""
        with self.setup.sessions() as session:
            rows = session.execute(
                select(AuditRecord.door_id, func.count(), func.max(AuditRecord.seq)).group_by(
                    AuditRecord.door_id
                )
            ).all()
            stored = {door_id: (count, top) for door_id, count, top in rows}
            lost = 0
            for door in self.doors:
                audit = self.state_of(door).audit
                held = {event.seq for event in audit.events()}
                count, top = stored.get(door.spec.id, (0, 0))
                if count == top:  # the cloud holds 1..top, gapless (§6.5)
                    in_cloud = set(range(1, top + 1))
                else:
                    query = select(AuditRecord.seq).where(AuditRecord.door_id == door.spec.id)
                    in_cloud = set(session.execute(query).scalars())
                produced = set(range(1, audit.next_seq))
                lost += len(produced - in_cloud - held) + audit.lost
        return lost

    def lost_updates(self) -> int:
        """Door updates a lock lacks although the cloud no longer shows them pending."""
        with self.setup.sessions() as session:
            synced = {d: v for d, v in session.execute(select(Door.id, Door.synced_version))}
        held = {}
        lost = 0
        for record in self.tracker.records:
            door = self.doors[record.door]
            if record.door not in held:
                held[record.door] = self.state_of(door).held.version
            if held[record.door] < record.version <= synced[door.spec.id]:
                lost += 1
        return lost

    def cloud_digest(self, door: SimDoor, version: int) -> bytes | None:
        """The digest of the door's list at ``version`` as the cloud built it."""
        with self.setup.sessions() as session:
            query = select(DoorVersion.digest).where(
                DoorVersion.door_id == door.spec.id, DoorVersion.version == version
            )
            digest = session.execute(query).scalar_one_or_none()
        return None if digest is None else bytes(digest)


def run_scenario(
    scenario: Scenario, *, progress: Callable[[float], None] | None = None
) -> RunOutcome:
    """Run ``scenario`` in fast mode; ``progress`` hears the scenario seconds done now and
    then. The same scenario gives the same outcome, its figures the same canonical JSON."""
    return ScenarioRun(scenario, progress=progress).run()
