"""Requirements on access decisions: cards, phones, doorcodes (§4.2.3, §5.3, §7.2, §7.3).

Theory of operation: a decision is judged on what leaves the lock — the door release,
the UNLOCK_RESULT (phones), and the reason byte of the decision event in the lock-signed
audit log (cards and keypads have no reply frame). Clock edges are reached by letting
the lock's own clock run (:meth:`~conformance.lut.LockUnderTest.advance`) to one second
before, at, and after each boundary; the clock only moves forward, so each check visits
its edges in time order. Different credentials are used for refusals, so no failure
lockout (controller policy) colours a later decision.
"""

from __future__ import annotations

import zlib
from typing import Any

from protocol import (
    AuditEvent,
    AuditEventKind,
    CredentialStatus,
    ErrorCode,
    Intent,
    Reason,
    UnlockResult,
    Window,
)
from protocol.doorcode import DoorcodeKind, doorcode_window, issue_doorcode
from protocol.keycard import Keycard

from .lut import Outputs
from .registry import CheckFailed, NotApplicable, requirement
from .session import DAY, T0, Session

MONDAY_0800 = 1_700_467_200
"""Monday 2023-11-20 08:00:00 UTC, the first Monday 08:00 after :data:`T0`."""


def _advance_to(s: Session, lock_time: int) -> None:
    now = s.observe().lock_time
    if lock_time < now:
        raise CheckFailed(f"internal: lock time {now} is already past {lock_time}")
    s.lock.advance(lock_time - now)


def _last_decision(s: Session, kind: AuditEventKind, what: str) -> AuditEvent:
    events = [e for e in s.audit() if e.kind is kind]
    if not events:
        raise CheckFailed(f"{what}: no {kind.name} audit event was logged (§6.4)")
    return events[-1]


def _tap(s: Session, card: Keycard, response: bytes | None = None) -> Outputs:
    tapped = s.lock.tap_card(card.uid)
    challenges = [c for uid, c in tapped.challenges if uid == card.uid]
    if len(challenges) != 1:
        raise CheckFailed(f"tap: expected one challenge to the card, got {len(challenges)} (§7.3)")
    answer = card.respond(challenges[0]) if response is None else response
    return tapped + s.lock.answer_card(card.uid, answer)


def _card_decides(
    s: Session, card: Keycard, expected: Reason, what: str, response: bytes | None = None
) -> None:
    outputs = _tap(s, card, response)
    event = _last_decision(s, AuditEventKind.CARD_DECISION, what)
    opened = bool(outputs.energised)
    if event.reason != expected or opened != (expected is Reason.GRANTED):
        raise CheckFailed(
            f"{what}: expected {expected.name}, got {Reason(event.reason).name}"
            f" with the door {'released' if opened else 'shut'}"
        )


@requirement(section="§7.3", tags=("card", "challenge", "security"), needs=("cards",))
def card_clone_without_key_is_refused(s: Session) -> str:
    """A card answering without its key (a copied UID) is refused with BAD_CHALLENGE."""
    genuine = s.cloud.card(1)
    s.load(s.cloud.card_entry(genuine))
    _card_decides(s, genuine, Reason.BAD_CHALLENGE, "cloned UID, zero response", bytes(16))
    impostor = Keycard(uid=genuine.uid, key=s.cloud.card(2).key)
    _card_decides(s, impostor, Reason.BAD_CHALLENGE, "cloned UID, another card's key")
    _card_decides(s, genuine, Reason.BAD_CHALLENGE, "a short response", b"\x00")
    outputs = s.lock.answer_card(genuine.uid, genuine.respond(bytes(16)))
    if outputs.energised:
        raise CheckFailed("an answer to a challenge the lock never issued opened the door")
    return "zero, wrong-key, short and unsolicited answers refused"


@requirement(
    section="§7.3 step 2", tags=("card", "challenge", "replay", "security"), needs=("cards",)
)
def card_response_replay_is_refused(s: Session) -> str:
    """Each tap gets a fresh challenge; a recorded answer does not open the door again."""
    card = s.cloud.card(1)
    s.load(s.cloud.card_entry(card))
    first = s.lock.tap_card(card.uid).challenges
    recorded = card.respond(first[0][1])
    if not s.lock.answer_card(card.uid, recorded).energised:
        raise CheckFailed("the genuine card's answer did not open the door")
    second = s.lock.tap_card(card.uid).challenges
    if second[0][1] == first[0][1]:
        raise CheckFailed("the lock issued the same card challenge twice (§7.3 step 2)")
    if s.lock.answer_card(card.uid, recorded).energised:
        raise CheckFailed("a recorded card answer opened the door again")
    return "fresh challenge per tap; replayed answer refused"


@requirement(section="§5.3 rules 1-3", tags=("card", "decision", "clock-edges"), needs=("cards",))
def card_decision_at_validity_edges(s: Session) -> str:
    """Card decisions at validity edges: NOT_YET_VALID, GRANTED at from, EXPIRED at until."""
    card, revoked, unknown = s.cloud.card(1), s.cloud.card(2), s.cloud.card(3)
    s.load(
        s.cloud.card_entry(card, valid_from=T0 + 100, valid_until=T0 + 200),
        s.cloud.card_entry(revoked, status=CredentialStatus.REVOKED),
    )
    _card_decides(s, unknown, Reason.UNKNOWN_CREDENTIAL, "a card not in the list")
    _card_decides(s, revoked, Reason.REVOKED, "a revoked card")
    for at, reason in (
        (T0 + 99, Reason.NOT_YET_VALID),
        (T0 + 100, Reason.GRANTED),
        (T0 + 199, Reason.GRANTED),
        (T0 + 200, Reason.EXPIRED),
    ):
        _advance_to(s, at)
        _card_decides(s, card, reason, f"at valid_from{at - T0 - 100:+d}s")
    return "unknown, revoked, from-1, from, until-1, until: as §5.3"


@requirement(
    section="§5.3 (LOCKED_OUT: the lock's declared policy)",
    tags=("card", "decision", "lockout", "clock-edges"),
    needs=("cards",),
)
def card_lockout_at_its_edges(s: Session) -> str:
    """After its declared failures a card gets LOCKED_OUT until its declared duration ends.

    The right answer is refused too while the lock-out lasts, and granted at its end."""
    policy = s.reg.lockout
    if policy is None:
        raise NotApplicable("the lock declares no failure lock-out policy")
    card = s.cloud.card(1)
    s.load(s.cloud.card_entry(card))
    for n in range(policy.failures):
        _card_decides(s, card, Reason.BAD_CHALLENGE, f"wrong answer {n + 1}", bytes(16))
    locked_at = s.observe().lock_time
    _card_decides(s, card, Reason.LOCKED_OUT, "the right answer after the last failure")
    _advance_to(s, locked_at + policy.duration_s - 1)
    _card_decides(s, card, Reason.LOCKED_OUT, "one second before the lock-out ends")
    _advance_to(s, locked_at + policy.duration_s)
    _card_decides(s, card, Reason.GRANTED, "when the lock-out ends")
    return (
        f"{policy.failures} wrong answers: LOCKED_OUT up to +{policy.duration_s - 1}s,"
        f" GRANTED at +{policy.duration_s}s"
    )


@requirement(
    section="§5.3 rule 4", tags=("card", "decision", "schedule", "clock-edges"), needs=("cards",)
)
def card_decision_at_schedule_edges(s: Session) -> str:
    """Schedule windows are half-open in local minutes and weekdays (OUTSIDE_SCHEDULE)."""
    card = s.cloud.card(1)
    s.load(s.cloud.card_entry(card, schedule=(Window(days=0b1, start_minute=480, end_minute=540),)))
    for at, reason, what in (
        (MONDAY_0800 - 60, Reason.OUTSIDE_SCHEDULE, "Monday 07:59"),
        (MONDAY_0800, Reason.GRANTED, "Monday 08:00"),
        (MONDAY_0800 + 3599, Reason.GRANTED, "Monday 08:59:59"),
        (MONDAY_0800 + 3600, Reason.OUTSIDE_SCHEDULE, "Monday 09:00"),
        (MONDAY_0800 + DAY + 1800, Reason.OUTSIDE_SCHEDULE, "Tuesday 08:30"),
    ):
        _advance_to(s, at)
        _card_decides(s, card, reason, what)
    return "Mon 07:59 out, 08:00 in, 08:59:59 in, 09:00 out, Tue 08:30 out"


def _phone(
    s: Session,
    person: int,
    credential: dict[str, Any] | None = None,
    *,
    intent: Intent = Intent.UNLOCK,
) -> tuple[Reason, int, bool]:
    """Connect, authenticate as ``person`` (``credential``: fields of the mobile credential
    other than the defaults); return reason, open seconds, released."""
    now = s.observe().lock_time
    fields: dict[str, Any] = {"valid_from": now - DAY, "valid_until": now + 7 * DAY}
    fields.update(credential or {})
    mobile = s.cloud.mobile_credential(person, **fields)
    channel, hello = s.ble()
    outputs = s.deliver(
        s.cloud.auth(mobile, person, challenge=hello.challenge, intent=intent), channel
    )
    s.lock.disconnect(channel)
    result = s.unlock_result(outputs, f"AUTH of person {person}")
    return result.reason, result.open_seconds, bool(outputs.energised)


@requirement(section="§4.2.3, §4.3", tags=("phone", "decision"))
def phone_unlock_and_sync_only(s: Session) -> str:
    """UNLOCK opens (open_seconds > 0); SYNC_ONLY is GRANTED with open_seconds 0, door shut."""
    s.load(s.cloud.person_entry(1))
    reason, seconds, released = _phone(s, 1)
    if reason is not Reason.GRANTED or seconds == 0 or not released:
        raise CheckFailed(f"UNLOCK: got {reason.name}, open_seconds {seconds}, released {released}")
    reason, seconds, released = _phone(s, 1, intent=Intent.SYNC_ONLY)
    if reason is not Reason.GRANTED or seconds != 0 or released:
        raise CheckFailed(
            f"SYNC_ONLY: got {reason.name}, open_seconds {seconds}, released {released};"
            " expected GRANTED, 0, shut"
        )
    return "UNLOCK opens; SYNC_ONLY authenticates without opening"


@requirement(section="§4.2.3 steps 2-7", tags=("phone", "decision", "clock-edges"))
def phone_decision_reasons(s: Session) -> str:
    """Phone refusals carry their §4.2.3 reason: signature, expiry edge, scope, list."""
    s.load(
        *(s.cloud.person_entry(n) for n in (1, 2, 3, 5)),
        s.cloud.person_entry(6, status=CredentialStatus.REVOKED),
    )
    now = s.observe().lock_time
    cases: list[tuple[str, int, dict[str, Any], Reason]] = [
        ("forged credential", 1, {"key": s.cloud.phone_key(1)}, Reason.BAD_SIGNATURE),
        ("credential at valid_until-1", 2, {"valid_until": now + 1}, Reason.GRANTED),
        ("credential not yet valid", 3, {"valid_from": now + 60}, Reason.CREDENTIAL_EXPIRED),
        ("unknown person", 4, {}, Reason.UNKNOWN_CREDENTIAL),
        ("scope names another door", 5, {"scope_ids": [bytes(16)]}, Reason.WRONG_DOOR),
        ("revoked person", 6, {}, Reason.REVOKED),
    ]
    for what, person, fields, expected in cases:
        reason, _, released = _phone(s, person, fields)
        if reason is not expected or released != (expected is Reason.GRANTED):
            raise CheckFailed(f"{what}: expected {expected.name}, got {reason.name}")
    s.lock.advance(1)
    reason, _, _ = _phone(s, 2, {"valid_from": now - DAY, "valid_until": now + 1})
    if reason is not Reason.CREDENTIAL_EXPIRED:
        raise CheckFailed(
            f"credential at valid_until: expected CREDENTIAL_EXPIRED, got {reason.name}"
        )
    return "BAD_SIGNATURE, edge GRANTED/CREDENTIAL_EXPIRED, UNKNOWN, WRONG_DOOR, REVOKED"


@requirement(section="§4.2.3, §4.3, §6.4", tags=("phone", "audit", "decision"))
def phone_decisions_are_logged(s: Session) -> str:
    """Every phone decision, granted or refused, is a PHONE_DECISION event UNLOCK_RESULT names."""
    s.load(s.cloud.person_entry(1))
    now = s.observe().lock_time
    results = []
    for person in (1, 2):
        mobile = s.cloud.mobile_credential(person, valid_from=now - DAY, valid_until=now + DAY)
        channel, hello = s.ble()
        outputs = s.deliver(s.cloud.auth(mobile, person, challenge=hello.challenge), channel)
        s.lock.disconnect(channel)
        results.append((person, s.unlock_result(outputs, f"AUTH of person {person}")))
    events = {e.seq: e for e in s.audit()}
    for person, result in results:
        event = events.get(result.audit_seq)
        if (
            event is None
            or event.kind is not AuditEventKind.PHONE_DECISION
            or event.reason != result.reason
            or event.credential_id != s.cloud.person_id(person)
        ):
            raise CheckFailed(
                f"UNLOCK_RESULT {result.reason.name} names audit seq {result.audit_seq},"
                f" which holds {event!r}; expected that PHONE_DECISION (§4.3, §6.4)"
            )
    return "GRANTED and UNKNOWN_CREDENTIAL both logged, seq as UNLOCK_RESULT says"


@requirement(section="§4.1, §4.2.2", tags=("phone", "replay", "security"))
def phone_auth_replay_is_refused(s: Session) -> str:
    """An AUTH replayed later (another session, or twice in one) does not open the door."""
    s.load(s.cloud.person_entry(1))
    now = s.observe().lock_time
    mobile = s.cloud.mobile_credential(1, valid_from=now - DAY, valid_until=now + DAY)
    channel, hello = s.ble()
    frame = s.cloud.auth(mobile, 1, challenge=hello.challenge)
    if not s.deliver(frame, channel).energised:
        raise CheckFailed("the genuine AUTH did not open the door")
    again = s.deliver(frame, channel)
    s.lock.disconnect(channel)
    later, hello2 = s.ble()
    if hello2.challenge == hello.challenge:
        raise CheckFailed("two sessions got the same HELLO challenge (§4.1)")
    replayed = s.deliver(frame, later)
    for what, outputs in (("same session", again), ("next session", replayed)):
        results = [m.reason for m in s.messages(outputs) if isinstance(m, UnlockResult)]
        if outputs.energised or Reason.GRANTED in results:
            raise CheckFailed(f"AUTH replayed in the {what} was granted")
    return "replays in the same and the next session refused"


@requirement(section="§4.2.3 step 1, §4.2", tags=("phone", "decode", "malformed"))
def phone_malformed_auth_is_an_error(s: Session) -> str:
    """A malformed AUTH is answered with ERROR MALFORMED, no UNLOCK_RESULT, door shut."""
    s.load(s.cloud.person_entry(1))
    now = s.observe().lock_time
    mobile = s.cloud.mobile_credential(1, valid_from=now - DAY, valid_until=now + DAY)
    channel, hello = s.ble()
    good = s.cloud.auth(mobile, 1, challenge=hello.challenge)
    payload = good[8:-4]
    for what, bad in (
        ("unknown intent", bytes([9]) + payload[1:]),
        ("credential length past the end", payload[:1] + b"\xff\xff" + payload[3:]),
        ("trailing byte", payload + b"\x00"),
    ):
        outputs = s.deliver(_frame(good[3], bad), channel)
        results = [m for m in s.messages(outputs) if isinstance(m, UnlockResult)]
        if ErrorCode.MALFORMED not in s.errors(outputs) or results or outputs.energised:
            raise CheckFailed(f"AUTH with {what}: lock sent {s.describe(outputs)}")
    return "unknown intent, bad length, trailing byte: ERROR MALFORMED only"


def _frame(kind: int, payload: bytes) -> bytes:
    body = b"LK\x01" + bytes([kind]) + len(payload).to_bytes(4, "big") + payload
    return body + zlib.crc32(body).to_bytes(4, "big")


def _code_decides(s: Session, code: str, expected: Reason, what: str) -> None:
    outputs = s.lock.press_keys(code)
    event = _last_decision(s, AuditEventKind.DOORCODE_DECISION, what)
    opened = bool(outputs.energised)
    if event.reason != expected or opened != (expected is Reason.GRANTED):
        raise CheckFailed(
            f"{what}: expected {expected.name}, got {Reason(event.reason).name}"
            f" with the door {'released' if opened else 'shut'}"
        )


@requirement(section="§7.2 (validity)", tags=("doorcode", "clock-edges"), needs=("keypad",))
def doorcode_daily_window(s: Session) -> str:
    """A DAILY code opens in its own local day only: GRANTED to end-1, BAD_CODE at end."""
    now = s.observe().lock_time
    code = issue_doorcode(
        secret=s.cloud.doorcode_secret,
        door_id=s.cloud.door_id,
        kind=DoorcodeKind.DAILY,
        at=now,
        slot=7,
    )
    _, end = doorcode_window(DoorcodeKind.DAILY, now)
    _code_decides(s, code, Reason.GRANTED, "DAILY code in its day")
    _code_decides(s, "9" + code[1:], Reason.BAD_CODE, "unknown kind digit")
    _advance_to(s, end - 1)
    _code_decides(s, code, Reason.GRANTED, "DAILY code at its last second")
    _advance_to(s, end)
    _code_decides(s, code, Reason.BAD_CODE, "DAILY code the next day")
    return "in day, last second: GRANTED; next day, bad kind: BAD_CODE"


@requirement(section="§7.2 (validity)", tags=("doorcode", "clock-edges"), needs=("keypad",))
def doorcode_quarter_hour_window(s: Session) -> str:
    """A QUARTER_HOUR code for window w opens in w and w+1 only, never before w."""
    now = s.observe().lock_time
    kind = DoorcodeKind.QUARTER_HOUR
    start, end = doorcode_window(kind, now)

    def code(at: int) -> str:
        return issue_doorcode(
            secret=s.cloud.doorcode_secret, door_id=s.cloud.door_id, kind=kind, at=at, slot=3
        )

    _code_decides(s, code(end), Reason.BAD_CODE, "the next window's code, early")
    _code_decides(s, code(now), Reason.GRANTED, "code in window w")
    _advance_to(s, end + 900 - 1)
    _code_decides(s, code(start), Reason.GRANTED, "code of w at the last second of w+1")
    _advance_to(s, end + 900)
    _code_decides(s, code(start), Reason.BAD_CODE, "code of w in w+2")
    return "early: BAD_CODE; w, end of w+1: GRANTED; w+2: BAD_CODE"
