"""A phone at a door in a fast scenario run: the app, the BLE visit, the uploads.

Theory of operation: :meth:`Visits.open` is one phone opening. The app first refreshes
itself if it can reach the cloud (its phone online, the cloud up): it logs in when its
mobile credential is missing or has less than :data:`CREDENTIAL_RENEW_S` left, and fetches
the pending bundles of every door its person may open when its cache is older than
:data:`PREFETCH_S` (:meth:`cloud.service.CloudService.pending_bundles`): any person's phone
carries any pending bundle for a door it opens. Most fetches find nothing behind: a fetch
first looks its person's doors up and calls the service only when one is behind. Offline,
it opens with what it holds; a phone offline from its first opening holds no mobile
credential yet and opens nothing (``NO_MOBILE_CREDENTIAL``), as in live mode.

The visit (:meth:`Visits._visit`) is a :data:`~simulators.fast.clock.Process` in the order
of ``docs/protocol.md`` §4: connect, HELLO, AUTH (unlock: the decision), then at a BLE-only
door the bundle the lock needs (a transfer a dropped link cut is resumed first, from where
it stopped), a held AUDIT_ACK, and a TIME_SYNC when HELLO's clock is off by more than
:data:`cloud.time_sync.MIN_CORRECTION_S` and the phone can ask the cloud for one bound to
HELLO's challenge; then disconnect. Each frame costs the modelled BLE airtime. At an online
door the visit only unlocks: the door's own MQTT session carries its updates and audit. A
lock that refused the phone and then applied a newer list may know the phone now: the app
visits again at once, and the second visit's decision is the opening's (as
:meth:`phone_bridge.phone.Phone.visit` does).

During a ``ble_link_loss`` at the door the link drops part-way through a transfer: in the
middle of the bundle (the lock gets no complete frame and applies nothing; the phone
remembers how far it got) or, with no bundle to write, while the audit batch is read (the
phone gets none; the lock keeps the events and sends them again next session).

Receipts and audit batches join the phone's upload queue; the queue drains in order,
:data:`UPLOAD_S` after a visit, or when the phone is back online and the cloud is up. The
cloud's AUDIT_ACK rides to the lock with the phone's next visit there.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from typing import TYPE_CHECKING

from cloud.errors import CloudError
from cloud.keys import key_of
from cloud.sql import Sql, marks
from cloud.time_sync import needs_time_sync, time_sync_on
from controller.events import Action, Channel, Connected, Disconnected, Send
from protocol import Auth, Hello, Intent, MessageType, Reason, SealedBundle
from protocol.frame import decode_frame
from simulators.traffic import Opening

from .clock import Process
from .scenario_parts import SimDoor, SimPerson, SimPhone, Upload, decision_of, synced_version

if TYPE_CHECKING:
    from .scenario_run import ScenarioRun

__all__ = ["CREDENTIAL_RENEW_S", "PREFETCH_S", "UPLOAD_S", "Visits"]

CREDENTIAL_RENEW_S = 86_400
"""A phone logs in again when its mobile credential has less than this left."""
PREFETCH_S = 900.0
"""A phone refreshes its bundle cache when it is older than this at a visit."""
UPLOAD_S = 0.200
"""From the end of a visit to its uploads reaching the cloud (phone online)."""
_UPLOADED = frozenset({MessageType.RECEIPT, MessageType.AUDIT_BATCH})
Verdict = Reason | str | None
"""A visit's outcome: the lock's reason, ``NO_LINK``, or None (the lock had no power)."""


class _LinkDropped(Exception):
    """The BLE link dropped part-way through a transfer."""


class Visits:
    """Phone openings of one run (see the module docstring)."""

    def __init__(self, run: ScenarioRun) -> None:
        self.run = run
        self._doors_of: dict[int, tuple[str, list[str]]] = {}
        """Person index → the :meth:`_behind` statement and its door ids."""

    def online(self, phone: SimPhone) -> bool:
        """Whether the phone reaches the cloud now."""
        return self.run.cloud_up and self.run.clock.now >= phone.offline_until

    # --- the app ------------------------------------------------------------------------

    def open(self, person: SimPerson, door: SimDoor, opening: Opening) -> None:
        phone = person.phone
        assert phone is not None, "traffic never uses the phone of a person without one"
        self._refresh(person, phone)
        if phone.credential is None:
            self.run.decide(opening, "NO_MOBILE_CREDENTIAL")
            return
        self.run.clock.spawn(self._visit(phone, door, opening))

    def _refresh(self, person: SimPerson, phone: SimPhone) -> None:
        """Log in if needed and refresh the bundle cache, when the cloud is reachable."""
        run = self.run
        now = run.clock.now
        wall = run.setup.wall_t0 + now
        credential = phone.credential
        renew = credential is None or credential.valid_until - wall < CREDENTIAL_RENEW_S
        stale = phone.prefetched_at is None or now - phone.prefetched_at >= PREFETCH_S
        if not (renew or stale) or not self.online(phone):
            return
        try:
            frames = self._login_and_fetch(person, phone) if renew else self._fetch(person)
        except CloudError:
            run.count("refused_logins")
            return
        phone.bundles = {door_id: (_target(frame), frame) for door_id, frame in frames.items()}
        phone.prefetched_at = now

    def _login_and_fetch(self, person: SimPerson, phone: SimPhone) -> dict[str, bytes]:
        """One request: log in (a new mobile credential), then the pending bundles."""
        with self.run.cloud() as cloud:
            phone.credential = cloud.login_phone(person.id, phone.public)
            with cloud.statements(writes=False) as sql:
                behind = self._behind(sql, person)
            return cloud.pending_bundles(person.id) if behind else {}

    def _fetch(self, person: SimPerson) -> dict[str, bytes]:
        """One request for the pending bundles: it first looks the person's doors up
        (:meth:`_behind`) and asks the service only when one is behind (rarely)."""
        with self.run.cloud() as cloud:
            with cloud.statements(writes=False) as sql:
                behind = self._behind(sql, person)
            return cloud.pending_bundles(person.id) if behind else {}

    def _behind(self, sql: Sql, person: SimPerson) -> bool:
        """Whether any door the person may open is behind: what
        :meth:`CloudService.pending_bundles` would find something for, by a primary-key
        look-up of their doors instead of its grant and door queries. The person's doors
        are their grants, which a scenario never changes."""
        query = self._doors_of.get(person.index)
        if query is None:
            query = self._doors_of[person.index] = self._behind_query(person)
        statement, door_ids = query
        return bool(door_ids) and sql.row(statement, door_ids) is not None

    def _behind_query(self, person: SimPerson) -> tuple[str, list[str]]:
        """The :meth:`_behind` statement for the person's doors, and their ids (made once
        per person)."""
        doors = self.run.doors
        mine = [doors[d].spec.id for d in self.run.setup.people[person.index].doors]
        if not mine:
            return "", []
        query = (
            f"SELECT 1 FROM door WHERE id IN {marks(len(mine))}"
            " AND list_version > synced_version LIMIT 1"
        )
        return query, mine

    # --- the visit ----------------------------------------------------------------------

    def _visit(self, phone: SimPhone, door: SimDoor, opening: Opening) -> Process:
        """One opening: a visit, and a second one when the lock refused the phone but then
        applied a newer list (it may know the phone now), as the phone app does."""
        reason, rose = yield from self._pass(phone, door)
        if isinstance(reason, Reason) and reason is not Reason.GRANTED and rose:
            reason, _ = yield from self._pass(phone, door)
        self.run.decide(opening, reason)

    def _pass(self, phone: SimPhone, door: SimDoor) -> Generator[float, None, tuple[Verdict, bool]]:
        """Connect, HELLO, AUTH, carry (BLE-only door), disconnect, queue the uploads.

        Returns the lock's decision (None: it had no power; ``NO_LINK``: no decision) and
        whether its list version rose during the visit."""
        run, ble = self.run, self.run.ble
        channel = Channel("ble", next(run.channels))
        run.count("phone_visits")
        yield ble.connect_s
        sent = _frames(run.lock(door, Connected(channel)))
        if not sent:
            return None, False  # the lock lost its power meanwhile
        hello = Hello.from_bytes(decode_frame(sent[0])[2])
        yield self._air(door, sent[0]) + ble.step_s
        answers: list[bytes] = []
        reason: Verdict = None
        try:
            reason = yield from self._unlock(phone, door, channel, hello, answers)
            if not door.spec.online and door.lock is not None:
                yield from self._carry(phone, door, channel, hello, answers)
        except _LinkDropped:
            pass
        run.lock(door, Disconnected(channel))
        uploads = [f for f in answers if decode_frame(f)[1] in _UPLOADED]
        if uploads and not door.spec.online:
            self._queue(phone, Upload(door.spec.index, uploads))
        rose = door.lock is not None and run.held_version(door) > hello.list_version
        return reason, rose

    def _unlock(
        self, phone: SimPhone, door: SimDoor, channel: Channel, hello: Hello, answers: list[bytes]
    ) -> Generator[float, None, Verdict]:
        assert phone.credential is not None
        auth = Auth.create(
            credential=phone.credential,
            phone_key=phone.key,
            door_id=door.spec.id_bytes,
            challenge=hello.challenge,
            intent=Intent.UNLOCK,
        )
        if door.lock is None:
            raise _LinkDropped
        decided: list[Action] = []
        yield from self._exchange(door, channel, auth.to_frame(), answers, decided=decided)
        reason = decision_of(decided)
        return "NO_LINK" if reason is None else reason

    def _carry(
        self, phone: SimPhone, door: SimDoor, channel: Channel, hello: Hello, answers: list[bytes]
    ) -> Process:
        """At a BLE-only door: the bundle, the held ack, a time sync (module docstring)."""
        run = self.run
        dropping = run.clock.now < door.link_loss_until
        carried = phone.bundles.get(door.spec.id)
        if carried is not None and carried[0] > hello.list_version:
            yield from self._bundle(phone, door, channel, carried, answers, dropping)
            if door.lock is None:
                raise _LinkDropped  # the power went in the middle of the update
        elif dropping:
            batches = [f for f in answers if decode_frame(f)[1] == MessageType.AUDIT_BATCH]
            for frame in batches:
                answers.remove(frame)
            run.faults.link_dropped(door, "audit")
            raise _LinkDropped
        ack = phone.acks.pop(door.spec.id, None)
        if ack is not None:
            yield from self._exchange(door, channel, ack, answers)
        sync = self._time_sync(phone, door, hello)
        if sync is not None:
            yield from self._exchange(door, channel, sync, answers)

    def _bundle(
        self,
        phone: SimPhone,
        door: SimDoor,
        channel: Channel,
        carried: tuple[int, bytes],
        answers: list[bytes],
        dropping: bool,
    ) -> Process:
        run = self.run
        target, frame = carried
        done = phone.partial.get(door.spec.id, (target, 0))
        written = done[1] if done[0] == target else 0
        if dropping:
            cut = (len(frame) - written) // 2
            yield self._air(door, frame[written : written + cut]) if cut else 0.0
            phone.partial[door.spec.id] = (target, written + cut)
            run.faults.link_dropped(door, "bundle")
            raise _LinkDropped
        if written:
            run.faults.link_resumed(door)
        phone.partial.pop(door.spec.id, None)
        run.count("bundles_carried")
        yield from self._exchange(door, channel, frame, answers, bundle=True, skip=written)

    def _time_sync(self, phone: SimPhone, door: SimDoor, hello: Hello) -> bytes | None:
        """A TIME_SYNC bound to HELLO's challenge, if the clock is off and the phone online."""
        run = self.run
        now = run.setup.wall_t0 + int(run.clock.now)
        if not needs_time_sync(hello.lock_time, now) or not self.online(phone):
            return None
        with run.cloud() as cloud, cloud.statements() as sql:
            issued = time_sync_on(
                sql,
                door.spec.id,
                challenge=hello.challenge,
                lock_time=hello.lock_time,
                now=cloud.now,
                key=key_of(sql),
            )
        return issued.frame

    def _exchange(
        self,
        door: SimDoor,
        channel: Channel,
        frame: bytes,
        answers: list[bytes],
        *,
        bundle: bool = False,
        skip: int = 0,
        decided: list[Action] | None = None,
    ) -> Process:
        """Write one frame (its first ``skip`` bytes already written) and collect the answer
        (and, into ``decided``, the lock's access decision)."""
        yield self._air(door, frame[skip:])
        actions = self.run.lock_frame(door, channel, frame, bundle=bundle)
        if decided is not None:
            decided += actions
        more = _frames(actions)
        answers += more
        yield sum(self._air(door, f) for f in more) + self.run.ble.step_s

    def _air(self, door: SimDoor, frame: bytes) -> float:
        """The frame's BLE airtime; it counts toward a BLE-only door's (an online door's
        updates and audit travel over MQTT, so its BLE airtime is reported as 0)."""
        airtime = self.run.ble.airtime(len(frame))
        if not door.spec.online:
            door.airtime_s += airtime
        return airtime

    # --- uploads ------------------------------------------------------------------------

    def _queue(self, phone: SimPhone, upload: Upload) -> None:
        phone.outbox.append(upload)
        if not self.online(phone):
            self.run.faults.upload_held(phone)
        self.schedule_flush(phone)

    def schedule_flush(self, phone: SimPhone) -> None:
        """Drain the phone's upload queue soon, if it can reach the cloud."""
        if phone.outbox and not phone.flush_due and self.online(phone):
            phone.flush_due = True
            self.run.clock.after(UPLOAD_S, partial(self._flush, phone))

    def _flush(self, phone: SimPhone) -> None:
        phone.flush_due = False
        while phone.outbox and self.online(phone):
            self._upload(phone, phone.outbox.pop(0))

    def _upload(self, phone: SimPhone, upload: Upload) -> None:
        """Upload one visit's receipt and audit batches; keep the cloud's ack for the lock."""
        run = self.run
        door = run.doors[upload.door]
        ack = None
        with run.cloud() as cloud:
            for frame in upload.frames:
                _, message_type, payload = decode_frame(frame)
                if message_type == MessageType.RECEIPT:
                    cloud.receipt(door.spec.id, payload)
                else:
                    ack = cloud.upload_audit(door.spec.id, payload)
            synced = synced_version(cloud, door.spec.id)
        run.synced(door, synced)
        run.faults.upload_sent(phone)
        if ack is not None:
            phone.acks[door.spec.id] = ack.to_frame()


def _frames(actions: list[Action]) -> list[bytes]:
    return [a.frame for a in actions if isinstance(a, Send)]


def _target(frame: bytes) -> int:
    return SealedBundle.from_bytes(decode_frame(frame)[2]).target_version
