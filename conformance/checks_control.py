"""Requirements on control messages and the audit log (§4.1, §6.4-§6.7).

Theory of operation: the lock's clock, trusted key epoch and audit log are read back
after each stimulus: the clock through :meth:`~conformance.lut.LockUnderTest.observe`
(no time passes between two readings unless the check advances it, so a step is
measured exactly), the epoch through ``observe`` and through which signatures the lock
then accepts, the audit log through lock-signed AUDIT_BATCHes on a fresh MQTT session.
"""

from __future__ import annotations

from protocol import AuditEventKind, ErrorCode, Intent

from .cloud import derive
from .lut import MQTT
from .registry import CheckFailed, requirement
from .session import DAY, Session


def _clock_step(s: Session, frame: bytes) -> tuple[int, list[ErrorCode]]:
    before = s.observe().lock_time
    errors = s.errors(s.deliver(frame))
    return s.observe().lock_time - before, errors


@requirement(section="§4.1", tags=("hello", "session"))
def hello_reports_the_lock_state(s: Session) -> str:
    """HELLO names the door, its list version, key epoch, audit head, time and version 1."""
    s.load(s.cloud.card_entry(s.cloud.card(1)))
    seen = s.observe()
    _, hello = s.ble()
    problems = [
        name
        for name, ok in (
            ("door_id", hello.door_id == s.cloud.door_id),
            ("list_version", hello.list_version == seen.list_version),
            ("key_epoch", hello.key_epoch == seen.key_epoch),
            ("audit_head_seq", hello.audit_head_seq >= seen.audit_head_seq),
            ("lock_time", abs(hello.lock_time - seen.lock_time) <= 1),
            ("supported_versions", 1 in hello.supported_versions),
        )
        if not ok
    ]
    if problems:
        raise CheckFailed(f"HELLO disagrees with the lock's state in: {', '.join(problems)}")
    return "door, version, epoch, audit head, time and versions agree"


@requirement(section="§4.1 list_age_s", tags=("hello", "freeze", "security"))
def hello_reports_the_list_age(s: Session) -> str:
    """HELLO's list_age_s grows while no bundle arrives and restarts when one is applied."""
    s.load(s.cloud.card_entry(s.cloud.card(1)))
    s.lock.advance(3 * DAY)
    channel, stale = s.ble()
    s.lock.disconnect(channel)
    if not 3 * DAY - 5 <= stale.list_age_s <= 3 * DAY + 5:
        raise CheckFailed(
            f"three days after its last bundle the lock reports list_age_s {stale.list_age_s}"
            f" (expected about {3 * DAY}): a withholding relay would go unnoticed"
        )
    s.load(s.cloud.card_entry(s.cloud.card(2)))
    _, fresh = s.ble()
    if fresh.list_age_s > 5:
        raise CheckFailed(f"just after a bundle the lock reports list_age_s {fresh.list_age_s}")
    return f"{stale.list_age_s} s after three idle days; {fresh.list_age_s} s after a bundle"


@requirement(section="§6.6 step 5", tags=("time", "clock", "security"))
def time_sync_step_is_bounded(s: Session) -> str:
    """An unbound TIME_SYNC moves the clock by at most the lock's declared step."""
    bound = s.reg.max_clock_step_s
    step, errors = _clock_step(s, s.cloud.time_sync(s.observe().lock_time + 60))
    if step != 60 or errors:
        raise CheckFailed(f"a +60 s TIME_SYNC moved the clock by {step} s (errors {errors})")
    for jump in (30 * DAY, -30 * DAY):
        step, _ = _clock_step(s, s.cloud.time_sync(s.observe().lock_time + jump))
        if abs(step) > bound:
            raise CheckFailed(
                f"a TIME_SYNC asking {jump:+d} s moved the clock by {step:+d} s;"
                f" the lock declares a bound of {bound} s (§6.6 step 5)"
            )
    return f"+60 s applied; ±30 days limited to the declared {bound} s"


@requirement(section="§6.6, §6.7 step 7, §6.4", tags=("time", "key-rotation", "audit"))
def control_changes_are_logged(s: Session) -> str:
    """An accepted TIME_SYNC logs TIME_CORRECTED (old time); a rotation logs KEY_ROTATED."""
    before = s.observe().lock_time
    s.deliver(s.cloud.time_sync(before + 40))
    s.deliver(s.cloud.rotation(1))
    events = s.audit()
    corrected = [e for e in events if e.kind is AuditEventKind.TIME_CORRECTED]
    rotated = [e for e in events if e.kind is AuditEventKind.KEY_ROTATED]
    if len(corrected) != 1 or corrected[0].detail != before:
        raise CheckFailed(
            f"after one TIME_SYNC from {before}: TIME_CORRECTED events {corrected}"
            " (expected one, detail = the lock time before the correction)"
        )
    if len(rotated) != 1 or rotated[0].detail != 1:
        raise CheckFailed(f"after a rotation to epoch 1: KEY_ROTATED events {rotated}")
    return "TIME_CORRECTED with the old time; KEY_ROTATED with epoch 1"


@requirement(section="§6.6 step 3", tags=("time", "clock", "replay", "security"))
def time_sync_replayed_sequence_is_stale(s: Session) -> str:
    """A TIME_SYNC whose sequence is not above the last accepted is refused with STALE."""
    first = s.cloud.time_sync(s.observe().lock_time + 30)
    step, _ = _clock_step(s, first)
    if step != 30:
        raise CheckFailed(f"the first TIME_SYNC moved the clock by {step} s, not 30")
    for what, frame in (
        ("replayed TIME_SYNC", first),
        ("same sequence, new time", s.cloud.time_sync(s.observe().lock_time + 90, sequence=1)),
    ):
        step, errors = _clock_step(s, frame)
        if step != 0 or ErrorCode.STALE not in errors:
            raise CheckFailed(f"{what}: clock moved {step} s, errors {errors}; expected STALE")
    return "replay and reused sequence: ERROR STALE, clock kept"


@requirement(section="§6.6 steps 1-2", tags=("time", "clock", "security"))
def time_sync_for_another_door_or_key_is_refused(s: Session) -> str:
    """A TIME_SYNC for another door (WRONG_DOOR) or by another key (AUTH_FAILED) is refused."""
    target = s.observe().lock_time + 120
    for what, frame, code in (
        (
            "another door",
            s.cloud.time_sync(target, door_id=derive("another", 16)),
            ErrorCode.WRONG_DOOR,
        ),
        (
            "a stranger's key",
            s.cloud.time_sync(target, key=s.cloud.phone_key(9)),
            ErrorCode.AUTH_FAILED,
        ),
    ):
        step, errors = _clock_step(s, frame)
        if step != 0 or code not in errors:
            raise CheckFailed(f"TIME_SYNC from {what}: clock moved {step} s, errors {errors}")
    return "ERROR WRONG_DOOR / AUTH_FAILED, clock kept"


@requirement(section="§6.6 step 4", tags=("time", "clock", "replay", "security"))
def time_sync_challenge_is_single_use(s: Session) -> str:
    """A challenge-bound TIME_SYNC is accepted once; reused or unknown challenges are STALE."""
    channel, hello = s.ble()
    now = s.observe().lock_time
    step, errors = _clock_step(s, s.cloud.time_sync(now + 45, challenge=hello.challenge))
    if step != 45:
        raise CheckFailed(f"a bound TIME_SYNC on a fresh challenge moved {step} s ({errors})")
    for what, challenge in (("reused", hello.challenge), ("never issued", derive("nope", 16))):
        step, errors = _clock_step(
            s, s.cloud.time_sync(s.observe().lock_time + 45, challenge=challenge)
        )
        if step != 0 or ErrorCode.STALE not in errors:
            raise CheckFailed(f"{what} challenge: clock moved {step} s, errors {errors}")
    s.lock.disconnect(channel)
    return "fresh challenge once; reused and unknown: ERROR STALE"


@requirement(section="§6.7", tags=("key-rotation", "security"))
def key_rotation_moves_trust_forward(s: Session) -> str:
    """After rotating to epoch 1 the lock trusts only the new key."""
    s.expect_refused(s.cloud.rotation(2), ErrorCode.KEY_ROTATION_ORDER, "rotation to epoch 2 at 0")
    outputs = s.deliver(s.cloud.rotation(1))
    if s.observe().key_epoch != 1:
        raise CheckFailed(f"rotation to epoch 1 not taken ({s.describe(outputs)})")
    repeat = s.deliver(s.cloud.rotation(1))
    if s.errors(repeat) or s.observe().key_epoch != 1:
        raise CheckFailed(f"a repeated rotation is not the idempotent no-op ({s.describe(repeat)})")
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(1)))
    s.expect_refused(s.cloud.bundle(0), ErrorCode.AUTH_FAILED, "bundle signed by the old key")
    s.cloud.epoch = 1
    s.expect_applied(s.cloud.bundle(0), "bundle signed by the epoch-1 key")
    return "skip refused; epoch 1 taken once; old key refused, new key accepted"


@requirement(section="§6.7 steps 3-6", tags=("key-rotation", "security"))
def key_rotation_order_and_proofs(s: Session) -> str:
    """Rotations out of order (KEY_ROTATION_ORDER) or with bad signatures (AUTH_FAILED) fail."""
    stranger = s.cloud.phone_key(5)
    for what, frame, code in (
        ("to epoch 3 at epoch 0", s.cloud.rotation(3), ErrorCode.KEY_ROTATION_ORDER),
        ("signed by a stranger", s.cloud.rotation(1, signer=stranger), ErrorCode.AUTH_FAILED),
        ("bad proof of possession", s.cloud.rotation(1, prover=7), ErrorCode.AUTH_FAILED),
    ):
        s.expect_refused(frame, code, f"rotation {what}")
    s.deliver(s.cloud.rotation(1))
    s.expect_refused(s.cloud.rotation(3), ErrorCode.KEY_ROTATION_ORDER, "epoch 3 at epoch 1")
    return "ERROR KEY_ROTATION_ORDER / AUTH_FAILED, epoch kept"


def _activity(s: Session, count: int) -> None:
    """Make ``count`` logged decisions (phone unlocks: no optional capability needed)."""
    s.load(s.cloud.person_entry(1))
    now = s.observe().lock_time
    mobile = s.cloud.mobile_credential(1, valid_from=now - DAY, valid_until=now + DAY)
    for _ in range(count):
        channel, hello = s.ble()
        s.deliver(
            s.cloud.auth(mobile, 1, challenge=hello.challenge, intent=Intent.SYNC_ONLY), channel
        )
        s.lock.disconnect(channel)


@requirement(section="§6.4 (gapless rule)", tags=("audit", "security"))
def audit_batches_are_gapless_and_signed(s: Session) -> str:
    """Audit batches are lock-signed and numbered 1, 2, 3, … without gaps up to the head."""
    _activity(s, 4)
    events = s.audit()
    seqs = [e.seq for e in events]
    head = s.observe().audit_head_seq
    if not seqs or seqs != list(range(1, len(seqs) + 1)) or seqs[-1] != head:
        raise CheckFailed(f"audit sequence numbers {seqs} with head {head}: expected 1..{head}")
    return f"{len(seqs)} events, 1..{head}, signatures verify"


@requirement(section="§6.5", tags=("audit", "ack"))
def audit_ack_releases_acknowledged_events(s: Session) -> str:
    """An AUDIT_ACK frees events up to its seq; unacknowledged events are sent again."""
    _activity(s, 3)
    first = [e.seq for e in s.audit()]
    if [e.seq for e in s.audit()] != first:
        raise CheckFailed("a new session did not send the unacknowledged events again (§6.4)")
    keep = first[len(first) // 2]
    s.deliver(s.cloud.audit_ack(keep - 1), MQTT)
    after = [e.seq for e in s.audit()]
    if after != [n for n in first if n >= keep]:
        raise CheckFailed(f"after AUDIT_ACK up to {keep - 1}: the lock sends {after}")
    return f"ack up to {keep - 1} released 1..{keep - 1}; the rest sent again"


@requirement(section="§6.5", tags=("audit", "ack", "security"))
def audit_ack_forged_releases_nothing(s: Session) -> str:
    """A forged or misaddressed AUDIT_ACK is refused and frees no event."""
    _activity(s, 2)
    first = [e.seq for e in s.audit()]
    head = first[-1]
    for what, frame, code in (
        (
            "a stranger's key",
            s.cloud.audit_ack(head, key=s.cloud.phone_key(3)),
            ErrorCode.AUTH_FAILED,
        ),
        (
            "another door",
            s.cloud.audit_ack(head, door_id=derive("another", 16)),
            ErrorCode.WRONG_DOOR,
        ),
    ):
        errors = s.errors(s.deliver(frame))
        if code not in errors:
            raise CheckFailed(f"AUDIT_ACK from {what}: expected ERROR {code.name}, got {errors}")
        if [e.seq for e in s.audit()][: len(first)] != first:
            raise CheckFailed(f"AUDIT_ACK from {what} freed events")
    return "ERROR AUTH_FAILED / WRONG_DOOR; no event freed"
