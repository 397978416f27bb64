"""The controller core: access decisions, timers, bundles, time, keys, audit, battery.

Theory of operation: every test drives a :class:`tests.controller_harness.LockRig`
(one lock, a fake cloud, an in-memory flash, a clock that only moves forward
through ``next_deadline()`` / ``handle_timeout()``). Expected outcomes come from
the rules in ``docs/protocol.md`` (§4.2.3, §5.3, §6.2.2, §6.5-§6.7, §7.2, §7.3)
and the issue, never from the core's own code. The decision table moves the lock
clock across every validity and schedule edge, with a UTC offset, so that an
off-by-one or a forgotten offset shows up as one wrong row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.config import BatteryConfig, ControllerConfig
from controller.events import (
    MQTT,
    Action,
    CardAnswered,
    CardTapped,
    Channel,
    Connected,
    Energise,
    KeyPressed,
    PersistSnapshot,
    PersistTransaction,
    Send,
)
from controller.state import LockState
from protocol import (
    AuditBatch,
    AuditEvent,
    AuditEventKind,
    Credential,
    CredentialStatus,
    ErrorCode,
    Hello,
    Intent,
    KeyRotation,
    MobileCredential,
    Reason,
    Receipt,
    ReceiptStatus,
    ScopeKind,
    UnlockResult,
    Window,
)
from protocol.crypto import SignContext, public_bytes, sign
from protocol.doorcode import DoorcodeKind, issue_doorcode
from protocol.frame import encode_frame
from protocol.keycard import Keycard
from simulators.fixture import fixed_bytes
from tests.controller_harness import (
    DAY,
    PROPERTY_ID,
    WORLD,
    LockRig,
    Outcome,
    View,
    card_entry,
    keycard,
    lock_identity,
    person_entry,
    phone_key,
)

OFFSET = 120  # minutes: the lock runs on UTC+2
CONFIG = ControllerConfig(utc_offset_minutes=OFFSET)
MONDAY = 19_674 * DAY - OFFSET * 60
"""Local midnight starting Monday 2023-11-13 (UTC+2), in unix seconds."""
NINE, FIVE_PM = MONDAY + 9 * 3600, MONDAY + 17 * 3600
OFFICE_HOURS = Window(days=0b000_0101, start_minute=9 * 60, end_minute=17 * 60)  # Mon, Wed
VALID_FROM, VALID_UNTIL = MONDAY + 10 * 3600, MONDAY + 10 * 3600 + 7 * DAY
NOON = MONDAY + 12 * 3600
QUARTER = MONDAY + 10 * 3600  # a quarter-hour window starts here (local 10:00)

CARD = keycard(1)
OTHER_CARD = keycard(2)
CLONE = Keycard(uid=CARD.uid, key=fixed_bytes("a cloner's guess", 16))
PERSON, STRANGER = 1, 2
ENTRY_FIELDS: dict[str, dict[str, object]] = {
    "active": {},
    "revoked": {"status": CredentialStatus.REVOKED},
    "validity": {"valid_from": VALID_FROM, "valid_until": VALID_UNTIL},
    "schedule": {"schedule": (OFFICE_HOURS,)},
}


def _rig(at: int, *entries: Credential, config: ControllerConfig = CONFIG) -> LockRig:
    """A lock provisioned shortly before lock time ``at``, with ``entries``; clock at ``at``."""
    rig = LockRig.provision(*entries, config=config, lock_time=at - 10)
    rig.advance_to(at)
    return rig


# --- the decision table ---------------------------------------------------------------------

Situation = Callable[[int], tuple[LockRig, Outcome]]
SITUATIONS: dict[tuple[str, str], Situation] = {}


def situation(method: str, name: str) -> Callable[[Situation], Situation]:
    """Register a function that sets the scene at lock time ``at`` and makes the attempt."""

    def register(function: Situation) -> Situation:
        SITUATIONS[method, name] = function
        return function

    return register


def _card_rig(at: int, name: str) -> LockRig:
    fields = ENTRY_FIELDS.get(name, {})
    return _rig(at, card_entry(CARD, **fields), card_entry(OTHER_CARD))


def _card_with_entry(at: int, *, name: str) -> tuple[LockRig, Outcome]:
    rig = _card_rig(at, name)
    return rig, rig.tap(CARD)


@situation("card", "unknown card")
def _card_unknown(at: int) -> tuple[LockRig, Outcome]:
    rig = _rig(at, card_entry(OTHER_CARD))
    return rig, rig.tap(CARD)


@situation("card", "bare-UID clone")
def _card_clone(at: int) -> tuple[LockRig, Outcome]:
    rig = _card_rig(at, "active")
    return rig, rig.tap(CLONE)


@situation("card", "answer after the timeout")
def _card_late(at: int) -> tuple[LockRig, Outcome]:
    rig = _card_rig(at - 1, "active")
    return rig, rig.tap(CARD, delay=CONFIG.card_response_timeout_s)


@situation("card", "answer without a tap")
def _card_untapped(at: int) -> tuple[LockRig, Outcome]:
    rig = _card_rig(at, "active")
    return rig, rig.handle(CardAnswered(CARD.uid, bytes(16)))


@situation("card", "replayed answer")
def _card_replayed(at: int) -> tuple[LockRig, Outcome]:
    rig = _card_rig(at, "active")
    first = rig.tap(CARD)
    assert first.reason is Reason.GRANTED
    recorded = CARD.respond(first.challenges[0].challenge)  # sniffed at the first tap
    return rig, rig.tap(CARD, response=recorded)


@situation("card", "locked out")
def _card_locked_out(at: int) -> tuple[LockRig, Outcome]:
    rig = _card_rig(at, "active")
    for _ in range(CONFIG.lockout_failures):
        rig.tap(CLONE)
    return rig, rig.tap(CARD)


def _phone_rig(at: int, name: str) -> LockRig:
    fields = ENTRY_FIELDS.get(name, {})
    return _rig(at, person_entry(PERSON, **fields), person_entry(STRANGER + 1))


def _credential(rig: LockRig, person: int = PERSON, **fields: Any) -> MobileCredential:
    """A credential valid from a day before the lock's time to a day after (unless told)."""
    window = {"valid_from": rig.lock_time - DAY, "valid_until": rig.lock_time + DAY}
    return rig.cloud.mobile_credential(person, **{**window, **fields})


def _phone_with_entry(at: int, *, name: str) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, name)
    return rig, rig.phone_unlock(PERSON, credential=_credential(rig))


for _name in ENTRY_FIELDS:
    SITUATIONS["card", _name] = partial(_card_with_entry, name=_name)
    SITUATIONS["phone", _name] = partial(_phone_with_entry, name=_name)


@situation("phone", "unknown person")
def _phone_unknown(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    return rig, rig.phone_unlock(STRANGER, credential=_credential(rig, STRANGER))


@situation("phone", "credential forged")
def _phone_forged(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    forged = _credential(rig, key=WORLD.cloud_key_at(99))
    return rig, rig.phone_unlock(PERSON, credential=forged)


@situation("phone", "credential copied, no phone key")
def _phone_copied(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    return rig, rig.phone_unlock(PERSON, credential=_credential(rig), phone=phone_key(7))


@situation("phone", "proof for another door")
def _phone_other_door(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    channel, _ = rig.connect()
    other = lock_identity("back").door_id
    return rig, rig.auth(channel, _credential(rig), phone_key(PERSON), door_id=other)


@situation("phone", "another session's challenge")
def _phone_relayed(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    _, hello = rig.connect()
    second, _ = rig.connect()
    outcome = rig.auth(second, _credential(rig), phone_key(PERSON), challenge=hello.challenge)
    return rig, outcome


@situation("phone", "AUTH replayed on its connection")
def _phone_replayed(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    channel, hello = rig.connect()
    frame = rig.auth_frame(_credential(rig), phone_key(PERSON), challenge=hello.challenge)
    assert rig.deliver(frame, channel).reason.name == "GRANTED"
    return rig, rig.deliver(frame, channel)


@situation("phone", "AUTH replayed on a new connection")
def _phone_replayed_later(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    channel, hello = rig.connect()
    frame = rig.auth_frame(_credential(rig), phone_key(PERSON), challenge=hello.challenge)
    assert rig.deliver(frame, channel).reason.name == "GRANTED"
    later, _ = rig.connect()
    return rig, rig.deliver(frame, later)


@situation("phone", "credential window")
def _phone_credential_window(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    credential = _credential(rig, valid_from=VALID_FROM, valid_until=VALID_UNTIL)
    return rig, rig.phone_unlock(PERSON, credential=credential)


@situation("phone", "scope: another door")
def _phone_scope_door(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    credential = _credential(rig, scope_ids=(lock_identity("back").door_id,))
    return rig, rig.phone_unlock(PERSON, credential=credential)


@situation("phone", "scope: this property")
def _phone_scope_property(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    return rig, rig.phone_unlock(PERSON, credential=_credential(rig, scope=ScopeKind.PROPERTY))


@situation("phone", "scope: another property")
def _phone_scope_other_property(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    credential = _credential(
        rig, scope=ScopeKind.PROPERTY, scope_ids=(fixed_bytes("property elsewhere", 16),)
    )
    return rig, rig.phone_unlock(PERSON, credential=credential)


@situation("phone", "locked out")
def _phone_locked_out(at: int) -> tuple[LockRig, Outcome]:
    rig = _phone_rig(at, "active")
    for _ in range(CONFIG.lockout_failures):
        rig.phone_unlock(PERSON, credential=_credential(rig), phone=phone_key(7))
    return rig, rig.phone_unlock(PERSON, credential=_credential(rig))


def _code(kind: DoorcodeKind, issued_at: int, *, door: str = "front") -> str:
    return issue_doorcode(
        secret=lock_identity(door).doorcode_secret,
        door_id=lock_identity(door).door_id,
        kind=kind,
        at=issued_at,
        slot=7,
        utc_offset_minutes=OFFSET,
    )


@situation("keypad", "daily code for local Monday")
def _keypad_daily(at: int) -> tuple[LockRig, Outcome]:
    rig = _rig(at)
    return rig, rig.type_code(_code(DoorcodeKind.DAILY, NOON))


@situation("keypad", "guest code for local 10:00")
def _keypad_guest(at: int) -> tuple[LockRig, Outcome]:
    rig = _rig(at)
    return rig, rig.type_code(_code(DoorcodeKind.QUARTER_HOUR, QUARTER))


@situation("keypad", "made-up code")
def _keypad_made_up(at: int) -> tuple[LockRig, Outcome]:
    rig = _rig(at)
    return rig, rig.type_code("10712345")


@situation("keypad", "another door's code")
def _keypad_other_door(at: int) -> tuple[LockRig, Outcome]:
    rig = _rig(at)
    return rig, rig.type_code(_code(DoorcodeKind.DAILY, at, door="back"))


@situation("keypad", "locked out")
def _keypad_locked_out(at: int) -> tuple[LockRig, Outcome]:
    rig = _rig(at)
    for n in range(CONFIG.lockout_failures):
        rig.type_code(f"1{n:02d}00000")
    return rig, rig.type_code(_code(DoorcodeKind.DAILY, at))


@dataclass(frozen=True)
class Row:
    method: str
    situation: str
    at: int
    expected: str

    @property
    def id(self) -> str:
        return f"{self.method}|{self.situation}|{self.at}->{self.expected}"


def _rows(method: str, name: str, *cases: tuple[int, str]) -> list[Row]:
    return [Row(method, name, at, expected) for at, expected in cases]


def _entry_rows(method: str) -> list[Row]:
    return [
        *_rows(method, "active", (NOON, "GRANTED")),
        *_rows(method, "revoked", (NOON, "REVOKED")),
        *_rows(
            method,
            "validity",
            (VALID_FROM - 1, "NOT_YET_VALID"),
            (VALID_FROM, "GRANTED"),
            (VALID_UNTIL - 1, "GRANTED"),
            (VALID_UNTIL, "EXPIRED"),
        ),
        *_rows(
            method,
            "schedule",
            (NINE - 60, "OUTSIDE_SCHEDULE"),
            (NINE - 1, "OUTSIDE_SCHEDULE"),
            (NINE, "GRANTED"),
            (FIVE_PM - 60, "GRANTED"),
            (FIVE_PM - 1, "GRANTED"),
            (FIVE_PM, "OUTSIDE_SCHEDULE"),
            (FIVE_PM - 2 * 3600 + 1800, "GRANTED"),  # local 15:30
            (FIVE_PM + 1800, "OUTSIDE_SCHEDULE"),  # local 17:30 = 15:30 UTC: offset applied
            (NINE + DAY + 3600, "OUTSIDE_SCHEDULE"),  # Tuesday 10:00: not a scheduled day
            (NINE + 2 * DAY + 3600, "GRANTED"),  # Wednesday 10:00
        ),
    ]


ROWS = [
    *_entry_rows("card"),
    *_rows("card", "unknown card", (NOON, "UNKNOWN_CREDENTIAL")),
    *_rows("card", "bare-UID clone", (NOON, "BAD_CHALLENGE")),
    *_rows("card", "answer after the timeout", (NOON, "BAD_CHALLENGE")),
    *_rows("card", "answer without a tap", (NOON, "BAD_CHALLENGE")),
    *_rows("card", "replayed answer", (NOON, "BAD_CHALLENGE")),
    *_rows("card", "locked out", (NOON, "LOCKED_OUT")),
    *_entry_rows("phone"),
    *_rows("phone", "unknown person", (NOON, "UNKNOWN_CREDENTIAL")),
    *_rows("phone", "credential forged", (NOON, "BAD_SIGNATURE")),
    *_rows("phone", "credential copied, no phone key", (NOON, "BAD_SIGNATURE")),
    *_rows("phone", "proof for another door", (NOON, "BAD_SIGNATURE")),
    *_rows("phone", "another session's challenge", (NOON, "BAD_SIGNATURE")),
    *_rows("phone", "AUTH replayed on its connection", (NOON, "BAD_CHALLENGE")),
    *_rows("phone", "AUTH replayed on a new connection", (NOON, "BAD_SIGNATURE")),
    *_rows(
        "phone",
        "credential window",
        (VALID_FROM - 1, "CREDENTIAL_EXPIRED"),
        (VALID_FROM, "GRANTED"),
        (VALID_UNTIL - 1, "GRANTED"),
        (VALID_UNTIL, "CREDENTIAL_EXPIRED"),
    ),
    *_rows("phone", "scope: another door", (NOON, "WRONG_DOOR")),
    *_rows("phone", "scope: this property", (NOON, "GRANTED")),
    *_rows("phone", "scope: another property", (NOON, "WRONG_DOOR")),
    *_rows("phone", "locked out", (NOON, "LOCKED_OUT")),
    *_rows(
        "keypad",
        "daily code for local Monday",
        (MONDAY - 1, "BAD_CODE"),
        (MONDAY, "GRANTED"),
        (MONDAY + DAY - 1, "GRANTED"),
        (MONDAY + DAY, "BAD_CODE"),
    ),
    *_rows(
        "keypad",
        "guest code for local 10:00",
        (QUARTER - 1, "BAD_CODE"),
        (QUARTER, "GRANTED"),
        (QUARTER + 1799, "GRANTED"),
        (QUARTER + 1800, "BAD_CODE"),
    ),
    *_rows("keypad", "made-up code", (NOON, "BAD_CODE")),
    *_rows("keypad", "another door's code", (NOON, "BAD_CODE")),
    *_rows("keypad", "locked out", (NOON, "LOCKED_OUT")),
]
DECISION_KINDS = {
    "card": AuditEventKind.CARD_DECISION,
    "phone": AuditEventKind.PHONE_DECISION,
    "keypad": AuditEventKind.DOORCODE_DECISION,
}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_decision_table(row: Row) -> None:
    rig, outcome = SITUATIONS[row.method, row.situation](row.at)
    decision = outcome.decisions[-1]
    assert (decision.method, decision.reason.name) == (row.method, row.expected)
    assert decision.lock_time == row.at == rig.lock_time
    granted = row.expected == "GRANTED"
    assert outcome.energised == ([CONFIG.unlock_seconds] if granted else [])
    logged = rig.state.audit.events()[-1]
    assert (logged.kind, logged.reason, logged.time) == (
        DECISION_KINDS[row.method],
        decision.reason,
        row.at,
    )
    if row.method == "phone":
        [result] = outcome.of(UnlockResult)
        assert isinstance(result, UnlockResult)
        assert (result.reason, result.audit_seq) == (decision.reason, logged.seq)
        assert result.open_seconds == (CONFIG.unlock_seconds if granted else 0)


def test_decision_table_covers_every_reason() -> None:
    assert {row.expected for row in ROWS} == {r.name for r in Reason}
    assert {(row.method, row.situation) for row in ROWS} == set(SITUATIONS)


# --- lockout --------------------------------------------------------------------------------


def test_five_failures_in_a_minute_lock_out_even_the_right_card() -> None:
    rig = _rig(NOON, card_entry(CARD), card_entry(OTHER_CARD))
    for _ in range(4):
        assert rig.tap(CLONE).reason.name == "BAD_CHALLENGE"
        rig.advance(10)
    assert rig.tap(CLONE).reason.name == "BAD_CHALLENGE"  # fifth failure, 40 s after the first
    started = rig.now
    assert rig.tap(CARD).reason.name == "LOCKED_OUT"
    assert rig.tap(OTHER_CARD).reason.name == "GRANTED"  # the lockout is per credential
    assert rig.controller.next_deadline() == started + CONFIG.lockout_duration_s
    rig.advance(CONFIG.lockout_duration_s - 0.5)
    assert rig.tap(CARD).reason.name == "LOCKED_OUT"  # attempts during a lockout do not extend it
    rig.advance(0.5)
    assert rig.controller.next_deadline() is None
    assert rig.tap(CARD).energised == [CONFIG.unlock_seconds]


def test_failures_spread_over_more_than_a_minute_do_not_lock_out() -> None:
    rig = _rig(NOON, card_entry(CARD))
    for _ in range(6):
        assert rig.tap(CLONE).reason.name == "BAD_CHALLENGE"
        rig.advance(15)  # the oldest failure leaves the 60 s window as the fifth arrives
    assert rig.tap(CARD).reason.name == "GRANTED"


def test_a_success_clears_the_failure_count() -> None:
    rig = _rig(NOON, card_entry(CARD))
    for _ in range(4):
        rig.tap(CLONE)
    assert rig.tap(CARD).reason.name == "GRANTED"
    for _ in range(4):
        rig.tap(CLONE)
    assert rig.tap(CARD).reason.name == "GRANTED"


def test_keypad_lockout_ends_after_its_duration() -> None:
    rig = _rig(NOON)
    for n in range(CONFIG.lockout_failures):
        assert rig.type_code(f"1{n:02d}00000").reason.name == "BAD_CODE"
    code = _code(DoorcodeKind.DAILY, NOON)
    assert rig.type_code(code).reason.name == "LOCKED_OUT"
    rig.advance(CONFIG.lockout_duration_s)
    assert rig.type_code(code).reason.name == "GRANTED"


# --- timers ---------------------------------------------------------------------------------


def test_keypad_digits_time_out_after_five_seconds() -> None:
    rig = _rig(NOON)
    code = _code(DoorcodeKind.DAILY, NOON)
    assert rig.type_code(code[:4], gap=1.0).decisions == []
    assert rig.controller.next_deadline() == rig.now + CONFIG.keypad_timeout_s
    assert rig.advance(CONFIG.keypad_timeout_s).actions == []
    assert rig.controller.next_deadline() is None
    assert rig.type_code(code[4:]).decisions == []  # the first half was forgotten
    rig.advance(CONFIG.keypad_timeout_s)
    assert rig.type_code(code, gap=CONFIG.keypad_timeout_s - 0.1).reason.name == "GRANTED"


def test_non_digit_keys_are_ignored() -> None:
    rig = _rig(NOON)
    assert rig.handle(KeyPressed("#")).actions == []
    assert rig.handle(KeyPressed("12")).actions == []
    assert rig.controller.next_deadline() is None


def test_card_answer_just_inside_the_timeout_counts() -> None:
    rig = _rig(NOON, card_entry(CARD))
    tapped = rig.handle(CardTapped(CARD.uid))
    assert rig.controller.next_deadline() == rig.now + CONFIG.card_response_timeout_s
    rig.advance(CONFIG.card_response_timeout_s - 0.01)
    challenge = tapped.challenges[0].challenge
    answered = rig.handle(CardAnswered(CARD.uid, CARD.respond(challenge)))
    assert answered.reason.name == "GRANTED"
    assert rig.controller.next_deadline() is None


def test_challenges_are_fresh_for_every_tap_and_session() -> None:
    rig = _rig(NOON, card_entry(CARD))
    seen = {rig.tap(CARD).challenges[0].challenge for _ in range(5)}
    seen |= {rig.connect()[1].challenge for _ in range(5)}
    assert len(seen) == 10


# --- phone sessions -------------------------------------------------------------------------


def test_sync_only_is_granted_without_opening() -> None:
    rig = _rig(NOON, person_entry(PERSON))
    battery = rig.view.battery_used_mah
    channel, _ = rig.connect()
    outcome = rig.auth(channel, _credential(rig), phone_key(PERSON), intent=Intent.SYNC_ONLY)
    result = outcome.one(UnlockResult)
    assert isinstance(result, UnlockResult)
    assert (result.reason.name, result.open_seconds, result.opened) == ("GRANTED", 0, False)
    assert outcome.energised == []
    assert outcome.of(AuditBatch)  # the session goes on: audit out
    assert rig.view.battery_used_mah == battery
    bundle = rig.cloud.commit(card_entry(CARD))
    receipt = rig.deliver(rig.cloud.bundle(1), channel).one(Receipt)
    assert isinstance(receipt, Receipt)
    assert receipt.list_digest == bundle.digest


def test_auth_is_refused_on_mqtt_and_without_a_hello() -> None:
    rig = _rig(NOON, person_entry(PERSON))
    rig.connect_mqtt()
    frame = rig.auth_frame(_credential(rig), phone_key(PERSON), challenge=bytes(16))
    before = rig.view
    assert rig.deliver(frame, MQTT).errors == [ErrorCode.MALFORMED]
    assert rig.deliver(frame, Channel("ble", 77)).errors == [ErrorCode.MALFORMED]
    assert rig.view == before


def test_malformed_auth_keeps_the_challenge() -> None:
    rig = _rig(NOON, person_entry(PERSON))
    channel, _ = rig.connect()
    good = rig.auth_frame(
        _credential(rig), phone_key(PERSON), challenge=rig.hellos[channel].challenge
    )
    assert rig.deliver(encode_frame(2, good[8:-5]), channel).errors == [ErrorCode.MALFORMED]
    assert rig.deliver(good, channel).reason.name == "GRANTED"


# --- bundles --------------------------------------------------------------------------------


def test_bundle_over_capacity_is_refused_whole() -> None:
    config = ControllerConfig(capacity=3, utc_offset_minutes=OFFSET)
    cards = [keycard(n) for n in range(10, 15)]
    rig = _rig(NOON, *(card_entry(c) for c in cards[:3]), config=config)
    before = rig.view
    outcome = rig.load(card_entry(cards[3]), card_entry(cards[4]))
    receipt = outcome.one(Receipt)
    assert isinstance(receipt, Receipt)
    assert receipt.status is ReceiptStatus.CAPACITY_EXCEEDED
    assert (receipt.requested_version, receipt.list_version) == (2, 1)
    assert receipt.list_digest == before.list_digest
    assert (rig.view.list_version, rig.view.list_digest) == (1, before.list_digest)
    assert rig.tap(cards[3]).reason.name == "UNKNOWN_CREDENTIAL"  # nothing partial
    refused = [e for e in rig.state.audit.events() if e.kind is AuditEventKind.BUNDLE_REFUSED]
    assert len(refused) == 1
    receipt.verify(WORLD.door("front").identity.public_key())  # the cloud can check it


def test_bundle_at_capacity_that_replaces_entries_applies() -> None:
    config = ControllerConfig(capacity=2)
    rig = LockRig.provision(card_entry(CARD), card_entry(OTHER_CARD), config=config)
    outcome = rig.load(card_entry(CARD, status=CredentialStatus.REVOKED))
    receipt = outcome.one(Receipt)
    assert isinstance(receipt, Receipt)
    assert receipt.status is ReceiptStatus.OK and receipt.list_version == 2
    assert rig.tap(CARD).reason.name == "REVOKED"


def test_bundle_from_a_base_above_the_lock_is_a_base_version_receipt() -> None:
    rig = _rig(NOON, card_entry(CARD))
    rig.cloud.commit(card_entry(OTHER_CARD))
    rig.cloud.commit(card_entry(keycard(3)))
    before = rig.view
    receipt = rig.deliver(rig.cloud.bundle(2)).one(Receipt)
    assert isinstance(receipt, Receipt)
    assert (receipt.status, receipt.list_version, receipt.requested_version) == (
        ReceiptStatus.BASE_VERSION,
        1,
        3,
    )
    assert (rig.view.list_version, rig.view.list_digest) == (1, before.list_digest)
    receipt = rig.deliver(rig.cloud.bundle(0)).one(Receipt)
    assert isinstance(receipt, Receipt)
    assert (receipt.status, receipt.list_version) == (ReceiptStatus.OK, 3)
    assert receipt.list_digest == rig.cloud.current.digest == rig.view.list_digest


def test_duplicate_bundle_yields_an_identical_receipt_and_changes_nothing() -> None:
    rig = _rig(NOON)
    rig.cloud.commit(card_entry(CARD))
    frame = rig.cloud.bundle(0)
    first = rig.deliver(frame)
    after = rig.view
    second = rig.deliver(frame)
    [first_receipt] = [s.frame for s in first.sends]
    assert [s.frame for s in second.sends] == [first_receipt]
    assert rig.view == after
    assert second.persisted == []


def test_older_bundle_is_a_rollback_error() -> None:
    rig = _rig(NOON)
    rig.cloud.commit(card_entry(CARD))
    old = rig.cloud.bundle(0)
    rig.deliver(old)
    rig.cloud.commit(card_entry(OTHER_CARD))
    rig.deliver(rig.cloud.bundle(1))
    before = rig.view
    assert rig.deliver(old).errors == [ErrorCode.ROLLBACK]
    assert rig.view == before


def test_forged_or_misaddressed_bundles_are_errors() -> None:
    rig = _rig(NOON)
    rig.cloud.commit(card_entry(CARD))
    before = rig.view
    forged = rig.cloud.bundle(0, key=WORLD.cloud_key_at(99))
    assert rig.deliver(forged).errors == [ErrorCode.AUTH_FAILED]
    back = LockRig.provision(name="back").cloud
    back.commit(card_entry(CARD))
    assert rig.deliver(back.bundle(0)).errors == [ErrorCode.WRONG_DOOR]
    assert rig.view == before


def test_bundle_on_an_authenticated_session_returns_receipt_then_audit() -> None:
    rig = _rig(NOON, person_entry(PERSON))
    channel, _ = rig.connect()
    rig.auth(channel, _credential(rig), phone_key(PERSON))
    rig.cloud.commit(card_entry(CARD))
    outcome = rig.deliver(rig.cloud.bundle(1), channel)
    assert [type(m).__name__ for m in outcome.messages] == ["Receipt", "AuditBatch"]
    batch = outcome.messages[1]
    assert isinstance(batch, AuditBatch)
    assert batch.events[-1].kind is AuditEventKind.BUNDLE_APPLIED
    assert batch.events[-1].detail == 2


# --- time sync ------------------------------------------------------------------------------


def _offset_after(rig: LockRig, frame: bytes) -> tuple[int, list[ErrorCode]]:
    before = rig.lock_time
    outcome = rig.deliver(frame)
    return rig.lock_time - before, outcome.errors


def test_unbound_time_sync_moves_the_clock_within_the_small_step() -> None:
    rig = _rig(NOON)
    t = rig.lock_time
    assert _offset_after(rig, rig.cloud.time_sync(t + 120)) == (120, [])
    assert _offset_after(rig, rig.cloud.time_sync(t + 120 - 300)) == (-300, [])
    assert _offset_after(rig, rig.cloud.time_sync(rig.lock_time + 3600)) == (300, [])
    assert _offset_after(rig, rig.cloud.time_sync(rig.lock_time - 3600)) == (-300, [])
    corrected = [e for e in rig.state.audit.events() if e.kind is AuditEventKind.TIME_CORRECTED]
    # §6.4: detail is the lock time before the correction, the event's time the one after
    assert [e.time - e.detail for e in corrected] == [120, -300, 300, -300]
    assert rig.view.time_sync_seq == 4


def test_bound_time_sync_uses_the_larger_step() -> None:
    rig = _rig(NOON)
    _, hello = rig.connect()
    frame = rig.cloud.time_sync(rig.lock_time + 3 * DAY, challenge=hello.challenge)
    assert _offset_after(rig, frame) == (CONFIG.max_bound_clock_step_s, [])
    mqtt_hello = rig.connect_mqtt()
    frame = rig.cloud.time_sync(rig.lock_time - 7200, challenge=mqtt_hello.challenge)
    assert _offset_after(rig, frame) == (-7200, [])


@pytest.mark.parametrize(
    "case", ["replayed", "older sequence", "unknown challenge", "used challenge", "old challenge"]
)
def test_stale_time_sync_is_refused(case: str) -> None:
    rig = _rig(NOON)
    _, hello = rig.connect()
    t = rig.lock_time
    fresh = rig.cloud.time_sync(t + 60, challenge=hello.challenge)
    if case == "old challenge":
        rig.advance(CONFIG.challenge_lifetime_s)
        stale = fresh
    else:
        assert rig.deliver(fresh).errors == []
        stale = {
            "replayed": fresh,
            "older sequence": rig.cloud.time_sync(t, sequence=rig.cloud.time_sync_seq - 1),
            "unknown challenge": rig.cloud.time_sync(t, challenge=fixed_bytes("guess", 16)),
            "used challenge": rig.cloud.time_sync(t, challenge=hello.challenge),
        }[case]
    before = rig.view
    outcome = rig.deliver(stale)
    assert outcome.errors == [ErrorCode.STALE]
    assert rig.view == before


def test_time_sync_bound_before_a_reboot_is_stale_after_it() -> None:
    rig = _rig(NOON)
    _, hello = rig.connect()
    rig.reboot()
    frame = rig.cloud.time_sync(rig.lock_time + 60, challenge=hello.challenge)
    assert rig.deliver(frame).errors == [ErrorCode.STALE]


def test_forged_or_misaddressed_time_sync_is_refused() -> None:
    rig = _rig(NOON)
    before = rig.view
    t = rig.lock_time + 60
    assert rig.deliver(rig.cloud.time_sync(t, key=WORLD.cloud_key_at(99))).errors == [
        ErrorCode.AUTH_FAILED
    ]
    other = lock_identity("back").door_id
    assert rig.deliver(rig.cloud.time_sync(t, door_id=other)).errors == [ErrorCode.WRONG_DOOR]
    assert rig.view == before


# --- key rotation ---------------------------------------------------------------------------


def test_key_rotation_switches_every_cloud_signed_form_to_the_new_key() -> None:
    rig = _rig(NOON, person_entry(PERSON))
    old_credential = _credential(rig)
    old_key = rig.cloud.key
    rig.cloud.commit(card_entry(CARD))
    old_bundle = rig.cloud.bundle(1)
    outcome = rig.deliver(rig.cloud.rotate())
    assert outcome.sends == []
    assert rig.view.key_epoch == 1 and rig.view.cloud_key == rig.cloud.public_key
    rotated = rig.state.audit.events()[-1]
    assert (rotated.kind, rotated.detail) == (AuditEventKind.KEY_ROTATED, 1)
    assert rig.connect()[1].key_epoch == 1

    assert rig.deliver(old_bundle).errors == [ErrorCode.AUTH_FAILED]
    assert rig.phone_unlock(PERSON, credential=old_credential).reason.name == "BAD_SIGNATURE"
    t = rig.lock_time
    assert rig.deliver(rig.cloud.time_sync(t + 9, key=old_key)).errors == [ErrorCode.AUTH_FAILED]
    head = rig.view.audit_head
    assert rig.deliver(rig.cloud.audit_ack(head, key=old_key)).errors == [ErrorCode.AUTH_FAILED]

    receipt = rig.deliver(rig.cloud.bundle(1)).one(Receipt)
    assert isinstance(receipt, Receipt) and receipt.list_version == 2
    assert rig.phone_unlock(PERSON).reason.name == "GRANTED"
    assert rig.deliver(rig.cloud.time_sync(t + 9)).errors == []


def test_key_rotations_apply_only_in_order() -> None:
    rig = _rig(NOON)
    before = rig.view
    assert rig.deliver(rig.cloud.rotation(2)).errors == [ErrorCode.KEY_ROTATION_ORDER]
    forged = rig.cloud.rotation(1, signer=WORLD.cloud_key_at(99))
    assert rig.deliver(forged).errors == [ErrorCode.AUTH_FAILED]
    assert rig.view == before
    first = rig.cloud.rotate()
    assert rig.deliver(first).errors == []
    after_first = rig.view
    assert rig.deliver(first).errors == []  # the same rotation again: the idempotent no-op
    assert rig.view == after_first
    assert rig.deliver(rig.cloud.rotate()).errors == []
    assert rig.view.key_epoch == 2
    assert rig.deliver(first).errors == [ErrorCode.KEY_ROTATION_ORDER]


def test_key_rotation_without_proof_of_possession_is_refused() -> None:
    rig = _rig(NOON)
    new_public = public_bytes(WORLD.cloud_key_at(1))
    body = (1).to_bytes(4, "big") + new_public
    wrong_proof = sign(WORLD.cloud_key_at(98), SignContext.KEY_POSSESSION, body)
    rotation = KeyRotation(
        new_epoch=1, new_public_key=new_public, possession_signature=wrong_proof
    ).signed(rig.cloud.key)
    before = rig.view
    assert rig.deliver(rotation.to_frame()).errors == [ErrorCode.AUTH_FAILED]
    assert rig.view == before


# --- audit ring -----------------------------------------------------------------------------

SMALL_RING = ControllerConfig(audit_capacity=4, utc_offset_minutes=OFFSET)


def _all_batched(outcome: Outcome) -> list[AuditEvent]:
    return [e for m in outcome.of(AuditBatch) if isinstance(m, AuditBatch) for e in m.events]


def test_full_ring_counts_lost_events_and_reports_them_after_an_ack() -> None:
    rig = _rig(NOON, card_entry(CARD), config=SMALL_RING)  # BOOT, BUNDLE_APPLIED
    assert rig.tap(CARD).reason.name == "GRANTED"  # 3
    assert rig.tap(CLONE).reason.name == "BAD_CHALLENGE"  # 4: the ring is full
    assert rig.view.audit_head == 4
    for _ in range(3):
        decided = rig.tap(CARD)
        assert decided.reason.name == "GRANTED" and decided.energised == [5]  # still decides
    assert (rig.view.audit_head, rig.view.audit_lost, rig.state.audit.pending) == (4, 3, 4)

    outcome = rig.deliver(rig.cloud.audit_ack(2))
    events = rig.state.audit.events()
    assert [e.seq for e in events] == [3, 4, 5]
    assert (events[-1].kind, events[-1].detail) == (AuditEventKind.EVENTS_LOST, 3)
    assert rig.view.audit_lost == 0
    assert [e.seq for e in _all_batched(outcome)] == [3, 4, 5]
    assert rig.tap(CARD).reason.name == "GRANTED"
    assert rig.view.audit_head == 6  # gapless after the loss report


def test_events_are_released_only_by_a_valid_ack_for_this_door() -> None:
    rig = _rig(NOON, card_entry(CARD), config=SMALL_RING)
    for _ in range(5):
        rig.tap(CARD)
    before = rig.view
    other = lock_identity("back").door_id
    assert rig.deliver(rig.cloud.audit_ack(3, door_id=other)).errors == [ErrorCode.WRONG_DOOR]
    forged = rig.cloud.audit_ack(3, key=WORLD.cloud_key_at(99))
    assert rig.deliver(forged).errors == [ErrorCode.AUTH_FAILED]
    beyond = rig.cloud.audit_ack(before.audit_head + 1)
    assert rig.deliver(beyond).errors == []  # §6.5: ignored, and it frees nothing
    assert rig.view == before
    rig.reboot()
    rig.connect_mqtt()
    assert rig.state.audit.pending == 4  # never released without an ack


def test_acks_are_idempotent_and_an_older_one_changes_nothing() -> None:
    rig = _rig(NOON, card_entry(CARD))
    for _ in range(3):
        rig.tap(CARD)
    rig.deliver(rig.cloud.audit_ack(4))
    after = rig.view
    assert rig.deliver(rig.cloud.audit_ack(4)).errors == []
    assert rig.deliver(rig.cloud.audit_ack(2)).errors == []
    assert (rig.view.audit_events, rig.view.audit_head) == (after.audit_events, after.audit_head)


def test_each_audit_event_is_sent_once_per_session_and_again_in_the_next() -> None:
    rig = _rig(NOON, card_entry(CARD))
    boot = _all_batched(rig.handle(Connected(MQTT)))
    assert [e.seq for e in boot] == list(range(1, rig.view.audit_head + 1))  # all held
    rig.tap(CARD)
    rig.cloud.commit(person_entry(PERSON))
    applied = _all_batched(rig.deliver(rig.cloud.bundle(1)))
    new = list(range(boot[-1].seq + 1, rig.view.audit_head + 1))
    assert [e.seq for e in applied] == new and len(new) == 2  # the tap and the bundle only
    assert _all_batched(rig.deliver(rig.cloud.audit_ack(boot[-1].seq))) == []  # nothing new
    assert rig.state.audit.pending == rig.view.audit_head - boot[-1].seq  # none freed unacked
    again = _all_batched(rig.handle(Connected(MQTT)))  # a new session: from the oldest held
    assert [e.seq for e in again] == list(range(boot[-1].seq + 1, rig.view.audit_head + 1))


def test_a_lock_with_a_live_mqtt_session_sends_no_audit_over_ble() -> None:
    """§6.4: the MQTT session carries the audit; a BLE session then carries none."""
    rig = _rig(NOON, person_entry(PERSON))
    assert _all_batched(rig.handle(Connected(MQTT)))  # the MQTT session takes the audit
    channel, _ = rig.connect()
    granted = rig.auth(channel, _credential(rig), phone_key(PERSON))
    assert granted.reason is Reason.GRANTED and granted.of(AuditBatch) == []
    rig.cloud.commit(card_entry(CARD))
    applied = rig.deliver(rig.cloud.bundle(1), channel)
    assert [type(m).__name__ for m in applied.messages] == ["Receipt"]
    assert rig.deliver(rig.cloud.audit_ack(1), channel).of(AuditBatch) == []
    assert rig.state.audit.events()[0].seq == 2  # the ack still frees what it covers
    rig.disconnect(channel)
    rig.disconnect(MQTT)
    channel, _ = rig.connect()  # the MQTT session is down: the phone carries the audit again
    after = rig.auth(channel, _credential(rig), phone_key(PERSON))
    assert [e.seq for e in _all_batched(after)] == list(range(2, rig.view.audit_head + 1))


def test_audit_sequence_is_gapless_across_batches_and_acks() -> None:
    rig = _rig(NOON, card_entry(CARD), person_entry(PERSON), config=SMALL_RING)
    uploaded: dict[int, AuditEvent] = {}

    def upload(outcome: Outcome) -> None:
        for event in _all_batched(outcome):
            assert uploaded.setdefault(event.seq, event) == event  # a seq is never reused

    for round_ in range(6):
        for _ in range(2 * (round_ % 3) + 1):  # 1, 3, 5 taps: some overflow the ring
            rig.tap(CARD if round_ % 2 else CLONE)
        upload(rig.handle(Connected(MQTT)))
        upload(rig.deliver(rig.cloud.audit_ack(max(uploaded))))
    upload(rig.deliver(rig.cloud.audit_ack(rig.view.audit_head)))
    assert sorted(uploaded) == list(range(1, rig.view.audit_head + 1))
    events = uploaded.values()
    lost = sum(e.detail for e in events if e.kind is AuditEventKind.EVENTS_LOST)
    assert lost > 0
    decisions = [e for e in events if e.kind is AuditEventKind.CARD_DECISION]
    assert len(decisions) + lost == 18  # every tap is either logged or counted lost


# --- battery and HELLO ----------------------------------------------------------------------


def test_battery_drains_per_unlock_and_per_radio_second_and_hello_reports_it() -> None:
    battery = BatteryConfig(capacity_mah=10.0, unlock_mah=0.5, radio_ma=36.0)
    config = ControllerConfig(battery=battery)
    rig = LockRig.provision(card_entry(CARD), person_entry(PERSON), config=config)
    channel, hello = rig.connect()
    assert hello.battery_pct == 100
    rig.disconnect(channel)  # no time on air: no drain
    assert rig.tap(CARD).energised == [5]
    assert rig.tap(CLONE).energised == []  # a refusal costs no motor time
    assert rig.view.battery_used_mah == pytest.approx(0.5)
    channel, hello = rig.connect()
    assert hello.battery_pct == 95
    rig.auth(channel, _credential(rig), phone_key(PERSON))  # an unlock: 0.5 mAh
    rig.advance(100)  # 100 s of radio at 36 mA: 1 mAh
    rig.disconnect(channel)
    assert rig.view.battery_used_mah == pytest.approx(2.0)
    assert rig.connect()[1].battery_pct == 80


def test_a_granted_tap_is_one_journal_write_before_the_motor() -> None:
    rig = LockRig.provision(card_entry(CARD))
    actions = rig.tap(CARD).actions
    kinds = [type(a) for a in actions if isinstance(a, PersistTransaction | Energise)]
    assert kinds == [PersistTransaction, Energise]  # the decision and its drain, together
    assert rig.durable_view() == rig.view


def test_hello_reports_the_lock() -> None:
    rig = _rig(NOON, card_entry(CARD))
    rig.advance(30)
    rig.deliver(rig.cloud.rotate())
    _, hello = rig.connect()
    assert isinstance(hello, Hello)
    assert hello.door_id == rig.door_id
    assert (hello.list_version, hello.list_age_s) == (1, 40)  # loaded 10 s before NOON
    assert (hello.key_epoch, hello.lock_time) == (1, NOON + 30)
    assert hello.audit_head_seq == rig.view.audit_head == 3


# --- durability before effect ---------------------------------------------------------------


def _durable_views_at_effects(rig: LockRig, actions: list[Action]) -> list[View]:
    """The durable state at each Send/Energise, had the power gone right after it."""
    snapshot, transactions = rig.flash.snapshot, list(rig.flash.transactions)
    views = []
    for action in actions:
        if isinstance(action, PersistSnapshot):
            snapshot, transactions = action.data, []
        elif isinstance(action, PersistTransaction):
            transactions.append(action.data)
        elif isinstance(action, Send | Energise):
            state = LockState.replay(
                snapshot,
                transactions,
                audit_capacity=rig.config.audit_capacity,
            )
            views.append(View.of(state))
    return views


def test_every_effect_follows_the_journal_write_of_every_change_before_it() -> None:
    config = ControllerConfig(snapshot_every=3, audit_capacity=6, capacity=3)
    rig = LockRig.provision(card_entry(CARD), person_entry(PERSON), config=config)
    channel, hello = rig.connect()
    steps: list[Callable[[], object]] = [
        lambda: rig.handle(CardTapped(CARD.uid)),
        lambda: rig.tap(CARD),
        lambda: rig.tap(CLONE),
        lambda: rig.type_code(_code_now(rig)),
        lambda: rig.auth(channel, _credential(rig), phone_key(PERSON)),
        lambda: rig.load(card_entry(OTHER_CARD), channel=channel),
        lambda: rig.load(card_entry(keycard(3)), card_entry(keycard(4))),  # over capacity
        lambda: rig.deliver(rig.cloud.time_sync(rig.lock_time + 50, challenge=hello.challenge)),
        lambda: rig.deliver(rig.cloud.audit_ack(rig.view.audit_head - 1)),
        lambda: rig.deliver(rig.cloud.rotate()),
        lambda: rig.disconnect(channel),
        lambda: rig.handle(Connected(MQTT)),
        lambda: rig.reboot(),
    ]
    effects = 0
    for step in steps:
        before_snapshot = rig.flash.snapshot
        before_txns = list(rig.flash.transactions)
        log_start = len(rig.log)
        step()
        actions = rig.log[log_start:]
        rig.flash.snapshot, rig.flash.transactions = before_snapshot, before_txns
        views = _durable_views_at_effects(rig, actions)
        rig.flash.persist(actions)
        live = rig.view
        assert all(v == live for v in views), step
        assert rig.durable_view() == live
        effects += len(views)
    assert effects >= 10


def _code_now(rig: LockRig) -> str:
    return issue_doorcode(
        secret=rig.doorcode_secret,
        door_id=rig.door_id,
        kind=DoorcodeKind.DAILY,
        at=rig.lock_time,
    )


# --- the decision rules as models (hypothesis) ----------------------------------------------
#
# The expected reasons below are computed with ``datetime`` from the rules of §5.3,
# §4.2.3 and §7.2, independently of the weekday arithmetic in the protocol package.

MODEL_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True)
lock_times = st.integers(1_000_000_000, 4_000_000_000)
offsets = st.integers(-12 * 60, 14 * 60)
nudges = st.one_of(st.integers(-2, 2), st.integers(-3 * DAY, 3 * DAY))
windows = st.builds(
    lambda days, start, length: Window(
        days=days, start_minute=start, end_minute=min(1440, start + length)
    ),
    st.integers(1, 0x7F),
    st.integers(0, 1439),
    st.integers(1, 1440),
)


def _local(at: int, offset_minutes: int) -> datetime:
    return datetime.fromtimestamp(at, tz=timezone(timedelta(minutes=offset_minutes)))


def _entry_model(entry: Credential, at: int, offset_minutes: int) -> Reason:
    """§5.3, with the weekday and minute of day from ``datetime``."""
    if entry.status is CredentialStatus.REVOKED:
        return Reason.REVOKED
    if at < entry.valid_from:
        return Reason.NOT_YET_VALID
    if at >= entry.valid_until:
        return Reason.EXPIRED
    local = _local(at, offset_minutes)
    minute = local.hour * 60 + local.minute
    inside = any(
        w.days >> local.weekday() & 1 and w.start_minute <= minute < w.end_minute
        for w in entry.schedule
    )
    if entry.schedule and not inside:
        return Reason.OUTSIDE_SCHEDULE
    return Reason.GRANTED


@st.composite
def _entry_fields(draw: st.DrawFn, at: int) -> dict[str, Any]:
    valid_from = max(0, at + draw(nudges))
    return {
        "status": draw(st.sampled_from(CredentialStatus)),
        "valid_from": valid_from,
        "valid_until": valid_from + draw(st.one_of(st.integers(1, 3), st.integers(1, 6 * DAY))),
        "schedule": tuple(draw(st.lists(windows, max_size=3))),
    }


@MODEL_SETTINGS
@given(at=lock_times, offset=offsets, data=st.data())
def test_card_decisions_follow_the_decision_rule(at: int, offset: int, data: st.DataObject) -> None:
    entry = card_entry(CARD, **data.draw(_entry_fields(at)))
    config = ControllerConfig(utc_offset_minutes=offset)
    rig = LockRig.provision(entry, config=config, lock_time=at)
    expected = _entry_model(entry, at, offset)
    outcome = rig.tap(CARD)
    assert outcome.reason is expected
    assert outcome.energised == ([5] if expected is Reason.GRANTED else [])


@MODEL_SETTINGS
@given(
    at=lock_times,
    offset=offsets,
    listed=st.booleans(),
    scope=st.sampled_from(["this door", "other door", "both doors", "property", "elsewhere"]),
    intent=st.sampled_from(Intent),
    data=st.data(),
)
def test_phone_decisions_follow_the_checks_of_4_2_3(
    at: int, offset: int, listed: bool, scope: str, intent: Intent, data: st.DataObject
) -> None:
    entry = person_entry(PERSON, **data.draw(_entry_fields(at)))
    config = ControllerConfig(utc_offset_minutes=offset)
    rig = LockRig.provision(*([entry] if listed else []), config=config, lock_time=at)
    other = lock_identity("back").door_id
    kind, ids = {
        "this door": (ScopeKind.DOORS, (rig.door_id,)),
        "other door": (ScopeKind.DOORS, (other,)),
        "both doors": (ScopeKind.DOORS, (other, rig.door_id)),
        "property": (ScopeKind.PROPERTY, (PROPERTY_ID,)),
        "elsewhere": (ScopeKind.PROPERTY, (fixed_bytes("property elsewhere", 16),)),
    }[scope]
    valid_from = max(0, at + data.draw(nudges))
    valid_until = valid_from + data.draw(st.one_of(st.integers(1, 3), st.integers(1, 9 * DAY)))
    credential = rig.cloud.mobile_credential(
        PERSON, valid_from=valid_from, valid_until=valid_until, scope=kind, scope_ids=ids
    )
    if not valid_from <= at < valid_until:
        expected = Reason.CREDENTIAL_EXPIRED
    elif scope in ("other door", "elsewhere"):
        expected = Reason.WRONG_DOOR
    elif not listed:
        expected = Reason.UNKNOWN_CREDENTIAL
    else:
        expected = _entry_model(entry, at, offset)
    outcome = rig.phone_unlock(PERSON, credential=credential, intent=intent)
    result = outcome.one(UnlockResult)
    assert isinstance(result, UnlockResult)
    assert outcome.reason is result.reason is expected
    opens = expected is Reason.GRANTED and intent is Intent.UNLOCK
    assert result.open_seconds == (5 if opens else 0)
    assert outcome.energised == ([5] if opens else [])


@MODEL_SETTINGS
@given(
    at=lock_times,
    offset=offsets,
    kind=st.sampled_from(DoorcodeKind),
    slot=st.integers(0, 99),
    issued=st.one_of(
        st.integers(-2, 2),
        st.integers(-1800, 1800),
        st.integers(-2 * DAY, 2 * DAY),
    ),
)
def test_keypad_decisions_follow_the_doorcode_rule(
    at: int, offset: int, kind: DoorcodeKind, slot: int, issued: int
) -> None:
    rig = LockRig.provision(config=ControllerConfig(utc_offset_minutes=offset), lock_time=at)
    issued_at = at + issued
    code = issue_doorcode(
        secret=rig.doorcode_secret,
        door_id=rig.door_id,
        kind=kind,
        at=issued_at,
        slot=slot,
        utc_offset_minutes=offset,
    )
    now, then = _local(at, offset), _local(issued_at, offset)
    if kind is DoorcodeKind.DAILY:
        accepted = now.date() == then.date()
    else:
        quarters = [
            (t.replace(tzinfo=None) - datetime(1970, 1, 1)) // timedelta(minutes=15)
            for t in (now, then)
        ]
        accepted = 0 <= quarters[0] - quarters[1] <= 1
    outcome = rig.type_code(code)
    assert outcome.reason is (Reason.GRANTED if accepted else Reason.BAD_CODE)
