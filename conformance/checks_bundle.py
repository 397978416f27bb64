"""Requirements on applying bundles (``docs/protocol.md`` §6.2.2, §6.3, §8).

Theory of operation: each check loads the lock through real bundles built by the
suite's cloud, then offers one bundle that the lock must apply, refuse, or treat as a
duplicate, and judges by three things the lock cannot fake: the signed RECEIPT (verified
with the identity key the lock registered), the ERROR code, and the list version and
digest the lock reports afterwards. Crafted bundles are genuinely cloud-signed and
sealed to the lock, so only the one rule under test can refuse them.
"""

from __future__ import annotations

import zlib

from protocol import AuditEventKind, CredentialList, ErrorCode, MessageType, ReceiptStatus
from protocol.crypto import public_bytes, x25519_private_from_seed

from .cloud import derive
from .registry import CheckFailed, NotApplicable, requirement
from .session import Session


def _recrc(frame: bytes) -> bytes:
    body = frame[:-4]
    return body + zlib.crc32(body).to_bytes(4, "big")


def _reframe(frame: bytes, payload: bytes) -> bytes:
    return _recrc(frame[:4] + len(payload).to_bytes(4, "big") + payload + bytes(4))


@requirement(section="§6.2.2 step 11, §6.3", tags=("bundle", "receipt"))
def bundle_is_applied_and_receipted(s: Session) -> str:
    """A valid bundle is applied and answered by a RECEIPT OK signed with the lock's key."""
    receipt = s.load(s.cloud.card_entry(s.cloud.card(1)), what="bundle 0→1")
    if receipt.door_id != s.cloud.door_id or receipt.requested_version != 1:
        raise CheckFailed(
            f"receipt names door {receipt.door_id.hex()} and requested version"
            f" {receipt.requested_version}; expected this door and 1 (§6.3)"
        )
    return "RECEIPT OK v1, lock-signed, digest matches"


@requirement(section="§6.2.2 step 5", tags=("bundle", "rollback", "security"))
def bundle_rollback_is_refused(s: Session) -> str:
    """An older bundle (rollback) is refused with ROLLBACK: versions only move forward."""
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(1)))
    old = s.cloud.bundle(0)
    s.expect_applied(old, "bundle 0→1")
    s.load(s.cloud.card_entry(s.cloud.card(2)), what="bundle 1→2")
    s.expect_refused(old, ErrorCode.ROLLBACK, "replayed bundle 0→1 at v2")
    return "replay of 0→1 at v2: ERROR ROLLBACK, v2 kept"


@requirement(section="§6.2.2 step 6, §6.3", tags=("bundle", "base-range"))
def bundle_base_above_version_is_refused(s: Session) -> str:
    """A bundle whose base is above the lock's version gets RECEIPT BASE_VERSION; list kept."""
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(1)))
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(2)))
    before = s.observe()
    outputs = s.deliver(s.cloud.bundle(1))
    receipt = s.one_receipt(outputs, "bundle 1→2 at v0")
    if receipt.status is not ReceiptStatus.BASE_VERSION or receipt.list_version != 0:
        raise CheckFailed(
            f"bundle 1→2 at v0: expected RECEIPT BASE_VERSION at v0, got"
            f" {receipt.status.name} at v{receipt.list_version}"
        )
    s.expect_unchanged(before, "bundle 1→2 at v0")
    return "RECEIPT BASE_VERSION, v0 kept"


@requirement(section="§6.2.2 (delta rules)", tags=("bundle", "base-range"))
def bundle_applies_anywhere_in_its_range(s: Session) -> str:
    """A bundle from base b to t applies to a lock at any version v with b ≤ v < t."""
    s.load(s.cloud.card_entry(s.cloud.card(1)), what="bundle 0→1")
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(2)))
    s.cloud.commit(removals=[s.cloud.card_entry(s.cloud.card(1)).key])
    s.expect_applied(s.cloud.bundle(0), "bundle 0→3 at v1")
    return "bundle 0→3 applied at v1"


@requirement(section="§6.2.2 step 10", tags=("bundle", "digest", "atomicity", "security"))
def bundle_digest_is_checked_before_commit(s: Session) -> str:
    """A bundle whose result differs from the signed target digest is refused; list kept."""
    s.load(s.cloud.card_entry(s.cloud.card(1)), what="bundle 0→1")
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(2)))
    changes = s.cloud.history.delta(1)
    wrong = derive("not the digest of any list")
    frame = s.cloud.crafted_bundle(changes, base=1, target=2, digest=wrong)
    s.expect_refused(frame, ErrorCode.DIGEST_MISMATCH, "bundle 1→2 with a wrong digest")
    return "ERROR DIGEST_MISMATCH, v1 kept"


@requirement(section="§6.2.2 step 5", tags=("bundle", "digest"))
def bundle_same_version_other_digest_is_refused(s: Session) -> str:
    """A bundle to the lock's own version but another digest is refused with DIGEST_MISMATCH."""
    s.load(s.cloud.card_entry(s.cloud.card(1)), what="bundle 0→1")
    other = CredentialList.empty(s.cloud.door_id).with_changes(
        version=1, upserts=[s.cloud.card_entry(s.cloud.card(9))], removals=[]
    )
    frame = s.cloud.crafted_bundle([], base=0, target=1, digest=other.digest)
    s.expect_refused(frame, ErrorCode.DIGEST_MISMATCH, "another v1")
    return "ERROR DIGEST_MISMATCH, v1 kept"


@requirement(section="§6.2.2 (idempotence), §6.3", tags=("bundle", "idempotence"))
def bundle_reapply_is_idempotent(s: Session) -> str:
    """A duplicate bundle changes nothing and yields a byte-identical RECEIPT."""
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(1)))
    frame = s.cloud.bundle(0)
    first = s.receipt_frames(s.deliver(frame))
    s.lock.advance(60)
    second = s.receipt_frames(s.deliver(frame))
    if len(first) != 1 or first != second:
        raise CheckFailed(
            f"the duplicate's RECEIPT differs from the first ({len(first)} then"
            f" {len(second)} receipts; bytes equal: {first == second})"
        )
    s.expect_state(1, s.cloud.current.digest, "after the duplicate")
    applied = [e for e in s.audit() if e.kind is AuditEventKind.BUNDLE_APPLIED]
    if len(applied) != 1:
        raise CheckFailed(
            f"the audit log holds {len(applied)} BUNDLE_APPLIED events for one bundle"
            " delivered twice: the duplicate was applied again (§6.2.2 idempotence)"
        )
    return "same RECEIPT bytes, one BUNDLE_APPLIED"


@requirement(section="§6.2.2 step 4", tags=("bundle", "door-binding", "security"))
def bundle_for_another_door_is_refused(s: Session) -> str:
    """A bundle addressed to another door is refused (WRONG_DOOR), even if it would open."""
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(1)))
    other_door = derive("another door", 16)
    crafted = s.cloud.crafted_bundle(
        s.cloud.history.delta(0),
        base=0,
        target=1,
        digest=s.cloud.current.digest,
        door_id=other_door,
    )
    s.expect_refused(crafted, ErrorCode.WRONG_DOOR, "bundle naming another door")
    stranger = public_bytes(x25519_private_from_seed(derive("another door sealing")))
    taken = s.cloud.crafted_bundle(
        s.cloud.history.delta(0),
        base=0,
        target=1,
        digest=s.cloud.current.digest,
        door_id=other_door,
        sealed_to=stranger,
    )
    s.expect_refused(
        taken, (ErrorCode.WRONG_DOOR, ErrorCode.AUTH_FAILED), "door B's bundle at door A"
    )
    return "ERROR WRONG_DOOR; door B's sealed bundle refused"


@requirement(section="§6.2.2 step 2, §3.2", tags=("bundle", "signature", "security"))
def bundle_altered_by_relay_is_refused(s: Session) -> str:
    """A bundle altered in any signed byte is refused with AUTH_FAILED."""
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(1)))
    frame = s.cloud.bundle(0)
    for offset, what in ((8 + 27, "target version"), (8 + 100, "ciphertext"), (-6, "signature")):
        altered = bytearray(frame)
        altered[offset] ^= 0x01
        s.expect_refused(_recrc(bytes(altered)), ErrorCode.AUTH_FAILED, f"altered {what}")
    return "altered header, ciphertext, signature: ERROR AUTH_FAILED"


@requirement(section="§6.2.2 step 2, §6.7", tags=("bundle", "signature", "security"))
def bundle_signed_by_another_key_is_refused(s: Session) -> str:
    """A bundle signed by any key but the lock's current cloud key is refused (AUTH_FAILED)."""
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(1)))
    forged = s.cloud.bundle(0, key=s.cloud.phone_key(666))
    s.expect_refused(forged, ErrorCode.AUTH_FAILED, "bundle signed by a stranger")
    future = s.cloud.bundle(0, key=s.cloud.key_at(1), epoch=1)
    s.expect_refused(future, ErrorCode.AUTH_FAILED, "bundle signed by the epoch-1 key at epoch 0")
    return "ERROR AUTH_FAILED"


@requirement(section="§6.2.2 (atomicity)", tags=("bundle", "partial", "atomicity", "security"))
def bundle_partial_delivery_is_refused(s: Session) -> str:
    """A bundle cut short by a relay is refused whole; the lock keeps its list."""
    s.cloud.commit(*(s.cloud.card_entry(s.cloud.card(n)) for n in range(1, 5)))
    frame = s.cloud.bundle(0)
    payload = frame[8:-4]
    for cut in (len(payload) // 2, len(payload) - 65, len(payload) - 1):
        refused = (ErrorCode.AUTH_FAILED, ErrorCode.MALFORMED)
        s.expect_refused(_reframe(frame, payload[:cut]), refused, f"bundle cut at {cut} bytes")
    return "three cuts refused, v0 kept"


@requirement(section="§8, §6.2.2 step 9", tags=("bundle", "capacity", "bounds"))
def bundle_over_capacity_is_refused_whole(s: Session) -> str:
    """A bundle that would overflow the store gets RECEIPT CAPACITY_EXCEEDED; list kept."""
    capacity = s.reg.capacity
    if capacity > 20_000:
        raise NotApplicable(f"capacity {capacity} is too large to fill in a conformance run")
    s.load(s.cloud.card_entry(s.cloud.card(0)), what="bundle 0→1")
    s.cloud.commit(*(s.cloud.card_entry(s.cloud.card(n)) for n in range(1, capacity + 1)))
    before = s.observe()
    receipt = s.one_receipt(s.deliver(s.cloud.bundle(1)), f"bundle to {capacity + 1} entries")
    if receipt.status is not ReceiptStatus.CAPACITY_EXCEEDED:
        raise CheckFailed(
            f"a bundle to {capacity + 1} entries (capacity {capacity}): expected RECEIPT"
            f" CAPACITY_EXCEEDED, got {receipt.status.name} at v{receipt.list_version}"
        )
    s.expect_unchanged(before, "over-capacity bundle")
    return f"capacity {capacity}: RECEIPT CAPACITY_EXCEEDED, v1 kept"


@requirement(section="§4.4, §9 (authentication)", tags=("auth-failed", "opacity", "security"))
def auth_failures_are_opaque(s: Session) -> str:
    """Every AUTH_FAILED ERROR is the same bytes, whichever check failed (§4.4)."""
    s.cloud.commit(s.cloud.card_entry(s.cloud.card(1)))
    good = s.cloud.bundle(0)
    stranger = public_bytes(x25519_private_from_seed(derive("a stranger's sealing key")))
    offers = {
        "bad bundle signature": s.cloud.bundle(0, key=s.cloud.phone_key(1)),
        "bundle sealed to another key": s.cloud.crafted_bundle(
            s.cloud.history.delta(0),
            base=0,
            target=1,
            digest=s.cloud.current.digest,
            sealed_to=stranger,
        ),
        "altered ciphertext": _recrc(good[:-70] + bytes([good[-70] ^ 1]) + good[-69:]),
        "forged time sync": s.cloud.time_sync(s.cloud.lock_time, key=s.cloud.phone_key(3)),
    }
    errors: dict[str, bytes] = {}
    for what, frame in offers.items():
        outputs = s.deliver(frame)
        found = [f.frame for f in outputs.frames if f.frame[3] == MessageType.ERROR]
        if ErrorCode.AUTH_FAILED not in s.errors(outputs) or len(found) != 1:
            raise CheckFailed(f"{what}: expected one ERROR AUTH_FAILED, got {s.describe(outputs)}")
        errors[what] = found[0][8 + 3 : -4]  # detail length and detail (about_type varies)
    if len(set(errors.values())) != 1:
        told = "; ".join(f"{w}: {d[1:].decode(errors='replace')!r}" for w, d in errors.items())
        raise CheckFailed(f"AUTH_FAILED details differ, revealing which check failed: {told}")
    return f"{len(errors)} different authentication failures, one identical ERROR detail"
