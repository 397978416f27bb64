"""The fast world: real locks, the real cloud and phones on one virtual clock.

Theory of operation
-------------------
Everything that decides is real code: each door is a :class:`controller.core.Controller`
(real Ed25519/X25519/AEAD/CMAC), the cloud is :class:`cloud.service.CloudService` and the
sync engine on an in-memory SQLite database, and the MQTT ingest functions of
:mod:`cloud.mqtt_ingest` take receipts and audit batches. What is *modelled* is only
what lies between them and the people around them:

* **MQTT** — after every cloud transaction that queued frames (:func:`cloud.sync.took_outbox`)
  the outbox is drained (:func:`cloud.mqtt_ingest.claim_unsent`) and each frame travels on
  the door's down :class:`~simulators.fast.net.MqttLink`; the lock's ``Send(MQTT)`` actions
  travel up. An online door refreshes its session (``Connected``: HELLO and the
  unacknowledged audit, as the MQTT door does on reconnect) every ``audit_flush_s`` while
  it holds unacknowledged events, and at once when it holds ``audit_flush_events``.
* **BLE** — :meth:`FastWorld._visit` is a phone's visit to an offline door written as a
  :data:`~simulators.fast.clock.Process`: connect, HELLO, AUTH (unlock), the bundle the
  phone carries if the lock needs it, a held AUDIT_ACK, disconnect; each step costs the
  modelled airtime. The receipt and audit batches are uploaded ``upload_s`` later (or when
  the phones are back online, ``phones_offline``), and the cloud's ack rides to the lock
  with that phone's next visit.
* **people** — each resident opens doors as a Poisson process; at an offline door a
  resident with the app uses the phone (``phone_open_share``), else the keycard: a
  ``CardTapped``, the lock's challenge, the card's AES-CMAC answer
  (:func:`protocol.keycard.card_response`), the decision. A phone refreshes its bundles
  (:meth:`cloud.service.CloudService.pending_bundles`) when the app opens and its cache
  is older than ``prefetch_s``: any resident's phone carries any pending bundle for a door
  it opens.
* **changes** — :class:`~simulators.fast.building.ScriptedChange` calls the cloud's rules
  at their virtual time; every door update they cause is tracked (:mod:`.report`).

Left out, on purpose for now: flash (persistence actions are dropped; the core still
encodes them), the cloud's handling of online doors' HELLOs (:func:`cloud.mqtt_ingest.
record_hello`: counted only; a lock that missed a bundle is caught up through its
BASE_VERSION receipt, :func:`cloud.mqtt_ingest.ingest_receipt`), phone unlocks of online
doors, emails and key rotations. The cloud's signing key is read once per run (:class:`_Cloud`).
Nothing reads wall time; randomness is ``random.Random`` and
:func:`simulators.fixture.counting_random`, both seeded from the config.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from cloud.errors import CloudError
from cloud.keys import SigningKey, current_key
from cloud.models import AuditRecord, Door
from cloud.mqtt_ingest import claim_unsent, ingest_audit, ingest_receipt, mark_sent
from cloud.service import CloudService
from cloud.sync import DoorChange, took_outbox
from controller.config import ControllerConfig
from controller.core import Controller
from controller.events import (
    MQTT,
    AccessDecided,
    Action,
    CardAnswered,
    CardChallenge,
    CardTapped,
    Channel,
    Connected,
    Disconnected,
    Event,
    FrameReceived,
    Send,
)
from protocol import Auth, Hello, Intent, MessageType, MobileCredential, Reason, SealedBundle
from protocol.crypto import ed25519_private_from_seed, public_bytes
from protocol.frame import decode_frame
from protocol.keycard import card_response
from simulators.fixture import fixed_bytes

from .building import T0, BuildingConfig, ScriptedChange, Setup, build
from .clock import Process, Scheduler
from .net import MqttLink
from .report import Figure, Tracked, Tracker, canonical_json, percentile

__all__ = ["FastWorld", "run_fast"]


class _Cloud(CloudService):
    """The cloud service with its signing key read once per run, not once per use.

    :attr:`CloudService.key` reads the key row and re-derives the Ed25519 key at every
    use (about 0.8 ms: a fifth of an audit upload); this simulation never rotates the
    key, so the world reads it once. Every rule and statement is the service's own.
    """

    signing_key: SigningKey

    @property
    def key(self) -> SigningKey:
        return self.signing_key


CREDENTIAL_RENEW_S = 86_400
"""A phone logs in again when its mobile credential has less than this left."""


@dataclass
class SimDoor:
    """A door: its lock core and, if online, its two MQTT link directions."""

    index: int
    id: str
    id_bytes: bytes
    online: bool
    lock: Controller
    down: MqttLink | None = None
    flushed_at: float = -1.0e9
    up: MqttLink | None = None


@dataclass
class Phone:
    """A resident's phone: its key, mobile credential, bundle cache and held acks."""

    key: Ed25519PrivateKey
    public: bytes
    credential: MobileCredential | None = None
    bundles: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    """door id → (target version, bundle frame)."""
    prefetched_at: float | None = None
    acks: dict[str, bytes] = field(default_factory=dict)
    """door id → the AUDIT_ACK frame to deliver at the next visit."""
    busy: bool = False


@dataclass
class SimPerson:
    """A resident: the card they hold (uid and its secret key), their doors, their phone."""

    index: int
    id: str
    uid: bytes
    card_key: bytes
    doors: list[int]
    phone: Phone | None


@dataclass
class Stats:
    """Counters the report reads (all deterministic)."""

    access_events: int = 0
    denied_events: int = 0
    card_taps: int = 0
    phone_visits: int = 0
    bundles_carried: int = 0
    ble_airtime_s: float = 0.0
    changes: int = 0
    refused_changes: int = 0
    lock_errors: int = 0
    hellos: int = 0
    cloud_transactions: int = 0


class FastWorld:
    """One building on a virtual clock (see the module docstring)."""

    def __init__(self, config: BuildingConfig, *, meter: Callable[[], float] | None = None) -> None:
        """``meter`` (a benchmark's ``perf_counter``, never used by the simulation itself)
        makes the world add up the wall seconds spent in the locks and in the cloud
        (:attr:`spent`); they are no part of the report."""
        self.config = config
        self._meter = meter
        self.spent = {"lock": 0.0, "cloud": 0.0}
        self.clock = Scheduler()
        lock_config = ControllerConfig(
            capacity=config.lock_capacity, audit_capacity=1_000_000, snapshot_every=10**9
        )
        self.setup: Setup = build(config, lock_config)
        self.stats = Stats()
        self.tracker = Tracker(len(self.setup.door_ids))
        self._traffic = random.Random(f"fast seed {config.seed} traffic")
        profile = config.hourly_profile
        mean_rate = config.opens_per_person_per_day / 86_400
        peak = max(profile) if profile else 1.0
        self._hour_weights = tuple(w / peak for w in profile)
        self._peak_rate = mean_rate * peak / (sum(profile) / 24) if profile else mean_rate
        self._channels = itertools.count(1)
        self._last_reason: Reason | None = None
        self.doors = self._make_doors()
        self._by_id = {door.id: door for door in self.doors}
        self.people = self._make_people()
        with self.setup.sessions() as session:
            self._signing_key = current_key(session)
        self._start()

    # --- construction -------------------------------------------------------------------

    def _make_doors(self) -> list[SimDoor]:
        net = random.Random(f"fast seed {self.config.seed} network")
        doors = []
        for n, (door_id, online) in enumerate(
            zip(self.setup.door_ids, self.setup.online, strict=True)
        ):
            door = SimDoor(n, door_id, bytes.fromhex(door_id), online, self.setup.locks[n])
            if online:
                door.down = MqttLink(self.clock, self.config.mqtt, net)
                door.up = MqttLink(self.clock, self.config.mqtt, net)
            doors.append(door)
        return doors

    def _make_people(self) -> list[SimPerson]:
        rng = random.Random(f"fast seed {self.config.seed} phones")
        people = []
        for n, person_id in enumerate(self.setup.person_ids):
            phone = None
            if rng.random() < self.config.phone_share:
                key = ed25519_private_from_seed(
                    fixed_bytes(f"fast seed {self.config.seed} phone {n}")
                )
                phone = Phone(key, public_bytes(key))
            uid, card_key = self.setup.cards[n]
            people.append(
                SimPerson(
                    n, person_id, bytes.fromhex(uid), card_key, self.setup.person_doors[n], phone
                )
            )
        return people

    def _start(self) -> None:
        phase = random.Random(f"fast seed {self.config.seed} phases")
        for door in self.doors:
            if door.online:
                self.clock.at(0.0, partial(self._lock, door, Connected(MQTT)))
                start = phase.uniform(0, self.config.audit_flush_s)
                self.clock.at(start, partial(self._refresh, door))
        for person in self.people:
            self._schedule_open(person)
        for change in sorted(self.config.changes, key=lambda c: c.at_s):
            self.clock.at(change.at_s, partial(self.change, change))

    # --- running ------------------------------------------------------------------------

    def run_until(self, when: float) -> None:
        self.clock.run_until(when)

    def run(self) -> dict[str, Figure]:
        """Run to ``duration_s`` and return the figures."""
        self.run_until(self.config.duration_s)
        return self.figures()

    # --- the cloud ----------------------------------------------------------------------

    @contextmanager
    def cloud(self) -> Iterator[CloudService]:
        """One cloud transaction at the current virtual time; then drain the MQTT outbox."""
        self.stats.cloud_transactions += 1
        started = self._meter() if self._meter is not None else 0.0
        with self.setup.sessions.begin() as session:
            cloud = _Cloud(
                session, T0 + int(self.clock.now), self.setup.cloud_random, self.setup.cache
            )
            cloud.signing_key = self._signing_key
            yield cloud
        if took_outbox(session):
            self._drain_outbox()
        if self._meter is not None:
            self.spent["cloud"] += self._meter() - started

    def _drain_outbox(self) -> None:
        with self.setup.sessions() as session:
            rows = claim_unsent(session, 100_000) or []
            if rows:
                mark_sent(session, [row.id for row in rows], keep=0)
        for row in rows:
            parts = row.topic.split("/")
            door = self._by_id.get(parts[3]) if len(parts) == 5 and parts[2] == "doors" else None
            if door is not None and door.down is not None:
                door.down.send(partial(self._lock_frame, door, MQTT, row.payload))

    def _from_lock_mqtt(self, door: SimDoor, frame: bytes) -> None:
        """A frame the lock published reaches the cloud."""
        _, message_type, payload = decode_frame(frame)
        if message_type == MessageType.RECEIPT:
            with self.cloud() as cloud:
                ingest_receipt(cloud, door.id, payload)
                synced = cloud.door(door.id).synced_version
            self.tracker.synced(door.index, synced, self.clock.now)
        elif message_type == MessageType.AUDIT_BATCH:
            with self.cloud() as cloud:
                ack, _ = ingest_audit(cloud, door.id, payload)
            assert door.down is not None
            ack_frame = ack.to_frame()
            door.down.send(lambda: self._lock_frame(door, MQTT, ack_frame))
        elif message_type == MessageType.HELLO:
            self.stats.hellos += 1
        else:
            self.stats.lock_errors += 1

    def change(self, change: ScriptedChange) -> list[DoorChange]:
        """Apply one scripted change through the cloud's rules; track its door updates."""
        person = self.people[change.person]
        manager = self.setup.manager_id
        uid = person.uid.hex()
        try:
            with self.cloud() as cloud:
                if change.kind == "activate":
                    new_uid, key = self.setup.inventory.take()
                    changes = cloud.activate_on_behalf(manager, person.id, new_uid)
                    person.uid, person.card_key = bytes.fromhex(new_uid), key
                elif change.kind == "deactivate":
                    changes = cloud.deactivate_on_behalf(manager, person.id, uid)
                else:
                    new_uid, key = self.setup.inventory.take()
                    changes, _ = cloud.report_lost(
                        person.id, uid, replacement=new_uid, manager_id=manager
                    )
                    person.uid, person.card_key = bytes.fromhex(new_uid), key
        except CloudError:
            self.stats.refused_changes += 1
            return []
        self.stats.changes += 1
        now = self.clock.now
        for door_change in changes:
            door = self._by_id[door_change.door_id]
            revocation = change.kind != "activate"
            self.tracker.add(Tracked(door.index, door_change.version, now, door.online, revocation))
        return changes

    # --- locks --------------------------------------------------------------------------

    def _lock(self, door: SimDoor, event: Event) -> list[Action]:
        """Feed the lock one event; route MQTT sends; return the local actions."""
        if self._meter is None:
            actions = door.lock.handle(event, self.clock.now)
        else:
            started = self._meter()
            actions = door.lock.handle(event, self.clock.now)
            self.spent["lock"] += self._meter() - started
        local: list[Action] = []
        for action in actions:
            if isinstance(action, AccessDecided):
                self.stats.access_events += 1
                self._last_reason = action.reason
                if action.reason is not Reason.GRANTED:
                    self.stats.denied_events += 1
            elif isinstance(action, Send) and action.channel == MQTT:
                if door.up is not None:
                    door.up.send(partial(self._from_lock_mqtt, door, action.frame))
            elif isinstance(action, Send | CardChallenge):
                local.append(action)
        return local

    def _lock_frame(self, door: SimDoor, channel: Channel, frame: bytes) -> list[Action]:
        local = self._lock(door, FrameReceived(channel, frame))
        self.tracker.applied(door.index, self._held_version(door), self.clock.now)
        return local

    @staticmethod
    def _held_version(door: SimDoor) -> int:
        return door.lock.state.held.version

    def _refresh(self, door: SimDoor) -> None:
        """The periodic flush: only a door holding unacknowledged events publishes."""
        if door.lock.state.audit.pending:
            self._flush(door)
        self.clock.after(self.config.audit_flush_s, lambda: self._refresh(door))

    def _flush(self, door: SimDoor) -> None:
        door.flushed_at = self.clock.now
        self._lock(door, Connected(MQTT))

    def _after_decision(self, door: SimDoor) -> None:
        """A busy online door publishes a full batch at once (but once per round trip)."""
        pending = door.lock.state.audit.pending
        if pending >= self.config.audit_flush_events and self.clock.now - door.flushed_at > 1.0:
            self._flush(door)

    # --- people -------------------------------------------------------------------------

    def _schedule_open(self, person: SimPerson) -> None:
        """The person's next opening: a Poisson process at the peak hour's rate, thinned
        by the hourly profile (an hour of weight w keeps w / peak of its candidates)."""
        if self._peak_rate > 0:
            delay = self._traffic.expovariate(self._peak_rate)
            self.clock.after(delay, lambda: self._open(person))

    def _open(self, person: SimPerson) -> None:
        self._schedule_open(person)
        weights = self._hour_weights
        if weights and self._traffic.random() >= weights[int(self.clock.now // 3_600) % 24]:
            return  # thinned: this hour is quieter than the peak
        door = self.doors[self._traffic.choice(person.doors)]
        wants_phone = self._traffic.random() < self.config.phone_open_share
        if not (wants_phone and self.visit(person.index, door.index)):
            self.tap(person.index, door.index)

    def visit(self, person_index: int, door_index: int) -> bool:
        """Start the resident's phone visit to an offline door now (False: no app, busy,
        refused by the cloud, or an online door)."""
        person, door = self.people[person_index], self.doors[door_index]
        phone = person.phone
        if door.online or phone is None or phone.busy or not self._prefetch(person, phone):
            return False
        phone.busy = True
        self.clock.spawn(self._visit(phone, door))
        return True

    def tap(self, person_index: int, door_index: int) -> Reason:
        """The resident holds their card to the door's reader; return the decision."""
        person, door = self.people[person_index], self.doors[door_index]
        self.stats.card_taps += 1
        local = self._lock(door, CardTapped(person.uid))
        challenge = next(a for a in local if isinstance(a, CardChallenge))
        response = card_response(person.card_key, person.uid, challenge.challenge)
        self._last_reason = None
        self._lock(door, CardAnswered(person.uid, response))
        if door.online:
            self._after_decision(door)
        assert self._last_reason is not None
        return self._last_reason

    def _prefetch(self, person: SimPerson, phone: Phone) -> bool:
        """The app opens: log in if needed, refresh the bundle cache; False if refused."""
        now = self.clock.now
        renew = (
            phone.credential is None
            or phone.credential.valid_until - (T0 + now) < CREDENTIAL_RENEW_S
        )
        fresh = (
            phone.prefetched_at is not None and now - phone.prefetched_at < self.config.prefetch_s
        )
        if fresh and not renew:
            return True
        if self._phones_back(now) > now:
            return phone.credential is not None  # offline: open with what it holds
        try:
            with self.cloud() as cloud:
                if renew:
                    phone.credential = cloud.login_phone(person.id, phone.public)
                frames = cloud.pending_bundles(person.id)
        except CloudError:
            return False
        phone.bundles = {door_id: (_target(frame), frame) for door_id, frame in frames.items()}
        phone.prefetched_at = now
        return True

    def _visit(self, phone: Phone, door: SimDoor) -> Process:
        """A phone's BLE visit to an offline door (module docstring), step by step."""
        ble = self.config.ble
        channel = Channel("ble", next(self._channels))
        self.stats.phone_visits += 1
        yield ble.connect_s
        hello_frame = _frames(self._lock(door, Connected(channel)))[0]
        hello = Hello.from_bytes(decode_frame(hello_frame)[2])
        yield self._air(hello_frame) + ble.step_s
        assert phone.credential is not None
        auth = Auth.create(
            credential=phone.credential,
            phone_key=phone.key,
            door_id=door.id_bytes,
            challenge=hello.challenge,
            intent=Intent.UNLOCK,
        )
        answers: list[bytes] = []
        yield from self._exchange(door, channel, auth.to_frame(), answers)
        carried = phone.bundles.get(door.id)
        if carried is not None and carried[0] > hello.list_version:
            self.stats.bundles_carried += 1
            yield from self._exchange(door, channel, carried[1], answers)
        ack = phone.acks.pop(door.id, None)
        if ack is not None:
            yield from self._exchange(door, channel, ack, answers)
        self._lock(door, Disconnected(channel))
        phone.busy = False
        uploads = [f for f in answers if decode_frame(f)[1] in _UPLOADED]
        if uploads:
            when = self._phones_back(self.clock.now + self.config.upload_s)
            self.clock.at(when, lambda: self._upload(phone, door, uploads))

    def _exchange(
        self, door: SimDoor, channel: Channel, frame: bytes, answers: list[bytes]
    ) -> Process:
        """Write one frame to the lock over BLE; collect the frames it answers with."""
        yield self._air(frame)
        more = _frames(self._lock_frame(door, channel, frame))
        answers += more
        yield sum(map(self._air, more)) + self.config.ble.step_s

    def _phones_back(self, when: float) -> float:
        """The first time from ``when`` on at which phones reach the cloud."""
        for start, end in self.config.phones_offline:
            if start <= when < end:
                return end
        return when

    def _air(self, frame: bytes) -> float:
        airtime = self.config.ble.airtime(len(frame))
        self.stats.ble_airtime_s += airtime
        return airtime

    def _upload(self, phone: Phone, door: SimDoor, frames: list[bytes]) -> None:
        """The phone uploads a visit's receipt and audit batches; keeps the cloud's ack."""
        ack = None
        with self.cloud() as cloud:
            for frame in frames:
                _, message_type, payload = decode_frame(frame)
                if message_type == MessageType.RECEIPT:
                    cloud.receipt(door.id, payload)
                else:
                    ack, _ = ingest_audit(cloud, door.id, payload)
            synced = cloud.door(door.id).synced_version
        self.tracker.synced(door.index, synced, self.clock.now)
        if ack is not None:
            phone.acks[door.id] = ack.to_frame()

    # --- the report ---------------------------------------------------------------------

    def figures(self) -> dict[str, Figure]:
        """The key figures now (see :mod:`simulators.fast.report`)."""
        online = self.tracker.time_to_sync(online=True)
        offline = self.tracker.time_to_sync(online=False)
        revocation = self.tracker.revocation_latency()
        stats = self.stats
        links = [link for d in self.doors for link in (d.up, d.down) if link is not None]
        return {
            "seed": self.config.seed,
            "sim_seconds": self.clock.now,
            "online_doors": self.config.online_doors,
            "offline_doors": self.config.offline_doors,
            "residents": self.config.residents,
            "changes": stats.changes,
            "refused_changes": stats.refused_changes,
            "door_updates": len(self.tracker.records),
            "pending_door_updates": self.tracker.pending(),
            "time_to_sync_s_p50_online": percentile(online, 50),
            "time_to_sync_s_p99_online": percentile(online, 99),
            "time_to_sync_s_p50_offline": percentile(offline, 50),
            "time_to_sync_s_p99_offline": percentile(offline, 99),
            "revocation_latency_s_p50": percentile(revocation, 50),
            "revocation_latency_s_p99": percentile(revocation, 99),
            "access_events": stats.access_events,
            "denied_events": stats.denied_events,
            "card_taps": stats.card_taps,
            "phone_visits": stats.phone_visits,
            "bundles_carried_by_phones": stats.bundles_carried,
            "ble_airtime_s": stats.ble_airtime_s,
            "mqtt_messages": sum(link.sent for link in links),
            "mqtt_retransmissions": sum(link.retransmissions for link in links),
            "lock_errors": stats.lock_errors,
            "cloud_transactions": stats.cloud_transactions,
            "lost_audit_events": self.lost_audit_events(),
            "lost_updates": self.lost_updates(),
        }

    def report_json(self) -> bytes:
        return canonical_json(self.figures())

    def lost_audit_events(self) -> int:
        """Events a lock logged that neither reached the cloud nor are still held by it."""
        with self.setup.sessions() as session:
            rows = session.execute(
                select(AuditRecord.door_id, func.count(), func.max(AuditRecord.seq)).group_by(
                    AuditRecord.door_id
                )
            ).all()
            stored = {door_id: (count, top) for door_id, count, top in rows}
            lost = 0
            for door in self.doors:
                audit = door.lock.state.audit
                held = {event.seq for event in audit.events()}
                count, top = stored.get(door.id, (0, 0))
                if count == top:  # the cloud holds 1..top, gapless (§6.5)
                    in_cloud = set(range(1, top + 1))
                else:
                    seqs = session.execute(
                        select(AuditRecord.seq).where(AuditRecord.door_id == door.id)
                    ).scalars()
                    in_cloud = set(seqs)
                produced = set(range(1, audit.next_seq))
                lost += len(produced - in_cloud - held) + audit.lost
        return lost

    def lost_updates(self) -> int:
        """Door updates the lock lacks although the cloud no longer shows them pending."""
        with self.setup.sessions() as session:
            synced = {d: v for d, v in session.execute(select(Door.id, Door.synced_version))}
        return sum(
            1
            for record in self.tracker.records
            if self._held_version(self.doors[record.door]) < record.version
            and synced[self.doors[record.door].id] >= record.version
        )


_UPLOADED = frozenset({MessageType.RECEIPT, MessageType.AUDIT_BATCH})


def _frames(actions: list[Action]) -> list[bytes]:
    return [a.frame for a in actions if isinstance(a, Send)]


def _target(frame: bytes) -> int:
    return SealedBundle.from_bytes(decode_frame(frame)[2]).target_version


def run_fast(config: BuildingConfig) -> tuple[dict[str, Figure], bytes]:
    """Build, run and report one building: (figures, canonical JSON bytes)."""
    world = FastWorld(config)
    figures = world.run()
    return figures, canonical_json(figures)
