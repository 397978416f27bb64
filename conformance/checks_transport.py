"""Requirements on BLE segmentation and on power loss (§7.1.3, §6.2.2 atomicity).

Theory of operation: segmentation checks cut a real bundle frame with
:func:`protocol.segmentation.segment_frame` at the smallest MTU (23) and play the
sender's side of §7.1.3: drop the link half-way, reconnect, learn the lock's resume
point from the ack it notifies after a duplicate, and resume. The power-cut check
re-provisions a lock for every flash write k of one bundle apply, cuts the power during
write k, restarts, and requires the list to be exactly the old one or exactly the new
one (by version *and* digest). Lock state that must survive a plain power cycle is
checked separately.
"""

from __future__ import annotations

from protocol import AuditEventKind, ReceiptStatus
from protocol.segmentation import SegmentAck, segment_frame

from .lut import Channel, LockUnderTest, Outputs
from .registry import CheckFailed, requirement
from .session import Session

MTU = 23
MAX_CUTS = 64
LANDED = (0.0, 0.5, 1.0)
"""How much of the cut write reaches the flash."""


def _segmented_bundle(s: Session, transfer_id: int) -> tuple[list[bytes], bytes]:
    s.cloud.commit(*(s.cloud.card_entry(s.cloud.card(n)) for n in range(1, 5)))
    frame = s.cloud.bundle(0)
    return segment_frame(frame, mtu=MTU, transfer_id=transfer_id), frame


def _send(lock: LockUnderTest, channel: Channel, segments: list[bytes]) -> Outputs:
    outputs = Outputs()
    for segment in segments:
        outputs += lock.deliver_segment(channel, segment)
    return outputs


@requirement(
    section="§7.1.3 (resume)", tags=("ble", "segmentation", "idempotence"), needs=("segments",)
)
def segmentation_resumes_after_a_dropped_link(s: Session) -> str:
    """A transfer cut by a dropped link resumes from the ack and is applied exactly once."""
    segments, _ = _segmented_bundle(s, transfer_id=0x1234)
    half = len(segments) // 2
    first, _ = s.ble()
    partial = _send(s.lock, first, segments[:half])
    if s.receipts(partial):
        raise CheckFailed("the lock answered before the transfer was complete")
    s.lock.disconnect(first)
    second, _ = s.ble()
    probe = s.lock.deliver_segment(second, segments[0])
    acks = [SegmentAck.from_bytes(a) for a in probe.acks]
    if not acks or acks[-1].transfer_id != 0x1234 or acks[-1].next_index != half:
        raise CheckFailed(
            f"after reconnecting, a duplicate segment 0 got acks {acks}; expected the resume"
            f" point (transfer 0x1234, next_index {half}) (§7.1.2, §7.1.3)"
        )
    rest = _send(s.lock, second, segments[half:])
    receipt = s.one_receipt(rest, "the resumed transfer")
    if receipt.status is not ReceiptStatus.OK or receipt.list_version != 1:
        raise CheckFailed(f"resumed bundle: RECEIPT {receipt.status.name} v{receipt.list_version}")
    late = s.lock.deliver_segment(second, segments[-1])
    if s.receipts(late) or s.errors(late):
        raise CheckFailed(f"a late duplicate segment was answered: {s.describe(late)} (§7.1.3)")
    s.lock.disconnect(second)
    applied = [e for e in s.audit() if e.kind is AuditEventKind.BUNDLE_APPLIED]
    if len(applied) != 1:
        raise CheckFailed(f"{len(applied)} BUNDLE_APPLIED events for one resumed transfer")
    return f"{len(segments)} segments, cut at {half}, resumed from the ack, applied once"


@requirement(section="§7.1.3 rules 1-2", tags=("ble", "segmentation"), needs=("segments",))
def segmentation_faults_are_not_acted_on(s: Session) -> str:
    """Out-of-order or never-started segments complete nothing and leave the transfer intact."""
    segments, _ = _segmented_bundle(s, transfer_id=7)
    channel, _ = s.ble()
    orphan = s.lock.deliver_segment(channel, segment_frame(b"x" * 40, mtu=MTU, transfer_id=9)[1])
    start = _send(s.lock, channel, segments[:3])
    skipped = s.lock.deliver_segment(channel, segments[5])
    for what, outputs in (("orphan segment", orphan), ("out-of-order segment", skipped)):
        if s.receipts(outputs) or s.errors(outputs):
            raise CheckFailed(f"{what} was answered with a frame: {s.describe(outputs)}")
    rest = _send(s.lock, channel, segments[3:])
    receipt = s.one_receipt(start + rest, "the transfer after the faults")
    if receipt.list_version != 1:
        raise CheckFailed(f"the transfer after the faults left the lock at v{receipt.list_version}")
    return "orphan and out-of-order segments ignored; the transfer still completes"


@requirement(
    section="§6.2.2 (atomicity)",
    tags=("power-cut", "atomicity", "flash", "security"),
    needs=("power_cut_at_write",),
)
def power_cut_during_update_keeps_old_or_new(s: Session) -> str:
    """A power cut at any flash write of an apply leaves the old list or the new one."""
    outcomes: dict[int, int] = {}
    cuts = 0
    for landed in LANDED:
        for k in range(1, MAX_CUTS + 1):
            version = _cut_apply(s if cuts == 0 else Session.start(s.lock), k, landed)
            cuts += 1
            if version is None:
                break
            outcomes[version] = outcomes.get(version, 0) + 1
        else:
            raise CheckFailed(f"the apply still wrote to flash after {MAX_CUTS} cuts")
    if not outcomes:
        raise CheckFailed("the apply made no flash write a power cut could hit")
    told = ", ".join(f"v{v}: {n}" for v, n in sorted(outcomes.items()))
    return f"{sum(outcomes.values())} cuts, each left a whole list ({told})"


def _cut_apply(run: Session, k: int, landed: float) -> int | None:
    """Apply v1, then v1→v2 with the power cut at write ``k``; the version after restart
    (None when the apply finished before write ``k``)."""
    cards = [run.cloud.card_entry(run.cloud.card(n)) for n in range(1, 7)]
    run.load(*cards[:3], what="v1")
    old = run.cloud.current
    run.cloud.commit(*cards[3:], removals=[cards[0].key])
    new = run.cloud.current
    frame = run.cloud.bundle(1)
    run.lock.arm_power_cut(k, landed)
    if not run.deliver(frame).power_lost:
        return None
    run.lock.restart()
    seen = run.observe()
    held = {old.version: old.digest, new.version: new.digest}
    if held.get(seen.list_version) != seen.list_digest:
        raise CheckFailed(
            f"power cut at flash write {k} ({landed:.0%} of it written): after restart the"
            f" lock holds v{seen.list_version} with a digest that is neither the old list's"
            " nor the new one's"
        )
    return seen.list_version


@requirement(section="§6.2.2, §6.6, §6.7", tags=("power-cut", "flash"))
def power_cycle_keeps_committed_state(s: Session) -> str:
    """List, key epoch, clock sequence and audit survive a power cycle."""
    s.load(s.cloud.card_entry(s.cloud.card(1)))
    s.deliver(s.cloud.rotation(1))
    s.cloud.epoch = 1
    sync = s.cloud.time_sync(s.observe().lock_time + 30)
    s.deliver(sync)
    before = s.observe()
    s.lock.power_cut()
    s.lock.restart()
    after = s.observe()
    if (after.list_version, after.list_digest, after.key_epoch) != (
        before.list_version,
        before.list_digest,
        before.key_epoch,
    ):
        raise CheckFailed(f"after a power cycle the lock reports {after}; before: {before}")
    if after.audit_head_seq < before.audit_head_seq:
        raise CheckFailed("the audit head went back after a power cycle (§6.4)")
    if not s.errors(s.deliver(sync)):
        raise CheckFailed("a TIME_SYNC accepted before the power cycle was accepted again")
    return "list, epoch, audit head and time-sync sequence kept"
