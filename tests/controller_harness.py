"""A test rig for the controller core: one lock, a fake cloud, a flash, a clock.

Theory of operation: as h11's ``ConnectionPair`` wires two sans-IO endpoints
back to back, :class:`LockRig` wires a :class:`controller.core.Controller` to

* a :class:`Cloud` built from the fixture keys (``simulators.fixture.World``): a
  :class:`protocol.CredentialHistory` that makes sealed bundles, and signers for
  mobile credentials, TIME_SYNC, AUDIT_ACK and KEY_ROTATION;
* a :class:`Flash` in memory: the latest :class:`PersistSnapshot` and the
  :class:`PersistTransaction` payloads written after it, so a test can reboot the
  lock with :meth:`LockRig.reboot` or replay what is durable at any moment;
* a clock: ``now`` is the lock's monotonic reading. It only moves forward, through
  :meth:`LockRig.advance`, which runs every timer on the way
  (``next_deadline()`` / ``handle_timeout()``); nothing sleeps;
* a deterministic random source (:class:`CountingRandom`).

Every action list the core returns passes :func:`check_durability_order`
("log before acting"): once a Send or an Energise has been emitted, no journal
transaction may follow it in the same list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
    Energise,
    Event,
    FrameReceived,
    KeyPressed,
    PersistSnapshot,
    PersistTransaction,
    Send,
)
from controller.identity import LockIdentity
from controller.state import LockState
from protocol import (
    NO_CHALLENGE,
    AuditAck,
    Auth,
    Credential,
    CredentialHistory,
    CredentialKind,
    CredentialList,
    ErrorCode,
    ErrorMessage,
    Hello,
    Intent,
    KeyRotation,
    Message,
    MobileCredential,
    Reason,
    ScopeKind,
    TimeSync,
    decode_message,
)
from protocol.crypto import public_bytes, x25519_public_from_bytes
from protocol.keycard import Keycard
from simulators.fixture import World, fixed_bytes

__all__ = [
    "BOOT_READING",
    "DAY",
    "PROPERTY_ID",
    "T0",
    "WORLD",
    "Cloud",
    "CountingRandom",
    "Flash",
    "LockRig",
    "Outcome",
    "View",
    "card_entry",
    "check_durability_order",
    "keycard",
    "lock_identity",
    "person_entry",
    "person_id",
    "phone_key",
]

WORLD = World()
PROPERTY_ID = fixed_bytes("property harbour-court", 16)
T0 = 1_700_000_000
"""Default lock time at provisioning: Tuesday 2023-11-14 22:13:20 UTC."""
BOOT_READING = 1_000.0
"""The lock's monotonic clock reading at provisioning."""
DAY = 86_400


class CountingRandom:
    """Deterministic stand-in for ``os.urandom``: SHA-256 of a seed and a counter."""

    def __init__(self, seed: str = "rig") -> None:
        self.seed, self.calls = seed, 0

    def __call__(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            self.calls += 1
            out += hashlib.sha256(f"{self.seed}/{self.calls}".encode()).digest()
        return out[:size]


# --- ids, cards and people ------------------------------------------------------------------


def lock_identity(name: str = "front") -> LockIdentity:
    """The lock of the fixture door ``name`` (same ids and keys as ``World().door(name)``)."""
    return LockIdentity(
        door_id=WORLD.door(name).door_id,
        property_id=PROPERTY_ID,
        identity_seed=fixed_bytes(f"door-identity {name}"),
        sealing_private=fixed_bytes(f"door-sealing {name}"),
        doorcode_secret=fixed_bytes(f"doorcode {name}"),
    )


def keycard(n: int) -> Keycard:
    """Genuine card ``n``: a 7-byte UID and its secret key."""
    return Keycard(uid=fixed_bytes(f"card uid {n}", 7), key=fixed_bytes(f"card key {n}", 16))


def card_entry(card: Keycard, **fields: Any) -> Credential:
    """The list entry of ``card`` (ACTIVE, valid forever, unless ``fields`` say otherwise)."""
    return Credential(
        kind=CredentialKind.KEYCARD, credential_id=card.uid, card_key=card.key, **fields
    )


def person_id(n: int) -> bytes:
    return fixed_bytes(f"person {n}", 16)


def phone_key(n: int) -> Ed25519PrivateKey:
    """The Ed25519 key of person ``n``'s phone."""
    return WORLD.cloud_key_at(10_000 + n)  # any fixed key that is not a cloud key


def person_entry(n: int, **fields: Any) -> Credential:
    """Person ``n``'s list entry (their phones prove themselves with a mobile credential)."""
    return Credential(kind=CredentialKind.PERSON, credential_id=person_id(n), **fields)


# --- the cloud ------------------------------------------------------------------------------


class Cloud:
    """The cloud's side for one door: its list history and the keys that sign for it."""

    def __init__(self, identity: LockIdentity) -> None:
        self.door_id = identity.door_id
        self.property_id = identity.property_id
        self.door_public = x25519_public_from_bytes(identity.sealing_public)
        self.history = CredentialHistory(identity.door_id)
        self.epoch = 0
        self.key = WORLD.cloud_key_at(0)
        self.time_sync_seq = 0
        self._ephemerals = 0

    @property
    def public_key(self) -> bytes:
        return public_bytes(self.key)

    @property
    def current(self) -> CredentialList:
        return self.history.current

    def commit(
        self, *upserts: Credential, removals: Iterable[tuple[int, bytes]] = ()
    ) -> CredentialList:
        return self.history.commit(upserts=upserts, removals=removals)

    def bundle(self, base: int = 0, *, key: Ed25519PrivateKey | None = None) -> bytes:
        """A BUNDLE frame from ``base`` to the current version."""
        self._ephemerals += 1
        sealed = self.history.bundle(
            base,
            door_public=self.door_public,
            cloud_key=key or self.key,
            key_epoch=self.epoch,
            ephemeral=WORLD.ephemeral(f"rig {self._ephemerals}"),
        )
        return sealed.to_frame()

    def mobile_credential(
        self,
        person: int,
        *,
        valid_from: int,
        valid_until: int,
        scope: ScopeKind = ScopeKind.DOORS,
        scope_ids: Sequence[bytes] | None = None,
        key: Ed25519PrivateKey | None = None,
        phone: Ed25519PrivateKey | None = None,
    ) -> MobileCredential:
        """A cloud-signed credential binding person ``person`` to their phone key."""
        default = (self.property_id,) if scope is ScopeKind.PROPERTY else (self.door_id,)
        return MobileCredential(
            key_epoch=self.epoch,
            credential_id=fixed_bytes(f"mobile credential {person}", 16),
            person_id=person_id(person),
            phone_public_key=public_bytes(phone or phone_key(person)),
            valid_from=valid_from,
            valid_until=valid_until,
            scope_kind=scope,
            scope_ids=tuple(scope_ids or default),
        ).signed(key or self.key)

    def time_sync(
        self,
        cloud_time: int,
        *,
        challenge: bytes = NO_CHALLENGE,
        sequence: int | None = None,
        door_id: bytes | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> bytes:
        """A TIME_SYNC frame; ``sequence`` defaults to the next one."""
        if sequence is None:
            self.time_sync_seq += 1
            sequence = self.time_sync_seq
        return (
            TimeSync(
                door_id=door_id or self.door_id,
                key_epoch=self.epoch,
                sequence=sequence,
                cloud_time=cloud_time,
                challenge=challenge,
            )
            .signed(key or self.key)
            .to_frame()
        )

    def audit_ack(
        self, up_to_seq: int, *, door_id: bytes | None = None, key: Ed25519PrivateKey | None = None
    ) -> bytes:
        ack = AuditAck(door_id=door_id or self.door_id, key_epoch=self.epoch, up_to_seq=up_to_seq)
        return ack.signed(key or self.key).to_frame()

    def rotation(self, new_epoch: int, *, signer: Ed25519PrivateKey | None = None) -> bytes:
        """A KEY_ROTATION frame to ``new_epoch``, signed by the key of the epoch before."""
        current = signer or WORLD.cloud_key_at(new_epoch - 1)
        new_key = WORLD.cloud_key_at(new_epoch)
        return KeyRotation.create(
            current_key=current, new_key=new_key, new_epoch=new_epoch
        ).to_frame()

    def rotate(self) -> bytes:
        """Move the cloud to the next epoch; return the rotation frame for the locks."""
        frame = self.rotation(self.epoch + 1)
        self.epoch += 1
        self.key = WORLD.cloud_key_at(self.epoch)
        return frame


# --- what the lock did ----------------------------------------------------------------------


def check_durability_order(actions: Sequence[Action]) -> None:
    """Log before acting: no journal write may follow a Send or an Energise."""
    acted = False
    for action in actions:
        if isinstance(action, Send | Energise):
            acted = True
        elif isinstance(action, PersistTransaction):
            assert not acted, f"a journal write follows an effect: {actions!r}"


@dataclass
class Outcome:
    """The actions of one or more events, with typed views of them."""

    actions: list[Action] = field(default_factory=list)

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome([*self.actions, *other.actions])

    @property
    def sends(self) -> list[Send]:
        return [a for a in self.actions if isinstance(a, Send)]

    @property
    def messages(self) -> list[Message]:
        """Every frame sent, decoded."""
        return [decode_message(s.frame) for s in self.sends]

    def of(self, cls: type[Message]) -> list[Message]:
        return [m for m in self.messages if isinstance(m, cls)]

    def one(self, cls: type[Message]) -> Message:
        found = self.of(cls)
        assert len(found) == 1, f"expected one {cls.__name__}, got {self.messages!r}"
        return found[0]

    @property
    def errors(self) -> list[ErrorCode]:
        return [m.code for m in self.messages if isinstance(m, ErrorMessage)]

    @property
    def decisions(self) -> list[AccessDecided]:
        return [a for a in self.actions if isinstance(a, AccessDecided)]

    @property
    def reasons(self) -> list[Reason]:
        return [d.reason for d in self.decisions]

    @property
    def reason(self) -> Reason:
        """The one access decision made."""
        assert len(self.decisions) == 1, f"expected one decision, got {self.decisions!r}"
        return self.decisions[0].reason

    @property
    def energised(self) -> list[int]:
        return [a.seconds for a in self.actions if isinstance(a, Energise)]

    @property
    def challenges(self) -> list[CardChallenge]:
        return [a for a in self.actions if isinstance(a, CardChallenge)]

    @property
    def persisted(self) -> list[PersistTransaction | PersistSnapshot]:
        return [a for a in self.actions if isinstance(a, PersistTransaction | PersistSnapshot)]


@dataclass(frozen=True)
class View:
    """The persistent state of a lock, as comparable values."""

    list_version: int
    list_digest: bytes
    list_changed_at: int
    audit_head: int
    audit_events: tuple[object, ...]
    audit_lost: int
    clock_offset: int
    time_sync_seq: int
    key_epoch: int
    cloud_key: bytes
    boot_count: int
    battery_used_mah: float

    @classmethod
    def of(cls, state: LockState) -> View:
        return cls(
            list_version=state.held.version,
            list_digest=state.held.digest,
            list_changed_at=state.list_changed_at,
            audit_head=state.audit.head_seq,
            audit_events=state.audit.events(),
            audit_lost=state.audit.lost,
            clock_offset=state.clock_offset,
            time_sync_seq=state.time_sync_seq,
            key_epoch=state.cloud.epoch,
            cloud_key=state.cloud.public_key,
            boot_count=state.boot_count,
            battery_used_mah=state.battery_used_mah,
        )


@dataclass
class Flash:
    """The lock's flash in memory: the latest snapshot and the transactions after it."""

    snapshot: bytes = b""
    transactions: list[bytes] = field(default_factory=list)
    writes: int = 0

    def persist(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, PersistSnapshot):
                self.snapshot, self.transactions = action.data, []
                self.writes += 1
            elif isinstance(action, PersistTransaction):
                self.transactions.append(action.data)
                self.writes += 1

    def replay(self, config: ControllerConfig) -> LockState:
        """The state a reboot would find (without the reboot's own BOOT record)."""
        return LockState.replay(
            self.snapshot,
            self.transactions,
            audit_capacity=config.audit_capacity,
        )


# --- the rig --------------------------------------------------------------------------------


class LockRig:
    """One provisioned lock, its cloud, its flash and its clock, wired together."""

    def __init__(
        self,
        controller: Controller,
        *,
        config: ControllerConfig,
        cloud: Cloud,
        flash: Flash,
        random: CountingRandom,
        now: float,
    ) -> None:
        self.controller, self.config, self.cloud = controller, config, cloud
        self.flash, self.random, self.now = flash, random, now
        self.hellos: dict[Channel, Hello] = {}
        self.log: list[Action] = []
        self._connections = 0

    @classmethod
    def provision(
        cls,
        *credentials: Credential,
        config: ControllerConfig | None = None,
        lock_time: int = T0,
        name: str = "front",
        seed: str = "rig",
    ) -> LockRig:
        """A new lock whose clock reads ``lock_time``; ``credentials`` loaded by bundle."""
        config = config or ControllerConfig()
        identity, random = lock_identity(name), CountingRandom(seed)
        cloud = Cloud(identity)
        controller, actions = Controller.provision(
            identity, cloud.public_key, config, random=random, now=BOOT_READING, wall_time=lock_time
        )
        rig = cls(
            controller, config=config, cloud=cloud, flash=Flash(), random=random, now=BOOT_READING
        )
        rig._took(actions)
        if credentials:
            outcome = rig.load(*credentials)
            assert outcome.errors == [], outcome.messages
        return rig

    # --- observation ------------------------------------------------------------------------

    @property
    def state(self) -> LockState:
        return self.controller.state

    @property
    def view(self) -> View:
        return View.of(self.controller.state)

    @property
    def lock_time(self) -> int:
        return self.controller.lock_time(self.now)

    @property
    def door_id(self) -> bytes:
        return self.controller.door_id

    @property
    def doorcode_secret(self) -> bytes:
        return self.controller.state.identity.doorcode_secret

    def durable_view(self) -> View:
        """What a reboot would find now."""
        return View.of(self.flash.replay(self.config))

    # --- driving ----------------------------------------------------------------------------

    def _took(self, actions: list[Action]) -> Outcome:
        check_durability_order(actions)
        self.flash.persist(actions)
        self.log.extend(actions)
        return Outcome(list(actions))

    def handle(self, event: Event) -> Outcome:
        """Feed one event at the current clock reading."""
        return self._took(self.controller.handle(event, self.now))

    def advance(self, seconds: float) -> Outcome:
        """Let ``seconds`` pass, running every timer that falls due on the way."""
        end, outcome, last = self.now + seconds, Outcome(), None
        while (deadline := self.controller.next_deadline()) is not None and deadline <= end:
            assert deadline != last, f"handle_timeout({deadline}) left its own deadline"
            self.now = last = max(self.now, deadline)
            outcome += self._took(self.controller.handle_timeout(self.now))
        self.now = end
        return outcome

    def advance_to(self, lock_time: int) -> Outcome:
        """Let time pass until the lock's clock reads ``lock_time``."""
        assert lock_time >= self.lock_time, "the clock only moves forward"
        return self.advance(lock_time - self.lock_time)

    def deliver(self, frame: bytes, channel: Channel = MQTT) -> Outcome:
        return self.handle(FrameReceived(channel, frame))

    def load(self, *credentials: Credential, channel: Channel = MQTT) -> Outcome:
        """Commit ``credentials`` in the cloud and deliver the bundle from the lock's version."""
        self.cloud.commit(*credentials)
        return self.deliver(self.cloud.bundle(self.state.held.version), channel)

    def tap(self, card: Keycard, *, response: bytes | None = None, delay: float = 0.0) -> Outcome:
        """Tap ``card``: the lock challenges it, the card answers after ``delay`` seconds."""
        tapped = self.handle(CardTapped(card.uid))
        [challenge] = tapped.challenges
        assert challenge.uid == card.uid
        waited = self.advance(delay) if delay else Outcome()
        answer = card.respond(challenge.challenge) if response is None else response
        return tapped + waited + self.handle(CardAnswered(card.uid, answer))

    def type_code(self, code: str, *, gap: float = 0.0) -> Outcome:
        """Press the keys of ``code``, ``gap`` seconds apart."""
        outcome = Outcome()
        for i, key in enumerate(code):
            if i and gap:
                outcome += self.advance(gap)
            outcome += self.handle(KeyPressed(key))
        return outcome

    def connect(self, number: int | None = None) -> tuple[Channel, Hello]:
        """A phone connects over BLE; return its channel and the lock's HELLO."""
        if number is None:
            self._connections += 1
            number = self._connections
        channel = Channel("ble", number)
        hello = self.handle(Connected(channel)).one(Hello)
        assert isinstance(hello, Hello)
        self.hellos[channel] = hello
        return channel, hello

    def connect_mqtt(self) -> Hello:
        hello = self.handle(Connected(MQTT)).one(Hello)
        assert isinstance(hello, Hello)
        self.hellos[MQTT] = hello
        return hello

    def disconnect(self, channel: Channel) -> Outcome:
        return self.handle(Disconnected(channel))

    def auth_frame(
        self,
        credential: MobileCredential,
        phone: Ed25519PrivateKey,
        *,
        challenge: bytes,
        intent: Intent = Intent.UNLOCK,
        door_id: bytes | None = None,
    ) -> bytes:
        return Auth.create(
            credential=credential,
            phone_key=phone,
            door_id=door_id or self.door_id,
            challenge=challenge,
            intent=intent,
        ).to_frame()

    def auth(
        self,
        channel: Channel,
        credential: MobileCredential,
        phone: Ed25519PrivateKey,
        *,
        challenge: bytes | None = None,
        intent: Intent = Intent.UNLOCK,
        door_id: bytes | None = None,
    ) -> Outcome:
        """Send AUTH on ``channel``, signed over its HELLO challenge (unless told another)."""
        challenge = self.hellos[channel].challenge if challenge is None else challenge
        frame = self.auth_frame(
            credential, phone, challenge=challenge, intent=intent, door_id=door_id
        )
        return self.deliver(frame, channel)

    def phone_unlock(
        self,
        person: int,
        *,
        credential: MobileCredential | None = None,
        phone: Ed25519PrivateKey | None = None,
        intent: Intent = Intent.UNLOCK,
    ) -> Outcome:
        """Connect, authenticate as ``person`` with a fresh credential, disconnect."""
        if credential is None:
            credential = self.cloud.mobile_credential(
                person, valid_from=self.lock_time - DAY, valid_until=self.lock_time + 7 * DAY
            )
        channel, _ = self.connect()
        outcome = self.auth(channel, credential, phone or phone_key(person), intent=intent)
        return outcome + self.disconnect(channel)

    def reboot(self, *, after: float = 1.0) -> Outcome:
        """Power-cycle: boot a new controller from the flash ``after`` seconds later."""
        self.now += after
        self.controller, actions = Controller.boot(
            self.flash.snapshot,
            list(self.flash.transactions),
            self.config,
            random=self.random,
            now=self.now,
        )
        self.hellos.clear()
        return self._took(actions)
