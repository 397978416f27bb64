"""A scenario's scripted events in a fast run: keycard changes and faults, and their reports.

Theory of operation: :meth:`Faults.schedule` puts every event of the scenario on the
virtual clock. Keycard changes call the cloud's rules (:meth:`Faults._change`). Each fault
gets a :class:`~simulators.fast.scenario_parts.FaultLog` that the runner and the phone
visits add to as it acts, and :meth:`Faults.records` turns each into one
:class:`~simulators.outcome.FaultRecord` sentence that ends with the run's verdict
("nothing lost", or what was). What each fault does:

* ``broker_outage`` — the broker is down: the cloud's outbox drain publishes nothing (the
  frames wait, unsent, in the database), locks publish nothing (their sessions are down).
  On restart every online lock reconnects (HELLO, its unacknowledged audit);
  :func:`cloud.mqtt_ingest.record_hello` queues a catch-up bundle for a lock behind, or the
  newest bundle again for one whose receipt was lost; the drain publishes what waited.
* ``phone_offline`` — the phone opens doors with what it holds; its uploads queue on it and
  drain in order when it is back.
* ``power_cut`` — the lock loses its RAM (its :class:`~controller.runtime.LockRuntime` is
  dropped; the flash medium stays) and boots from flash after ``duration``. With
  ``during_update`` the cut waits for the lock's next update and tears the flash write that
  commits it (:class:`controller.storage.PowerCut`: half the record lands). After the boot
  the lock's list must be its old one or the new one, whole: its digest must equal the
  cloud's digest of the version it holds. An online lock reconnects and catches up; a
  BLE-only one is caught up by the next phone that opens it.
* ``clock_drift`` — the lock's :class:`~simulators.fast.scenario_parts.LockClock` changes
  rate and/or steps; time syncs (over MQTT after a HELLO, or carried by a phone) correct
  the lock's clock, each correction is recorded.
* ``cloud_restart`` — the cloud process dies: the bundle cache is lost and the outbox
  drain that had not run yet never runs. Until the restart, lock messages wait at the
  broker, phones queue uploads, and changes wait (the console retries them). After it, the
  drain publishes the unsent outbox from the database.
* ``ble_link_loss`` — phone visits at the door lose the link mid-transfer
  (:mod:`.scenario_visit`); the report checks that every update was applied once.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import select

from cloud.errors import CloudError
from cloud.models import AuditRecord
from cloud.service import CloudService
from cloud.sync import DoorChange
from controller.runtime import LockRuntime
from controller.storage import Flash
from controller.storage import PowerCut as TornWrite
from protocol import AuditEventKind
from simulators._scenario_fields import format_duration
from simulators._scenario_model import (
    Activate,
    BleLinkLoss,
    BrokerOutage,
    ClockDrift,
    CloudRestart,
    Deactivate,
    Event,
    LostCard,
    PersonEvent,
    PhoneOffline,
    PowerCut,
)
from simulators.fixture import seeded_random
from simulators.outcome import FaultRecord, Figure

from .scenario_parts import FaultLog, SimDoor, SimPhone
from .scenario_setup import CardSpec, bundle_cache

if TYPE_CHECKING:
    from .scenario_run import ScenarioRun

__all__ = ["Faults"]


class Faults:
    """The scripted events of one run (see the module docstring)."""

    def __init__(self, run: ScenarioRun) -> None:
        self.run = run
        self.logs: list[FaultLog] = []
        self._replacement: dict[int, CardSpec] = {}
        self._before_cut: dict[int, tuple[int, bytes]] = {}
        self._drift: dict[int, FaultLog] = {}
        self._cloud_log: FaultLog | None = None

    def schedule(self, events: Sequence[Event]) -> None:
        spare = iter(self.run.setup.replacements)
        for n, event in enumerate(events):
            if isinstance(event, LostCard) and event.replace:
                self._replacement[n] = next(spare)
            self.run.clock.at(event.at_s, partial(self._dispatch, n, event))

    def _log(self, event: Event, target: str, duration_s: float = 0.0) -> FaultLog:
        log = FaultLog(event.at_s, event.kind, target, duration_s=duration_s)
        self.logs.append(log)
        return log

    def _door(self, building: str, door: str) -> SimDoor:
        return self.run.doors[self.run.setup.door_at[(building, door)]]

    def _door_log(self, event: Event, door: SimDoor, duration_s: float = 0.0) -> FaultLog:
        log = self._log(event, door.spec.label, duration_s)
        log.counts["door"] = door.spec.index
        return log

    def _dispatch(self, n: int, event: Event) -> None:
        if isinstance(event, Activate | Deactivate | LostCard):
            self._change(n, event)
        elif isinstance(event, BrokerOutage):
            self._broker_down(self._log(event, "broker", event.duration_s))
        elif isinstance(event, PhoneOffline):
            self._phone_offline(event, self._log(event, event.person, event.duration_s))
        elif isinstance(event, PowerCut):
            door = self._door(event.building, event.door)
            log = self._door_log(event, door, event.duration_s)
            if event.during_update:
                door.cut_armed = log
            else:
                self._cut(door, log)
        elif isinstance(event, ClockDrift):
            door = self._door(event.building, event.door)
            door.clock.drift(event.ppm, event.step_s)
            log = self._door_log(event, door)
            log.counts.update(ppm=event.ppm, step_s=event.step_s)
            self._drift[door.spec.index] = log
        elif isinstance(event, CloudRestart):
            self._cloud_down(self._log(event, "cloud", event.duration_s))
        elif isinstance(event, BleLinkLoss):
            door = self._door(event.building, event.door)
            door.link_loss = self._door_log(event, door, event.duration_s)
            door.link_loss_until = max(door.link_loss_until, event.at_s + event.duration_s)
        else:  # pragma: no cover - every kind is handled above
            raise TypeError(f"unknown event {event!r}")

    # --- keycard changes ----------------------------------------------------------------

    def _change(self, n: int, event: Activate | Deactivate | LostCard) -> None:
        """Apply one change through the cloud's rules; track the door updates it causes."""
        run = self.run
        if not run.cloud_up:  # the console retries once the cloud is back
            run.held_for_cloud.append(partial(self._change, n, event))
            if self._cloud_log is not None:
                self._cloud_log.add("changes")
            return
        person = run.people[run.setup.person_at[event.person]]
        card = next(c for c in run.setup.people[person.index].cards if c.name == event.card)
        spare = self._replacement.get(n)
        try:
            with run.cloud() as cloud:
                changes = _apply(cloud, event, person.id, card, self._manager(event), spare)
        except CloudError as error:
            run.change_refused(error)
            return
        if spare is not None and person.card is not None and person.card.uid == card.uid:
            person.card = spare  # the replacement takes the lost card's place
        run.count("changes")
        revocation = not isinstance(event, Activate)
        for change in changes:
            run.track(run.door_index[change.door_id], change.version, revocation)

    def _manager(self, event: PersonEvent) -> str | None:
        return None if event.by is None else self.run.setup.managers[event.by]

    # --- the broker ---------------------------------------------------------------------

    def _broker_down(self, log: FaultLog) -> None:
        run = self.run
        run.broker_up = False
        log.counts["unsent_before"] = run.counts.get("lock_messages_unsent", 0)
        run.clock.after(log.duration_s, partial(self._broker_back, log))

    def _broker_back(self, log: FaultLog) -> None:
        run = self.run
        log.add("frames_held", run.unsent_frames())
        unsent = run.counts.get("lock_messages_unsent", 0) - log.counts.pop("unsent_before")
        log.add("lock_messages", unsent)
        run.broker_up = True
        log.ended_at = run.clock.now
        for door in run.doors:
            if door.spec.online and door.lock is not None:
                run.connect(door)
                log.add("reconnected")
        run.schedule_drain()

    # --- phones -------------------------------------------------------------------------

    def _phone_offline(self, event: PhoneOffline, log: FaultLog) -> None:
        run = self.run
        phone = run.people[run.setup.person_at[event.person]].phone
        assert phone is not None, "the scenario checks that the person has a phone"
        phone.offline_until = max(phone.offline_until, event.at_s + event.duration_s)
        phone.offline_log = log
        run.clock.at(phone.offline_until, partial(self._phone_back, phone, log))

    def _phone_back(self, phone: SimPhone, log: FaultLog) -> None:
        log.ended_at = self.run.clock.now
        self.run.visits.schedule_flush(phone)

    def upload_held(self, phone: SimPhone) -> None:
        """A visit's uploads joined the queue of a phone that cannot reach the cloud."""
        if self.run.clock.now < phone.offline_until and phone.offline_log is not None:
            phone.offline_log.add("queued")
        elif self._cloud_log is not None and not self.run.cloud_up:
            self._cloud_log.add("uploads")

    def upload_sent(self, phone: SimPhone) -> None:
        log = phone.offline_log
        if log is not None and log.count("sent") < log.count("queued"):
            log.add("sent")
            log.counts["last_sent_at"] = self.run.clock.now

    # --- power --------------------------------------------------------------------------

    def _cut(self, door: SimDoor, log: FaultLog) -> None:
        """The lock loses its power (and RAM) now; it boots again after the log's duration."""
        if door.lock is None:
            log.notes.append("the lock was already off")
            return
        held = door.lock.controller.state.held
        self._before_cut.setdefault(door.spec.index, (held.version, held.digest))
        door.lock = None
        log.counts["cut_at"] = self.run.clock.now
        self.run.clock.after(log.duration_s, partial(self._restore, door, log))

    def before_bundle(self, door: SimDoor) -> None:
        """Arm a ``during_update`` cut: the write that commits this bundle will tear."""
        if door.cut_armed is not None and door.lock is not None:
            held = door.lock.controller.state.held
            self._before_cut[door.spec.index] = (held.version, held.digest)
            door.lock.flash = Flash(door.medium, fault=TornWrite(at_write=1))

    def after_bundle(self, door: SimDoor) -> None:
        """The bundle changed nothing (a duplicate): disarm the tear, stay armed for the next."""
        if door.cut_armed is not None and door.lock is not None:
            door.lock.flash = Flash(door.medium)
            self._before_cut.pop(door.spec.index, None)

    def power_lost(self, door: SimDoor) -> None:
        """The torn write cut the power in the middle of an update."""
        log = door.cut_armed
        assert log is not None, "only an armed cut tears a flash write"
        door.cut_armed = None
        log.add("torn")
        self._cut(door, log)

    def _restore(self, door: SimDoor, log: FaultLog) -> None:
        run = self.run
        door.boots += 1
        label = f"scenario {run.scenario.seed} rt {door.spec.id} boot {door.boots}"
        door.lock = LockRuntime.boot(
            Flash(door.medium), config=run.config, clock=door.clock, random=seeded_random(label)
        )
        held = door.lock.controller.state.held
        old_version, old_digest = self._before_cut.pop(door.spec.index)
        whole = (held.version, held.digest) == (old_version, old_digest) or (
            held.digest == run.cloud_digest(door, held.version)
        )
        log.counts.update(before=old_version, after=held.version, whole=int(whole))
        log.ended_at = run.clock.now
        door.audit_made = door.lock.controller.state.audit.next_seq - 1
        if door.spec.online:
            run.connect(door)

    # --- clocks -------------------------------------------------------------------------

    def clock_corrected(self, door: SimDoor, step_s: int) -> None:
        self.run.count("time_syncs")
        log = self._drift.get(door.spec.index)
        if log is not None:
            log.add("syncs")
            log.add("corrected_s", step_s)
            log.counts["largest_s"] = max(log.counts.get("largest_s", 0), abs(step_s))

    # --- the cloud ----------------------------------------------------------------------

    def _cloud_down(self, log: FaultLog) -> None:
        run = self.run
        run.cloud_up = False
        self._cloud_log = log
        log.add("unsent_at_crash", run.unsent_frames())
        run.clock.after(log.duration_s, partial(self._cloud_back, log))

    def _cloud_back(self, log: FaultLog) -> None:
        run = self.run
        run.cloud_up = True
        run.cache = bundle_cache(len(run.doors))  # a new process: none of the old one's memory
        held, run.held_for_cloud = run.held_for_cloud, []
        log.add("held", len(held))
        for callback in held:
            callback()
        for person in run.people:
            if person.phone is not None:
                run.visits.schedule_flush(person.phone)
        run.schedule_drain()
        log.ended_at = run.clock.now

    # --- BLE ----------------------------------------------------------------------------

    def link_dropped(self, door: SimDoor, what: str) -> None:
        if door.link_loss is not None:
            door.link_loss.add(what)

    def link_resumed(self, door: SimDoor) -> None:
        if door.link_loss is not None:
            door.link_loss.add("resumed")

    def note_refusal(self, error: CloudError) -> None:
        """A change the cloud refused (the portfolio rule, a wrong state): counted only."""
        del error

    # --- the report ---------------------------------------------------------------------

    def records(self, figures: dict[str, Figure]) -> list[FaultRecord]:
        lost_updates, lost_audit = figures["lost_updates"], figures["lost_audit_events"]
        verdict = (
            "nothing lost"
            if lost_updates == 0 and lost_audit == 0
            else f"LOST: {lost_updates} door updates, {lost_audit} audit events"
        )
        return [
            FaultRecord(log.at_s, log.kind, log.target, f"{self._effect(log)}; {verdict}")
            for log in self.logs
        ]

    def _effect(self, log: FaultLog) -> str:
        describe = {
            "broker_outage": self._broker_effect,
            "phone_offline": self._phone_effect,
            "power_cut": self._power_effect,
            "clock_drift": self._drift_effect,
            "cloud_restart": self._cloud_effect,
            "ble_link_loss": self._link_effect,
        }[log.kind]
        return describe(log)

    def _broker_effect(self, log: FaultLog) -> str:
        if log.ended_at is None:
            return f"MQTT broker down from {format_duration(log.at_s)}, not back by the end"
        late = [
            r.synced - log.ended_at
            for r in self.run.tracker.records
            if r.online and log.at_s <= r.created < log.ended_at and r.synced is not None
        ]
        early = sum(
            1
            for r in self.run.tracker.records
            if r.online and log.at_s <= r.created and r.applied is not None
            and r.applied < log.ended_at
        )  # fmt: skip
        caught = f", the last receipt {max(late):.3f} s after the restart" if late else ""
        return (
            f"MQTT broker down {format_duration(log.duration_s)}: "
            f"{_n(log.count('frames_held'), 'frame')} for online doors waited unsent in the "
            f"cloud's outbox and {_n(log.count('lock_messages'), 'lock message')} went unsent; "
            f"{_n(early, 'online-door update')} applied during the outage; on restart "
            f"{_n(log.count('reconnected'), 'door')} reconnected with HELLO and caught up{caught}"
        )

    def _phone_effect(self, log: FaultLog) -> str:
        queued, sent = log.count("queued"), log.count("sent")
        after = ""
        if sent and log.ended_at is not None:
            after = f" within {log.counts['last_sent_at'] - log.ended_at:.3f} s"
        return (
            f"phone offline {format_duration(log.duration_s)}: the uploads of "
            f"{_n(queued, 'visit')} (receipts, audit batches) queued on the phone, {sent} "
            f"delivered in order after it came back{after}"
        )

    def _power_effect(self, log: FaultLog) -> str:
        if "cut_at" not in log.counts:
            return "armed for the lock's next update, which never came"
        torn = "; the cut tore the flash write committing an update" if log.count("torn") else ""
        if log.ended_at is None:
            return f"lock off from {format_duration(log.counts['cut_at'])}{torn}"
        before, after = log.count("before"), log.count("after")
        which = "its old list" if after == before else "the new list"
        whole = "whole, digest equal to the cloud's" if log.count("whole") else "NOT WHOLE"
        door = self.run.doors[log.count("door")]
        now = self.run.state_of(door).held.version
        return (
            f"lock off {format_duration(log.duration_s)}{torn}; it booted from flash on "
            f"{which} v{after} ({whole}); it holds v{now} at the end"
        )

    def _drift_effect(self, log: FaultLog) -> str:
        rate = f"{log.counts['ppm']:+g} ppm" if log.counts.get("ppm") else ""
        step = log.counts.get("step_s", 0)
        jump = f"a {format_duration(step)} step" if step else ""
        what = " and ".join(part for part in (rate, jump) if part)
        return (
            f"lock clock {what}: {_n(log.count('syncs'), 'cloud-signed time sync')} corrected "
            f"it by {log.counts.get('corrected_s', 0):+.0f} s in all (largest "
            f"{log.counts.get('largest_s', 0):.0f} s)"
        )

    def _cloud_effect(self, log: FaultLog) -> str:
        return (
            f"cloud away {format_duration(log.duration_s)}: its bundle cache was lost; "
            f"{_n(log.count('unsent_at_crash'), 'outbox frame')} unsent at the crash published "
            f"from the database after the restart; {_n(log.count('held'), 'lock message')} "
            f"or change waited for it, {_n(log.count('uploads'), 'phone upload')} queued"
        )

    def _link_effect(self, log: FaultLog) -> str:
        door = self.run.doors[log.count("door")]
        twice = self._applied_twice(door)
        bundles, audits = log.count("bundle"), log.count("audit")
        return (
            f"{_n(bundles + audits, 'visit')} lost the BLE link mid-transfer "
            f"({_n(bundles, 'bundle write')}, {_n(audits, 'audit read')}); "
            f"{_n(log.count('resumed'), 'bundle transfer')} resumed on a later visit; "
            f"{_n(twice, 'update')} applied twice"
        )

    def _applied_twice(self, door: SimDoor) -> int:
        """Versions the lock logged BUNDLE_APPLIED for more than once (cloud and lock)."""
        kind = int(AuditEventKind.BUNDLE_APPLIED)
        with self.run.setup.sessions() as session:
            query = select(AuditRecord.seq, AuditRecord.detail).where(
                AuditRecord.door_id == door.spec.id, AuditRecord.kind == kind
            )
            applied = {int(seq): int(detail) for seq, detail in session.execute(query)}
        for event in self.run.state_of(door).audit.events():
            if event.kind == kind:
                applied[event.seq] = event.detail
        versions = list(applied.values())
        return len(versions) - len(set(versions))


def _n(count: int, thing: str) -> str:
    """``"1 frame"``, ``"2 frames"``."""
    return f"{count} {thing}{'' if count == 1 else 's'}"


def _apply(
    cloud: CloudService,
    event: Activate | Deactivate | LostCard,
    person_id: str,
    card: CardSpec,
    manager: str | None,
    spare: CardSpec | None,
) -> list[DoorChange]:
    """The cloud call of one change: by the manager, or self-service with the card's code."""
    if isinstance(event, Activate):
        if manager is not None:
            return cloud.activate_on_behalf(manager, person_id, card.uid)
        return cloud.self_activate(person_id, card.uid, card.code)
    if isinstance(event, Deactivate):
        if manager is not None:
            return cloud.deactivate_on_behalf(manager, person_id, card.uid)
        return cloud.self_deactivate(person_id, card.uid)
    changes, _ = cloud.report_lost(
        person_id,
        card.uid,
        replacement=None if spare is None else spare.uid,
        replacement_code=None if spare is None or manager is not None else spare.code,
        manager_id=manager,
    )
    return changes
