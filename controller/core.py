"""The lock controller core: the reference firmware as a sans-IO state machine.

Theory of operation: :meth:`Controller.handle` takes one event and the lock's
clock reading ``now`` (seconds, from an injected clock that may drift) and
returns the actions to carry out, in order. Nothing here reads a clock, draws
randomness (``random`` is injected), touches a radio or a file.

Rules the core keeps (``docs/protocol.md`` §4.2.3, §6.2.2, §6.5-§6.7):

* Every change of persistent state is a journal :class:`~controller.state.Record`;
  the records of one event are flushed as one :class:`PersistTransaction` before
  any action that depends on them (log before acting, commit before receipting).
* A frame is verified before it changes anything; a frame that fails any check
  is answered with an ERROR frame and changes nothing.
* Access decisions check lockout, then authenticity (card response, signatures),
  then authorisation (list entry, validity, schedule), and are all logged.
* The lock clock is ``int(now) + clock_offset``; only a TIME_SYNC moves the
  offset, by a bounded step.
* A phone presents the same cloud-signed mobile credential for days. The lock
  remembers, in a bounded LRU map, the exact credential bytes whose cloud signature
  it verified under its current cloud key (with the parsed credential and phone
  key), and does not verify or parse those bytes again. Only a verified credential
  enters the map; a change of the trusted cloud key empties it. Everything else —
  lockout, the phone's signature over this session's challenge, window, scope and
  list entry — is checked on every AUTH.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocol import (
    SUPPORTED_VERSIONS,
    AuditAck,
    AuditBatch,
    AuditEventKind,
    Auth,
    AuthenticationError,
    BaseVersionError,
    CapacityError,
    CredentialKind,
    ErrorCode,
    ErrorMessage,
    Hello,
    Intent,
    MessageType,
    MobileCredential,
    ProtocolError,
    Reason,
    ReceiptStatus,
    SealedBundle,
    TimeSync,
    UnlockResult,
    WrongDoorError,
    apply_bundle,
    make_receipt,
)
from protocol.cloud_messages import NO_CHALLENGE
from protocol.doorcode import DOORCODE_DIGITS, check_doorcode
from protocol.errors import DecodeError
from protocol.frame import decode_frame
from protocol.keycard import verify_card_response

from .config import ControllerConfig
from .events import (
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
from .guards import KeypadBuffer, Lockout
from .identity import LockIdentity
from .state import (
    AuditAppended,
    AuditLost,
    AuditReleased,
    BatteryUsed,
    Booted,
    ClockCorrected,
    KeyRotated,
    ListChanged,
    LockState,
    Record,
    encode_transaction,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from protocol import CloudKeyState

__all__ = ["Controller", "StaleError"]

CHALLENGE_SIZE = 16
_DECISION_KINDS = {
    "card": AuditEventKind.CARD_DECISION,
    "phone": AuditEventKind.PHONE_DECISION,
    "keypad": AuditEventKind.DOORCODE_DECISION,
}
U32_MAX = 0xFFFFFFFF


class StaleError(ProtocolError):
    """A TIME_SYNC that is not fresh: old sequence or an unknown challenge."""

    code = ErrorCode.STALE


@dataclass
class _Session:
    challenge: bytes | None
    connected_at: float
    authenticated: bool = False
    audit_sent_up_to: int = 0
    """The newest audit event sent in this session."""


class _Verified:
    """A mobile credential whose exact bytes passed the cloud signature check."""

    __slots__ = ("credential", "phone_key")

    def __init__(self, credential: MobileCredential) -> None:
        self.credential = credential
        self.phone_key: Ed25519PublicKey | None = None
        """Decoded on the first AUTH that reaches the phone signature check."""


class Controller:
    """One lock. Build with :meth:`provision` (first boot) or :meth:`boot` (from flash)."""

    def __init__(
        self, state: LockState, config: ControllerConfig, *, random: Callable[[int], bytes]
    ) -> None:
        self.state, self.config, self._random = state, config, random
        self._identity_key = state.identity.identity_key()
        self._sealing_key = state.identity.sealing_key()
        self._lockout = Lockout(
            failures=config.lockout_failures,
            window=config.lockout_window_s,
            duration=config.lockout_duration_s,
        )
        self._keypad = KeypadBuffer(length=DOORCODE_DIGITS, timeout=config.keypad_timeout_s)
        self._sessions: dict[Channel, _Session] = {}
        self._cards: dict[bytes, tuple[bytes, float]] = {}
        self._issued: dict[bytes, float] = {}
        self._records: list[Record] = []
        self._actions: list[Action] = []
        self._since_snapshot = 0
        self._next_expiry = 0.0
        self._trusted: CloudKeyState | None = None
        self._trusted_key: Ed25519PublicKey | None = None
        self._verified: dict[bytes, _Verified] = {}

    # --- construction -------------------------------------------------------------------

    @classmethod
    def provision(
        cls,
        identity: LockIdentity,
        cloud_public_key: bytes,
        config: ControllerConfig,
        *,
        random: Callable[[int], bytes],
        now: float,
        wall_time: int,
    ) -> tuple[Controller, list[Action]]:
        """First boot of a freshly provisioned lock whose clock reads ``now`` at ``wall_time``."""
        from protocol import CloudKeyState

        state = LockState.provisioned(
            identity,
            CloudKeyState(epoch=0, public_key=cloud_public_key),
            audit_capacity=config.audit_capacity,
            clock_offset=wall_time - int(now),
        )
        state.list_changed_at = wall_time
        controller = cls(state, config, random=random)
        return controller, [PersistSnapshot(state.to_snapshot()), *controller.power_on(now)]

    @classmethod
    def boot(
        cls,
        snapshot: bytes,
        transactions: Sequence[bytes],
        config: ControllerConfig,
        *,
        random: Callable[[int], bytes],
        now: float,
    ) -> tuple[Controller, list[Action]]:
        """Boot from flash: replay the snapshot and journal, then log the boot."""
        state = LockState.replay(snapshot, transactions, audit_capacity=config.audit_capacity)
        controller = cls(state, config, random=random)
        controller._since_snapshot = len(transactions)
        return controller, controller.power_on(now)

    def power_on(self, now: float) -> list[Action]:
        """Count the boot and log it."""
        self._record(Booted(min(self.state.boot_count + 1, U32_MAX)))  # saturates, never wraps
        self._log(now, AuditEventKind.BOOT, detail=self.state.boot_count)
        return self._finish()

    # --- observation --------------------------------------------------------------------

    @property
    def door_id(self) -> bytes:
        return self.state.identity.door_id

    def lock_time(self, now: float) -> int:
        """The lock's wall clock (unix seconds) at clock reading ``now``."""
        time = int(now) + self.state.clock_offset
        return time if 0 <= time <= U32_MAX else max(0, min(U32_MAX, time))

    @property
    def battery_pct(self) -> int:
        used = self.state.battery_used_mah / self.config.battery.capacity_mah
        return max(0, min(100, round(100 * (1 - used))))

    def hello(self, challenge: bytes, now: float) -> Hello:
        """The HELLO this lock sends with ``challenge``."""
        lock_time = self.lock_time(now)
        return Hello(
            door_id=self.door_id,
            list_version=self.state.held.version,
            list_age_s=max(0, lock_time - self.state.list_changed_at),
            battery_pct=self.battery_pct,
            audit_head_seq=self.state.audit.head_seq,
            key_epoch=self.state.cloud.epoch,
            lock_time=lock_time,
            challenge=challenge,
            supported_versions=SUPPORTED_VERSIONS,
        )

    # --- the event loop -----------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Process one event at clock reading ``now``; return the actions, in order."""
        if now >= self._next_expiry:  # the common case (a sweep this second) costs one compare
            self._expire(now)
        handler = _EVENT_HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"not a controller event: {event!r}")
        handler(self, event, now)
        return self._finish()

    def next_deadline(self) -> float | None:
        """The earliest clock reading at which :meth:`handle_timeout` has work."""
        deadlines = [
            self._lockout.next_deadline(),
            self._keypad.next_deadline(),
            *(d for _, d in self._cards.values()),
        ]
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timeout(self, now: float) -> list[Action]:
        """Expire timers due at ``now`` (keypad digits, card challenges, lockouts)."""
        self._next_expiry = 0.0
        self._expire(now)
        return self._finish()

    def _expire(self, now: float) -> None:
        """Forget what is over. Checks that matter re-test deadlines themselves;
        this sweep only bounds memory, so it runs at most once per clock second."""
        if now < self._next_expiry:
            return
        self._next_expiry = now + 1.0  # sweep at most once per second of lock time
        self._lockout.expire(now)
        self._keypad.expire(now)
        if self._cards:
            self._cards = {u: c for u, c in self._cards.items() if c[1] > now}
        if self._issued:
            _drop_expired(self._issued, now)

    # --- plumbing: records before effects -----------------------------------------------

    def _record(self, record: Record) -> None:
        self.state.apply(record, capacity=self.config.capacity)
        self._records.append(record)

    def _emit(self, action: Action) -> None:
        if self._records and type(action) in _EFFECTS:
            self._flush()
        self._actions.append(action)

    def _flush(self) -> None:
        if self._records:
            self._actions.append(PersistTransaction(encode_transaction(self._records)))
            self._records = []
            self._since_snapshot += 1

    def _finish(self) -> list[Action]:
        if self._records:
            self._flush()
        if self._since_snapshot >= self.config.snapshot_every:
            self._actions.append(PersistSnapshot(self.state.to_snapshot()))
            self._since_snapshot = 0
        actions, self._actions = self._actions, []
        return actions

    def _log(
        self,
        now: float,
        kind: AuditEventKind,
        *,
        reason: int = 0,
        credential_id: bytes = b"",
        detail: int = 0,
    ) -> int:
        """Append an audit event (reporting earlier losses first); return its seq or 0."""
        time = self.lock_time(now)
        self._report_lost(time)
        return self._append_event(time, kind, reason, credential_id, detail)

    def _report_lost(self, time: int) -> None:
        lost = self.state.audit.take_lost()
        if lost:
            self._append_event(time, AuditEventKind.EVENTS_LOST, 0, b"", min(lost, U32_MAX))

    def _append_event(
        self, time: int, kind: AuditEventKind, reason: int, credential_id: bytes, detail: int
    ) -> int:
        event = self.state.audit.append(
            time=time, kind=kind, reason=reason, credential_id=credential_id, detail=detail
        )
        if event is None:
            self._records.append(AuditLost(self.state.audit.lost))
            return 0
        self._records.append(AuditAppended(event))
        return event.seq

    def _drain(self, mah: float) -> None:
        self._record(BatteryUsed(self.state.battery_used_mah + mah))

    def _send(self, channel: Channel, frame: bytes, *, retain: bool = False) -> None:
        self._emit(Send(channel, frame, retain))

    def _send_error(self, channel: Channel, error: ProtocolError, about: int) -> None:
        detail = (
            str(error).encode()[: self.config.limits.max_error_detail].decode("utf-8", "ignore")
        )
        message = ErrorMessage(code=error.code, about_type=about, detail=detail)
        self._send(channel, message.to_frame())

    def _cloud_key(self) -> Ed25519PublicKey:
        """The trusted cloud key, decoded once per key; a new key forgets every credential
        verified under the old one. ``LockState`` replaces its (frozen) ``cloud`` on every
        rotation and replay, so an identity test sees every change."""
        cloud = self.state.cloud
        if cloud is not self._trusted or self._trusted_key is None:
            self._verified.clear()
            self._trusted_key, self._trusted = cloud.key(), cloud
        return self._trusted_key

    # --- access decisions ---------------------------------------------------------------

    def _decide(
        self,
        now: float,
        method: str,
        credential_id: bytes,
        reason: Reason,
        lockout_key: bytes | None,
    ) -> int:
        """Log a decision, update the lockout, report it; return the audit seq."""
        time = self.lock_time(now)
        if self.state.audit.lost:
            self._report_lost(time)
        seq = self._append_event(time, _DECISION_KINDS[method], reason, credential_id[:16], 0)
        if lockout_key is not None and reason is not Reason.LOCKED_OUT:
            if reason is Reason.GRANTED:
                self._lockout.record_success(lockout_key)
            else:
                self._lockout.record_failure(lockout_key, now)
        self._emit(AccessDecided(method, credential_id, reason, time))
        return seq

    def _open(self) -> None:
        self._drain(self.config.battery.unlock_mah)
        self._emit(Energise(self.config.unlock_seconds))

    def _on_card_tapped(self, uid: bytes, now: float) -> None:
        challenge = self._random(CHALLENGE_SIZE)
        self._cards[uid] = (challenge, now + self.config.card_response_timeout_s)
        self._emit(CardChallenge(uid, challenge))

    def _on_card_answered(self, uid: bytes, response: bytes, now: float) -> None:
        lockout_key = b"card:" + uid
        reason = self._card_reason(uid, response, lockout_key, now)
        self._decide(now, "card", uid, reason, lockout_key)
        if reason is Reason.GRANTED:
            self._open()

    def _card_reason(self, uid: bytes, response: bytes, lockout_key: bytes, now: float) -> Reason:
        pending = self._cards.pop(uid, None)
        if self._lockout.is_locked(lockout_key, now):
            return Reason.LOCKED_OUT
        if pending is None or pending[1] <= now:
            return Reason.BAD_CHALLENGE
        entry = self.state.held.view(CredentialKind.KEYCARD, uid)
        if entry is None:
            return Reason.UNKNOWN_CREDENTIAL
        if not verify_card_response(entry.card_key, uid, pending[0], response):
            return Reason.BAD_CHALLENGE  # §7.3 step 4: a wrong answer is BAD_CHALLENGE (9)
        return entry.decide(self.lock_time(now), utc_offset_minutes=self.config.utc_offset_minutes)

    def _on_key(self, key: str, now: float) -> None:
        if len(key) != 1 or key not in "0123456789":
            return
        code = self._keypad.press(key, now)
        if code is None:
            return
        if self._lockout.is_locked(b"keypad", now):
            reason = Reason.LOCKED_OUT
        else:
            match = check_doorcode(
                code,
                secret=self.state.identity.doorcode_secret,
                door_id=self.door_id,
                now=self.lock_time(now),
                utc_offset_minutes=self.config.utc_offset_minutes,
            )
            reason = Reason.GRANTED if match else Reason.BAD_CODE
        self._decide(now, "keypad", code[:3].encode(), reason, b"keypad")
        if reason is Reason.GRANTED:
            self._open()

    # --- sessions -----------------------------------------------------------------------

    def _new_challenge(self, now: float) -> bytes:
        challenge = self._random(CHALLENGE_SIZE)
        self._issued[challenge] = now + self.config.challenge_lifetime_s
        return challenge

    def _on_connected(self, channel: Channel, now: float) -> None:
        challenge = self._new_challenge(now)
        self._sessions[channel] = _Session(challenge, now, authenticated=channel == MQTT)
        self._send(channel, self.hello(challenge, now).to_frame(), retain=channel == MQTT)
        if channel == MQTT:
            self._send_audit(channel)

    def _on_disconnected(self, channel: Channel, now: float) -> None:
        session = self._sessions.pop(channel, None)
        if session is not None and channel != MQTT:
            self._drain(self.config.battery.radio_ma * max(0.0, now - session.connected_at) / 3600)

    def _send_audit(self, channel: Channel) -> None:
        """Send the held events this session has not sent yet (§6.4, §6.5).

        Each event goes out once per session: a new session starts again from the oldest
        unacknowledged event, so one that a relay dropped is sent again then. While the
        lock's MQTT session is up, that session carries the audit and a BLE session
        sends none (a phone would only relay what the cloud already receives).
        """
        if channel != MQTT and MQTT in self._sessions:
            return
        session = self._sessions.get(channel)
        after = session.audit_sent_up_to if session is not None else 0
        events = self.state.audit.batch(self.config.audit_batch_events, after_seq=after)
        if events:
            batch = AuditBatch(door_id=self.door_id, events=events)
            self._send(channel, batch.signed_frame(self._identity_key))
            if session is not None:
                session.audit_sent_up_to = events[-1].seq

    # --- frames -------------------------------------------------------------------------

    def _on_frame(self, channel: Channel, data: bytes, now: float) -> None:
        about = 0  # §4.4: the type of the refused frame, 0 if it did not decode
        try:
            _, message_type, payload = decode_frame(data, limits=self.config.limits)
            about = message_type
            handler = _FRAME_HANDLERS.get(message_type)
            if handler is None:
                raise _NotAccepted(
                    f"a lock does not accept {MessageType(message_type).name} frames"
                )
            getattr(self, handler)(channel, payload, now)
        except ProtocolError as error:
            self._send_error(channel, error, about)

    def _on_error(self, channel: Channel, payload: bytes, now: float) -> None:
        """ERROR frames from a peer need no answer."""

    def _on_auth(self, channel: Channel, payload: bytes, now: float) -> None:
        session = self._sessions.get(channel)
        if session is None or channel == MQTT:
            raise _NotAccepted("AUTH is accepted only in a BLE session opened by HELLO")
        auth = Auth.from_bytes_known(payload, self._known_credential, limits=self.config.limits)
        challenge, session.challenge = session.challenge, None
        person = auth.credential.person_id
        reason = self._phone_reason(auth, challenge, now)
        seq = self._decide(now, "phone", person, reason, b"person:" + person)
        opened = reason is Reason.GRANTED and auth.intent is Intent.UNLOCK
        if opened:
            self._drain(self.config.battery.unlock_mah)
        seconds = self.config.unlock_seconds if opened else 0
        result = UnlockResult(
            door_id=self.door_id, reason=reason, open_seconds=seconds, audit_seq=seq
        )
        self._send(channel, result.to_frame())
        if opened:
            self._emit(Energise(seconds))
        if reason is Reason.GRANTED:
            session.authenticated = True
            self._send_audit(channel)

    def _phone_reason(self, auth: Auth, challenge: bytes | None, now: float) -> Reason:
        """§4.2.3, in order: lockout, signatures, window, scope, list entry."""
        if self._lockout.is_locked(b"person:" + auth.credential.person_id, now):
            return Reason.LOCKED_OUT
        try:
            verified = self._verify_credential(auth.credential)
            if challenge is None:
                return Reason.BAD_CHALLENGE
            verified.phone_key = auth.verify(
                door_id=self.door_id, challenge=challenge, phone_key=verified.phone_key
            )
        except AuthenticationError:
            return Reason.BAD_SIGNATURE
        return self._phone_authorisation(auth.credential, self.lock_time(now))

    def _known_credential(self, data: bytes) -> MobileCredential | None:
        """The credential parsed from exactly ``data``, if verified under the current key."""
        self._cloud_key()  # forgets every credential if the cloud key changed
        verified = self._verified.get(data)
        return None if verified is None else verified.credential

    def _verify_credential(self, credential: MobileCredential) -> _Verified:
        """Check the cloud signature over the credential's exact bytes (§4.2.3 step 2),
        unless this lock already did under its current cloud key; raise
        :class:`AuthenticationError`. A parsed credential's ``to_bytes`` is the received
        encoding (it is canonical: :meth:`MobileCredential.from_bytes`)."""
        key = self._cloud_key()
        data = credential.to_bytes()
        verified = self._verified.pop(data, None)
        if verified is None or verified.credential is not credential:
            credential.verify(key)
            verified = _Verified(credential)
            if len(self._verified) >= self.config.verified_credentials:
                del self._verified[next(iter(self._verified))]  # the least recently used
        self._verified[data] = verified  # (re)inserted last: the most recently used
        return verified

    def _phone_authorisation(self, credential: MobileCredential, lock_time: int) -> Reason:
        if not credential.is_valid_at(lock_time):
            return Reason.CREDENTIAL_EXPIRED
        if not credential.opens(door_id=self.door_id, property_id=self.state.identity.property_id):
            return Reason.WRONG_DOOR
        entry = self.state.held.view(CredentialKind.PERSON, credential.person_id)
        if entry is None:
            return Reason.UNKNOWN_CREDENTIAL
        return entry.decide(lock_time, utc_offset_minutes=self.config.utc_offset_minutes)

    def _on_bundle(self, channel: Channel, payload: bytes, now: float) -> None:
        held = self.state.held
        try:
            outcome = apply_bundle(
                held,
                payload,
                cloud_public=self.state.cloud.key(),
                door_private=self._sealing_key,
                capacity=self.config.capacity,
                limits=self.config.limits,
            )
        except (CapacityError, BaseVersionError) as refusal:
            self._refuse_bundle(channel, payload, refusal, now)
            return
        if outcome.changed:
            self._record(
                ListChanged(
                    outcome.held.version,
                    outcome.held.digest,
                    self.lock_time(now),
                    outcome.changes,
                    outcome.encoded_changes,
                )
            )
            self._log(now, AuditEventKind.BUNDLE_APPLIED, detail=outcome.held.version)
        receipt = make_receipt(
            self._identity_key, self.state.held, requested_version=outcome.bundle.target_version
        )
        self._send(channel, receipt.to_frame())
        if self._sessions.get(channel, _Session(None, now)).authenticated:
            self._send_audit(channel)

    def _refuse_bundle(
        self, channel: Channel, payload: bytes, refusal: ProtocolError, now: float
    ) -> None:
        """Steps 6 and 9 of §6.2.2: a signed receipt tells the cloud why."""
        bundle = SealedBundle.from_bytes(payload, limits=self.config.limits)
        status = (
            ReceiptStatus.CAPACITY_EXCEEDED
            if isinstance(refusal, CapacityError)
            else ReceiptStatus.BASE_VERSION
        )
        detail = refusal.needed if isinstance(refusal, CapacityError) else bundle.base_version
        self._log(now, AuditEventKind.BUNDLE_REFUSED, reason=refusal.code, detail=detail)
        receipt = make_receipt(
            self._identity_key,
            self.state.held,
            requested_version=bundle.target_version,
            status=status,
        )
        self._send(channel, receipt.to_frame())

    def _on_audit_ack(self, channel: Channel, payload: bytes, now: float) -> None:
        ack = AuditAck.verified_from_bytes(
            payload, self.state.cloud.key(), limits=self.config.limits
        )
        if ack.door_id != self.door_id:
            raise WrongDoorError("audit ack is for another door")
        if ack.up_to_seq >= self.state.audit.next_seq:
            return  # §6.5: an authentic ack above the audit head is ignored (no error)
        self._record(AuditReleased(ack.up_to_seq))
        self._report_lost(self.lock_time(now))
        self._send_audit(channel)

    def _on_time_sync(self, channel: Channel, payload: bytes, now: float) -> None:
        sync = TimeSync.verified_from_bytes(
            payload, self.state.cloud.key(), limits=self.config.limits
        )
        if sync.door_id != self.door_id:
            raise WrongDoorError("time sync is for another door")
        if sync.sequence <= self.state.time_sync_seq:
            raise StaleError(
                f"time sync sequence {sync.sequence} is not above {self.state.time_sync_seq}"
            )
        bound = sync.challenge != NO_CHALLENGE
        if bound and self._issued.pop(sync.challenge, 0.0) <= now:
            raise StaleError(
                "time sync is bound to a challenge this lock did not issue or already used"
            )
        limit = self.config.max_bound_clock_step_s if bound else self.config.max_clock_step_s
        before = self.lock_time(now)
        step = max(-limit, min(limit, sync.cloud_time - before))
        self._record(ClockCorrected(self.state.clock_offset + step, sync.sequence))
        # §6.4: detail is the lock time before the correction (the event's time is after it)
        self._log(now, AuditEventKind.TIME_CORRECTED, detail=before)

    def _on_key_rotation(self, channel: Channel, payload: bytes, now: float) -> None:
        rotated = self.state.cloud.apply_rotation(payload)
        if rotated != self.state.cloud:
            self._record(KeyRotated(rotated.epoch, rotated.public_key))
            self._log(now, AuditEventKind.KEY_ROTATED, detail=rotated.epoch)


_EVENT_HANDLERS: dict[type, Callable[[Controller, Any, float], None]] = {
    FrameReceived: lambda c, e, now: c._on_frame(e.channel, e.data, now),
    CardTapped: lambda c, e, now: c._on_card_tapped(e.uid, now),
    CardAnswered: lambda c, e, now: c._on_card_answered(e.uid, e.response, now),
    KeyPressed: lambda c, e, now: c._on_key(e.key, now),
    Connected: lambda c, e, now: c._on_connected(e.channel, now),
    Disconnected: lambda c, e, now: c._on_disconnected(e.channel, now),
}
_FRAME_HANDLERS: dict[int, str] = {
    MessageType.AUTH: "_on_auth",
    MessageType.BUNDLE: "_on_bundle",
    MessageType.AUDIT_ACK: "_on_audit_ack",
    MessageType.TIME_SYNC: "_on_time_sync",
    MessageType.KEY_ROTATION: "_on_key_rotation",
    MessageType.ERROR: "_on_error",
}
"""The frames a lock accepts, by type: the name of the method that takes each (looked up
on the instance, so a subclass may override one)."""
_EFFECTS = frozenset({Send, Energise})
"""Actions with effects outside the lock: pending records are flushed before them."""


def _drop_expired(deadlines: dict[bytes, float], now: float) -> None:
    """Drop the oldest entries while their deadline is over.

    Entries are added with deadlines a fixed lifetime ahead, so in deadline order, and
    the common sweep looks at one entry. After the lock clock stepped back, an expired
    entry may wait behind a live one a little longer; that only delays freeing its
    memory, since every use of an entry re-tests its deadline."""
    while deadlines:
        oldest = next(iter(deadlines))
        if deadlines[oldest] > now:
            return
        del deadlines[oldest]


class _NotAccepted(DecodeError):
    """A well-formed frame this lock does not accept here."""
