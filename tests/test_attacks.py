"""One test per attack of the security model (``/work/shared/DESIGN.md``, "Security model").

Each test is named after the attack it plays (python-tuf style) and asserts the
required outcome: a typed :class:`protocol.errors.ProtocolError` and the victim's
state unchanged. The relay (phone, network) holds no trusted key: it may read,
drop, replay, truncate, reorder and rewrite bytes, and recompute unkeyed checksums,
but it can sign nothing as the cloud or as a lock.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    CHALLENGE_SIZE,
    DEFAULT_LIMITS,
    MAGIC,
    NO_CHALLENGE,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    ApplyOutcome,
    AuditAck,
    AuditBatch,
    AuditEvent,
    AuditEventKind,
    AuditGapError,
    AuditLedger,
    Auth,
    AuthenticationError,
    CapacityError,
    CloudKeyState,
    Credential,
    CredentialHistory,
    CredentialKind,
    CredentialList,
    DigestMismatchError,
    ErrorCode,
    ErrorMessage,
    Frame,
    Hello,
    Intent,
    KeyRotation,
    KeyRotationOrderError,
    Limits,
    Message,
    MessageType,
    MobileCredential,
    ProtocolError,
    Reason,
    Receipt,
    RollbackError,
    ScopeKind,
    SealedBundle,
    TimeSync,
    TooLargeError,
    UnlockResult,
    Upsert,
    UsageError,
    WrongDoorError,
    apply_bundle,
    decode_message,
    decrypt_changes,
    make_receipt,
    seal_bundle,
)
from protocol.bundle import Remove, encode_changes
from protocol.crypto import SignContext, open_sealed, public_bytes, seal, sign
from protocol.errors import (
    BadLengthError,
    DecodeError,
    TruncatedError,
    UnsupportedVersionError,
)
from protocol.keycard import Keycard, verify_card_response
from simulators.fixture import Door, World, fixed_bytes

WORLD = World()
DOOR_A = WORLD.door("attack door A")
DOOR_B = WORLD.door("attack door B")
PROPERTY_ID = fixed_bytes("attack property", 16)
CLOUD_PUBLIC = WORLD.cloud_key.public_key()
RELAY_KEY = Ed25519PrivateKey.from_private_bytes(fixed_bytes("relay's own signing key"))
CAPACITY = 10
NOW = 1_704_067_200  # 2024-01-01T00:00:00Z

CARD_1 = Keycard(uid=bytes.fromhex("04a1b2c3d4e5f6"), key=fixed_bytes("card 1 key", 16))
CARD_2 = Keycard(uid=bytes.fromhex("04a1b2c3d4e5f7"), key=fixed_bytes("card 2 key", 16))
PERSON_ID = fixed_bytes("person 1", 16)
CHALLENGE = fixed_bytes("session challenge 1", CHALLENGE_SIZE)
LATER_CHALLENGE = fixed_bytes("session challenge 2", CHALLENGE_SIZE)
XOR_VALUES = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF)
"""Every single-bit flip and the all-bits flip of a byte."""


# --- helpers ---------------------------------------------------------------------------


def keycard_entry(card: Keycard) -> Credential:
    return Credential(kind=CredentialKind.KEYCARD, credential_id=card.uid, card_key=card.key)


def person_entry(person_id: bytes) -> Credential:
    return Credential(kind=CredentialKind.PERSON, credential_id=person_id)


def history_of(door_id: bytes, *commits: list[Credential]) -> CredentialHistory:
    history = CredentialHistory(door_id)
    for upserts in commits:
        history.commit(upserts=upserts)
    return history


def bundle_from(
    history: CredentialHistory, base: int, *, door: Door = DOOR_A, label: str = "b"
) -> SealedBundle:
    return history.bundle(
        base,
        door_public=door.sealing.public_key(),
        cloud_key=WORLD.cloud_key,
        key_epoch=0,
        ephemeral=WORLD.ephemeral(label),
    )


def lock_apply(
    current: CredentialList, payload: bytes, *, door: Door = DOOR_A, capacity: int = CAPACITY
) -> ApplyOutcome:
    """What the lock does with a BUNDLE payload from the air."""
    return apply_bundle(
        current, payload, cloud_public=CLOUD_PUBLIC, door_private=door.sealing, capacity=capacity
    )


def lock_apply_frame(current: CredentialList, data: bytes) -> ApplyOutcome:
    """What the lock does with a frame from the air while it expects a bundle."""
    frame = Frame.from_bytes(data)
    if frame.type is not MessageType.BUNDLE:
        message = decode_message(data)
        raise AssertionError(f"a rewritten bundle frame decoded as {message!r}")
    return lock_apply(current, frame.payload)


def snapshot(held: CredentialList) -> tuple[object, ...]:
    """Everything observable about a list, recomputed from scratch."""
    return (held.door_id, held.version, held.to_bytes(), dict(held.items()))


Change = tuple[int, int, bytes]
"""``(position, xor, mutated bytes)``."""


def single_byte_changes(data: bytes, *, stop: int | None = None) -> Iterator[Change]:
    """Every one-byte change of ``data[:stop]``: each position xor each of XOR_VALUES."""
    for position in range(len(data) if stop is None else stop):
        for xor in XOR_VALUES:
            mutated = bytearray(data)
            mutated[position] ^= xor
            yield position, xor, bytes(mutated)


def with_fixed_crc(frame: bytes) -> bytes:
    """A relay can recompute the frame's unkeyed CRC-32 after rewriting it."""
    return frame[:-4] + zlib.crc32(frame[:-4]).to_bytes(4, "big")


def assert_every_change_rejected(
    changes: Iterator[Change], attempt: Callable[[bytes], object], held: CredentialList
) -> int:
    """Each change must raise a typed remote-data error and leave ``held`` as it was."""
    before, count = snapshot(held), 0
    for position, xor, mutated in changes:
        with pytest.raises(ProtocolError) as caught:
            attempt(mutated)
        assert not isinstance(caught.value, UsageError), (position, xor, caught.value)
        assert snapshot(held) == before, (position, xor)
        count += 1
    return count


OneChange = tuple[CredentialList, SealedBundle]


@pytest.fixture(scope="module")
def one_change() -> OneChange:
    """A lock at version 1 (card 1) and the signed, sealed one-change bundle 1 -> 2 (card 2)."""
    history = history_of(DOOR_A.door_id, [keycard_entry(CARD_1)])
    held = history.current
    history.commit(upserts=[keycard_entry(CARD_2)])
    return held, bundle_from(history, 1)


def test_one_change_bundle_applies_and_fits_one_ble_write(one_change: OneChange) -> None:
    held, bundle = one_change
    outcome = lock_apply(held, bundle.to_bytes())
    assert outcome.changed and outcome.held.version == 2
    assert outcome.held.lookup(CredentialKind.KEYCARD, CARD_2.uid) == keycard_entry(CARD_2)
    assert len(bundle.to_frame()) <= 244


# --- relay reads or alters a bundle ----------------------------------------------------


def test_relay_reads_bundle_learns_nothing(one_change: OneChange) -> None:
    _, bundle = one_change
    payload = bundle.to_bytes()
    for secret in (CARD_2.key, CARD_2.uid):
        assert secret not in bundle.ciphertext
        assert secret not in payload
        assert secret not in bundle.to_frame()
    with pytest.raises(AuthenticationError):
        decrypt_changes(bundle, door_private=DOOR_B.sealing)
    with pytest.raises(AuthenticationError):
        open_sealed(
            DOOR_B.sealing, bundle.ephemeral_public, bundle.ciphertext, bundle.associated_data()
        )
    assert decrypt_changes(bundle, door_private=DOOR_A.sealing) == (Upsert(keycard_entry(CARD_2)),)


def test_bundle_single_byte_change_rejected(one_change: OneChange) -> None:
    held, bundle = one_change
    payload = bundle.to_bytes()
    tried = assert_every_change_rejected(
        single_byte_changes(payload), lambda p: lock_apply(held, p), held
    )
    assert tried == len(payload) * len(XOR_VALUES)


def test_bundle_frame_single_byte_change_rejected(one_change: OneChange) -> None:
    held, bundle = one_change
    frame = bundle.to_frame()
    tried = assert_every_change_rejected(
        single_byte_changes(frame), lambda f: lock_apply_frame(held, f), held
    )
    assert tried == len(frame) * len(XOR_VALUES)


def test_bundle_frame_single_byte_change_with_recomputed_crc_rejected(
    one_change: OneChange,
) -> None:
    held, bundle = one_change
    frame = bundle.to_frame()
    changes = (
        (position, xor, with_fixed_crc(mutated))
        for position, xor, mutated in single_byte_changes(frame, stop=len(frame) - 4)
    )
    assert_every_change_rejected(changes, lambda f: lock_apply_frame(held, f), held)


def test_bundle_resigned_by_relay_rejected(one_change: OneChange) -> None:
    held, bundle = one_change
    forged = bundle.signed(RELAY_KEY)
    with pytest.raises(AuthenticationError):
        lock_apply(held, forged.to_bytes())


# --- rollback and wrong door -------------------------------------------------------------


def test_bundle_for_door_a_rejected_at_door_b() -> None:
    for_a = history_of(DOOR_A.door_id, [keycard_entry(CARD_1)])
    bundle = bundle_from(for_a, 0, door=DOOR_A)
    at_b = CredentialList.empty(DOOR_B.door_id)
    with pytest.raises(WrongDoorError):
        lock_apply(at_b, bundle.to_bytes(), door=DOOR_B)
    # The door id is also bound into the AEAD data: even a header rewritten to name
    # door B (as if the signature check were skipped) does not open at door A's key.
    readdressed = SealedBundle(
        door_id=DOOR_B.door_id,
        key_epoch=bundle.key_epoch,
        base_version=bundle.base_version,
        target_version=bundle.target_version,
        target_digest=bundle.target_digest,
        ephemeral_public=bundle.ephemeral_public,
        ciphertext=bundle.ciphertext,
    )
    with pytest.raises(AuthenticationError):
        decrypt_changes(readdressed, door_private=DOOR_A.sealing)
    assert snapshot(at_b) == snapshot(CredentialList.empty(DOOR_B.door_id))


def test_bundle_rollback_rejected() -> None:
    history = history_of(DOOR_A.door_id, [keycard_entry(CARD_1)])
    old_bundle = bundle_from(history, 0, label="old")
    history.commit(removals=[keycard_entry(CARD_1).key])
    held = lock_apply(CredentialList.empty(DOOR_A.door_id), bundle_from(history, 0).to_bytes()).held
    assert held.version == 2 and len(held) == 0
    before = snapshot(held)
    with pytest.raises(RollbackError) as caught:
        lock_apply(held, old_bundle.to_bytes())
    assert (caught.value.current, caught.value.offered) == (2, 1)
    assert snapshot(held) == before


# --- receipts ----------------------------------------------------------------------------


def test_forged_receipt_rejected() -> None:
    held = history_of(DOOR_A.door_id, [keycard_entry(CARD_1)]).current
    lock_public = DOOR_A.identity.public_key()
    genuine = make_receipt(DOOR_A.identity, held, requested_version=1)
    assert Receipt.verified_from_bytes(genuine.to_bytes(), lock_public) == genuine
    # The relay claims the door already holds version 5.
    claim = Receipt(
        door_id=DOOR_A.door_id, requested_version=5, list_version=5, list_digest=held.digest
    )
    for forged in (
        claim.signed(RELAY_KEY),
        Receipt(**{**vars(claim), "signature": bytes(64)}),
        Receipt(**{**vars(claim), "signature": genuine.signature}),
    ):
        with pytest.raises(AuthenticationError):
            Receipt.verified_from_bytes(forged.to_bytes(), lock_public)
    edited = bytearray(genuine.to_bytes())
    edited[16 + 4 + 3] ^= 0x04  # list_version 1 -> 5
    with pytest.raises(AuthenticationError):
        Receipt.verified_from_bytes(bytes(edited), lock_public)


def test_receipt_signed_by_other_lock_rejected() -> None:
    held = history_of(DOOR_A.door_id, [keycard_entry(CARD_1)]).current
    by_b = make_receipt(DOOR_B.identity, held, requested_version=1)  # names door A
    with pytest.raises(AuthenticationError):
        Receipt.verified_from_bytes(by_b.to_bytes(), DOOR_A.identity.public_key())
    # A signature for another purpose by the right lock does not pass as a receipt either.
    misused = Receipt(
        **{
            **vars(by_b),
            "signature": sign(DOOR_A.identity, SignContext.AUDIT_BATCH, by_b.body_bytes()),
        }
    )
    with pytest.raises(AuthenticationError):
        Receipt.verified_from_bytes(misused.to_bytes(), DOOR_A.identity.public_key())


# --- audit -------------------------------------------------------------------------------


def events(first: int, count: int) -> tuple[AuditEvent, ...]:
    return tuple(
        AuditEvent(
            seq=seq,
            time=NOW + seq,
            kind=AuditEventKind.CARD_DECISION,
            reason=Reason.REVOKED,
            credential_id=CARD_1.uid,
        )
        for seq in range(first, first + count)
    )


def batch_payload(first: int, count: int, *, door: Door = DOOR_A) -> bytes:
    batch = AuditBatch(door_id=door.door_id, events=events(first, count))
    return batch.signed(door.identity).to_bytes()


def hand_built_batch_body(door_id: bytes, seqs: list[int]) -> bytes:
    """An AUDIT_BATCH body built byte by byte, independently of the codec (§6.4)."""
    body = door_id + len(seqs).to_bytes(2, "big")
    for seq in seqs:
        body += seq.to_bytes(4, "big") + (NOW + seq).to_bytes(4, "big")
        body += bytes([AuditEventKind.CARD_DECISION, Reason.REVOKED, len(CARD_1.uid)])
        body += CARD_1.uid
        body += bytes(4)
    return body


def new_ledger() -> AuditLedger:
    return AuditLedger(door_id=DOOR_A.door_id, lock_key=DOOR_A.identity.public_key())


def test_hand_built_audit_batch_matches_codec() -> None:
    body = hand_built_batch_body(DOOR_A.door_id, [1, 2, 3])
    assert batch_payload(1, 3) == body + sign(DOOR_A.identity, SignContext.AUDIT_BATCH, body)


def test_audit_batch_with_gap_rejected() -> None:
    with pytest.raises(AuditGapError):
        AuditBatch(door_id=DOOR_A.door_id, events=(*events(1, 2), *events(4, 1)))
    # Even a batch the lock itself signed with a hole in it does not decode.
    body = hand_built_batch_body(DOOR_A.door_id, [1, 2, 4])
    payload = body + sign(DOOR_A.identity, SignContext.AUDIT_BATCH, body)
    ledger = new_ledger()
    with pytest.raises(AuditGapError) as caught:
        ledger.accept(payload)
    assert (caught.value.expected, caught.value.actual) == (3, 4)
    assert ledger.next_seq == 1


def test_audit_event_edited_rejected() -> None:
    payload = batch_payload(1, 3)
    ledger = new_ledger()
    for position, xor, mutated in single_byte_changes(payload):
        with pytest.raises(ProtocolError):
            ledger.accept(mutated)
        assert ledger.next_seq == 1, (position, xor)
    # Rewriting event 2's decision from REVOKED to GRANTED, however the relay re-signs it.
    edited = bytearray(payload)
    reason_of_event_2 = 16 + 2 + (4 + 4 + 1 + 1 + 1 + len(CARD_1.uid) + 4) + 9
    assert edited[reason_of_event_2] == Reason.REVOKED
    edited[reason_of_event_2] = Reason.GRANTED
    for signature_key in (None, RELAY_KEY, DOOR_B.identity):
        candidate = (
            bytes(edited)
            if signature_key is None
            else bytes(edited[:-64])
            + sign(signature_key, SignContext.AUDIT_BATCH, bytes(edited[:-64]))
        )
        with pytest.raises(AuthenticationError):
            ledger.accept(candidate)
    assert ledger.accept(payload) == events(1, 3)


def test_audit_batch_dropped_between_batches_detected() -> None:
    ledger = new_ledger()
    assert ledger.accept(batch_payload(1, 3)) == events(1, 3)
    with pytest.raises(AuditGapError) as caught:
        ledger.accept(batch_payload(7, 3))  # batch 4..6 dropped by the relay
    assert (caught.value.expected, caught.value.actual) == (4, 7)
    assert ledger.next_seq == 4
    assert ledger.accept(batch_payload(4, 3)) == events(4, 3)
    assert ledger.accept(batch_payload(4, 3)) == ()  # a replayed batch adds nothing
    assert ledger.accept(batch_payload(7, 3)) == events(7, 3)
    # A batch naming door B (even one signed by lock A) is not door A's log.
    misrouted = AuditBatch(door_id=DOOR_B.door_id, events=events(10, 1)).signed(DOOR_A.identity)
    with pytest.raises(WrongDoorError):
        ledger.accept(misrouted.to_bytes())
    with pytest.raises(AuthenticationError):
        ledger.accept(batch_payload(10, 1, door=DOOR_B))
    assert ledger.next_seq == 10


# --- partial install and downgrade ---------------------------------------------------------


def test_partial_bundle_rejected() -> None:
    history = history_of(DOOR_A.door_id, [keycard_entry(CARD_1), keycard_entry(CARD_2)])
    empty = CredentialList.empty(DOOR_A.door_id)
    bundle = bundle_from(history, 0)
    payload = bundle.to_bytes()
    before = snapshot(empty)
    for cut in range(len(payload)):
        with pytest.raises(ProtocolError):
            lock_apply(empty, payload[:cut])
    # Truncated ciphertext under a valid cloud signature: the AEAD still refuses it.
    fields = {k: v for k, v in vars(bundle).items() if k != "signature"}
    for cut in (1, 16, len(bundle.ciphertext) - 16):
        short = SealedBundle(**{**fields, "ciphertext": bundle.ciphertext[:-cut]})
        with pytest.raises(AuthenticationError):
            lock_apply(empty, short.signed(WORLD.cloud_key).to_bytes())
    # Correctly signed and sealed, but the change set omits one change.
    missing_one = seal_bundle(
        [Upsert(keycard_entry(CARD_1))],
        door_id=DOOR_A.door_id,
        door_public=DOOR_A.sealing.public_key(),
        base_version=0,
        target_version=1,
        target_digest=history.current.digest,
        key_epoch=0,
        cloud_key=WORLD.cloud_key,
        ephemeral=WORLD.ephemeral("partial"),
    )
    with pytest.raises(DigestMismatchError):
        lock_apply(empty, missing_one.to_bytes())
    # All changes, but a signed target digest that does not match them.
    wrong_digest = seal_bundle(
        history.delta(0),
        door_id=DOOR_A.door_id,
        door_public=DOOR_A.sealing.public_key(),
        base_version=0,
        target_version=1,
        target_digest=bytes(32),
        key_epoch=0,
        cloud_key=WORLD.cloud_key,
        ephemeral=WORLD.ephemeral("wrong digest"),
    )
    with pytest.raises(DigestMismatchError):
        lock_apply(empty, wrong_digest.to_bytes())
    assert snapshot(empty) == before
    assert lock_apply(empty, payload).held.digest == history.current.digest


def test_downgrade_version_byte_rejected(one_change: OneChange) -> None:
    held, bundle = one_change
    frame = bundle.to_frame()
    assert frame[:2] == MAGIC and frame[2] == PROTOCOL_VERSION
    for version in (0, 2, 0xFF):
        downgraded = with_fixed_crc(frame[:2] + bytes([version]) + frame[3:])
        with pytest.raises(UnsupportedVersionError) as caught:
            Frame.from_bytes(downgraded)
        assert caught.value.version == version
        assert caught.value.supported == SUPPORTED_VERSIONS
    with pytest.raises(UsageError):
        Frame(type=MessageType.BUNDLE, payload=bundle.to_bytes(), version=0)
    # The version is inside what the cloud signs: every context names "LK1", and a
    # signature over the same body under another version's context does not verify.
    tag = b"LK%d " % PROTOCOL_VERSION
    assert all(context.value.startswith(tag) for context in SignContext)
    assert len({context.value for context in SignContext}) == len(SignContext)
    for other_version in (b"LK0 ", b"LK2 "):
        context = other_version + SignContext.BUNDLE.value[len(tag) :]
        resigned = SealedBundle(
            **{**vars(bundle), "signature": WORLD.cloud_key.sign(context + bundle.body_bytes())}
        )
        with pytest.raises(AuthenticationError):
            lock_apply(held, resigned.to_bytes())
    # No plaintext fallback: a bundle payload carrying the plaintext changes is refused.
    plaintext_payload = (
        bundle.body_bytes()[: -len(bundle.ciphertext)]
        + encode_changes([Upsert(keycard_entry(CARD_2))])
        + bundle.signature
    )
    with pytest.raises(AuthenticationError):
        lock_apply(held, plaintext_payload)


# --- cloud key rotation --------------------------------------------------------------------


def cloud_state() -> CloudKeyState:
    return CloudKeyState(epoch=0, public_key=public_bytes(WORLD.cloud_key_at(0)))


def rotation(new_epoch: int, *, signer: Ed25519PrivateKey | None = None) -> bytes:
    return KeyRotation.create(
        current_key=signer or WORLD.cloud_key_at(new_epoch - 1),
        new_key=WORLD.cloud_key_at(new_epoch),
        new_epoch=new_epoch,
    ).to_bytes()


def test_key_rotation_out_of_order_rejected() -> None:
    state = cloud_state()
    with pytest.raises(KeyRotationOrderError) as caught:
        state.apply_rotation(rotation(2))  # skips epoch 1
    assert (caught.value.current_epoch, caught.value.offered_epoch) == (0, 2)
    at_1 = state.apply_rotation(rotation(1))
    at_2 = at_1.apply_rotation(rotation(2))
    assert at_2 == CloudKeyState(epoch=2, public_key=public_bytes(WORLD.cloud_key_at(2)))
    assert at_2.apply_rotation(rotation(2)) == at_2  # the idempotent no-op
    with pytest.raises(KeyRotationOrderError):
        at_2.apply_rotation(rotation(1))  # replay of an older rotation
    # A rotation to the current epoch with another key is not a no-op.
    rival = KeyRotation.create(current_key=WORLD.cloud_key_at(1), new_key=RELAY_KEY, new_epoch=2)
    with pytest.raises(KeyRotationOrderError):
        at_2.apply_rotation(rival.to_bytes())
    assert state == cloud_state()


def test_key_rotation_signed_by_wrong_key_rejected() -> None:
    state = cloud_state()
    for signer in (RELAY_KEY, WORLD.cloud_key_at(1), WORLD.cloud_key_at(2)):
        with pytest.raises(AuthenticationError):
            state.apply_rotation(rotation(1, signer=signer))
    payload = bytearray(rotation(1))
    payload[4 + 5] ^= 0x01  # the announced key
    with pytest.raises(AuthenticationError):
        state.apply_rotation(bytes(payload))
    assert state == cloud_state()


def test_key_rotation_without_possession_proof_rejected() -> None:
    state = cloud_state()
    new_public = public_bytes(WORLD.cloud_key_at(1))
    epoch_1 = (1).to_bytes(4, "big")
    proofs = (
        bytes(64),  # none at all
        sign(RELAY_KEY, SignContext.KEY_POSSESSION, epoch_1 + new_public),  # by another key
        sign(  # for another epoch
            WORLD.cloud_key_at(1), SignContext.KEY_POSSESSION, (2).to_bytes(4, "big") + new_public
        ),
        sign(WORLD.cloud_key_at(1), SignContext.KEY_ROTATION, epoch_1 + new_public),  # context
    )
    for proof in proofs:
        unproven = KeyRotation(new_epoch=1, new_public_key=new_public, possession_signature=proof)
        with pytest.raises(AuthenticationError):
            state.apply_rotation(unproven.signed(WORLD.cloud_key_at(0)).to_bytes())
    assert state == cloud_state()


# --- time sync -------------------------------------------------------------------------------


def test_time_sync_forged_rejected() -> None:
    genuine = TimeSync(
        door_id=DOOR_A.door_id, key_epoch=0, sequence=7, cloud_time=NOW, challenge=CHALLENGE
    ).signed(WORLD.cloud_key)
    assert TimeSync.verified_from_bytes(genuine.to_bytes(), CLOUD_PUBLIC) == genuine
    claim = {**vars(genuine), "cloud_time": NOW - 30 * 86400}
    forgeries = (
        TimeSync(**claim).signed(RELAY_KEY),
        TimeSync(**claim).signed(DOOR_A.identity),
        TimeSync(**claim),  # the old signature on a new time
        TimeSync(
            **{
                **claim,
                "signature": sign(
                    WORLD.cloud_key, SignContext.RECEIPT, TimeSync(**claim).body_bytes()
                ),
            }
        ),
        TimeSync(**{**vars(genuine), "door_id": DOOR_B.door_id}),
        TimeSync(**{**vars(genuine), "challenge": LATER_CHALLENGE}),
        TimeSync(**{**vars(genuine), "sequence": 8}),
        TimeSync(**{**vars(genuine), "challenge": NO_CHALLENGE}),
    )
    for forged in forgeries:
        with pytest.raises(AuthenticationError):
            TimeSync.verified_from_bytes(forged.to_bytes(), CLOUD_PUBLIC)
    for _, _, mutated in single_byte_changes(genuine.to_bytes()):
        with pytest.raises(AuthenticationError):
            TimeSync.verified_from_bytes(mutated, CLOUD_PUBLIC)


# --- phones ----------------------------------------------------------------------------------


PHONE_KEY = Ed25519PrivateKey.from_private_bytes(fixed_bytes("phone 1 key"))


def mobile_credential(
    *,
    signer: Ed25519PrivateKey = WORLD.cloud_key,
    doors: tuple[Door, ...] = (DOOR_A,),
    **overrides: Any,
) -> MobileCredential:
    fields = {
        "key_epoch": 0,
        "credential_id": fixed_bytes("mobile credential 1", 16),
        "person_id": PERSON_ID,
        "phone_public_key": public_bytes(PHONE_KEY),
        "valid_from": NOW,
        "valid_until": NOW + 7 * 86400,
        "scope_kind": ScopeKind.DOORS,
        "scope_ids": tuple(d.door_id for d in doors),
    }
    return MobileCredential(**{**fields, **overrides}).signed(signer)


def lock_checks_auth(
    frame: bytes, *, door: Door = DOOR_A, challenge: bytes = CHALLENGE, now: int = NOW
) -> bool:
    """The lock's checks of an AUTH frame, in order; True if it would unlock."""
    auth = decode_message(frame)
    assert isinstance(auth, Auth)
    auth.credential.verify(CLOUD_PUBLIC)
    auth.verify(door_id=door.door_id, challenge=challenge)
    return auth.credential.is_valid_at(now) and auth.credential.opens(
        door_id=door.door_id, property_id=PROPERTY_ID
    )


def auth_frame(
    credential: MobileCredential,
    *,
    door: Door = DOOR_A,
    challenge: bytes = CHALLENGE,
    intent: Intent = Intent.UNLOCK,
    phone_key: Ed25519PrivateKey = PHONE_KEY,
) -> bytes:
    return Auth.create(
        credential=credential,
        phone_key=phone_key,
        door_id=door.door_id,
        challenge=challenge,
        intent=intent,
    ).to_frame()


def test_genuine_auth_accepted() -> None:
    assert lock_checks_auth(auth_frame(mobile_credential()))


def test_mobile_credential_forged_rejected() -> None:
    genuine = mobile_credential()
    forgeries = (
        mobile_credential(signer=RELAY_KEY),
        mobile_credential(signer=PHONE_KEY),
        mobile_credential(signer=WORLD.cloud_key_at(1)),  # right cloud, wrong epoch's key
        MobileCredential(**{**vars(genuine), "valid_until": NOW + 365 * 86400}),
        MobileCredential(**{**vars(genuine), "scope_ids": (DOOR_A.door_id, DOOR_B.door_id)}),
        MobileCredential(
            **{**vars(genuine), "scope_kind": ScopeKind.PROPERTY, "scope_ids": (PROPERTY_ID,)}
        ),
        MobileCredential(**{**vars(genuine), "phone_public_key": public_bytes(RELAY_KEY)}),
    )
    for forged in forgeries:
        phone_key = RELAY_KEY if forged.phone_public_key == public_bytes(RELAY_KEY) else PHONE_KEY
        with pytest.raises(AuthenticationError):
            lock_checks_auth(auth_frame(forged, phone_key=phone_key))
        with pytest.raises(AuthenticationError):
            MobileCredential.verified_from_bytes(forged.to_bytes(), CLOUD_PUBLIC)
    for _, _, mutated in single_byte_changes(genuine.to_bytes()):
        with pytest.raises(ProtocolError) as caught:
            MobileCredential.verified_from_bytes(mutated, CLOUD_PUBLIC)
        assert not isinstance(caught.value, UsageError)
    # A genuine credential presented by a phone that does not hold its key.
    with pytest.raises(AuthenticationError):
        lock_checks_auth(auth_frame(genuine, phone_key=RELAY_KEY))


def test_auth_replayed_with_new_challenge_rejected() -> None:
    recorded = auth_frame(mobile_credential(), challenge=CHALLENGE)
    assert lock_checks_auth(recorded, challenge=CHALLENGE)
    with pytest.raises(AuthenticationError):
        lock_checks_auth(recorded, challenge=LATER_CHALLENGE)
    # The relay cannot upgrade a sync-only proof into an unlock.
    sync_only = bytearray(auth_frame(mobile_credential(), intent=Intent.SYNC_ONLY))
    assert sync_only[8] == Intent.SYNC_ONLY
    sync_only[8] = Intent.UNLOCK
    with pytest.raises(AuthenticationError):
        lock_checks_auth(with_fixed_crc(bytes(sync_only)))
    # An expired credential replayed later verifies but opens nothing.
    assert not lock_checks_auth(recorded, now=NOW + 7 * 86400)


def test_auth_for_other_door_rejected() -> None:
    both = mobile_credential(doors=(DOOR_A, DOOR_B))
    made_for_a = auth_frame(both, door=DOOR_A)
    with pytest.raises(AuthenticationError):
        lock_checks_auth(made_for_a, door=DOOR_B)
    # A credential scoped to door A, used with a fresh proof at door B, opens nothing there.
    only_a = mobile_credential(doors=(DOOR_A,))
    assert not lock_checks_auth(auth_frame(only_a, door=DOOR_B), door=DOOR_B)


# --- bounds ----------------------------------------------------------------------------------


def test_capacity_overflow_refused_whole() -> None:
    people = [person_entry(fixed_bytes(f"capacity person {i}", 16)) for i in range(5)]
    history = history_of(DOOR_A.door_id, people[:2])
    held = history.current
    history.commit(upserts=people[2:])
    before = snapshot(held)
    with pytest.raises(CapacityError) as caught:
        lock_apply(held, bundle_from(history, 1).to_bytes(), capacity=4)
    assert (caught.value.needed, caught.value.capacity) == (5, 4)
    assert snapshot(held) == before
    # Capacity counts the list after removals: the same size with one removal fits.
    history.commit(removals=[people[0].key])
    outcome = lock_apply(held, bundle_from(history, 1).to_bytes(), capacity=4)
    assert len(outcome.held) == 4 and outcome.held.digest == history.current.digest


def test_oversized_frame_rejected(one_change: OneChange) -> None:
    held, bundle = one_change
    huge = DEFAULT_LIMITS.max_frame_payload + 1
    header_only = MAGIC + bytes([PROTOCOL_VERSION, MessageType.BUNDLE]) + huge.to_bytes(4, "big")
    for data in (
        header_only + bytes(4),
        with_fixed_crc(header_only + bytes(4)),
        MAGIC + bytes([PROTOCOL_VERSION, MessageType.BUNDLE]) + b"\xff" * 4 + bytes(4),
    ):
        with pytest.raises(TooLargeError):
            Frame.from_bytes(data)
    small = Limits(max_frame_payload=100)
    with pytest.raises(TooLargeError):
        Frame.from_bytes(bundle.to_frame(), limits=small)
    with pytest.raises(TooLargeError):
        apply_bundle(
            held,
            bundle.to_bytes(),
            cloud_public=CLOUD_PUBLIC,
            door_private=DOOR_A.sealing,
            capacity=CAPACITY,
            limits=small,
        )
    # A length field that promises more than arrives is a typed error, not a wait or a crash.
    frame = bundle.to_frame()
    with pytest.raises((BadLengthError, TruncatedError)):
        Frame.from_bytes(frame[:-1])
    # A signed bundle whose sealed change count exceeds the cap is refused before parsing.
    fewer = Limits(max_list_entries=1)
    two = history_of(DOOR_A.door_id, [keycard_entry(CARD_1), keycard_entry(CARD_2)])
    with pytest.raises(TooLargeError):
        apply_bundle(
            CredentialList.empty(DOOR_A.door_id),
            bundle_from(two, 0).to_bytes(),
            cloud_public=CLOUD_PUBLIC,
            door_private=DOOR_A.sealing,
            capacity=CAPACITY,
            limits=fewer,
        )
    too_many = AuditBatch(door_id=DOOR_A.door_id, events=events(1, 3)).signed(DOOR_A.identity)
    with pytest.raises(TooLargeError):
        AuditBatch.verified_from_bytes(
            too_many.to_bytes(), DOOR_A.identity.public_key(), limits=Limits(max_audit_events=2)
        )
    wide = mobile_credential(doors=(DOOR_A, DOOR_B))
    with pytest.raises(TooLargeError):
        MobileCredential.from_bytes(wide.to_bytes(), limits=Limits(max_scope_doors=1))
    with pytest.raises(TooLargeError):
        CredentialList.from_bytes(DOOR_A.door_id + bytes(4) + (10**6).to_bytes(4, "big"))


def test_malformed_changes_under_valid_seal_rejected() -> None:
    """Hostile plaintext sealed and signed correctly (a compromised cloud aside) is typed."""
    empty = CredentialList.empty(DOOR_A.door_id)
    good = encode_changes([Upsert(keycard_entry(CARD_1)), Remove(CredentialKind.PERSON, PERSON_ID)])
    history = history_of(DOOR_A.door_id, [keycard_entry(CARD_1)])
    for plaintext in (good[:-1], good + b"\x00", b"\xff" * 4, b"", good[:4] + b"\x09" + good[5:]):
        header = SealedBundle(
            door_id=DOOR_A.door_id,
            key_epoch=0,
            base_version=0,
            target_version=1,
            target_digest=history.current.digest,
            ephemeral_public=bytes(32),
            ciphertext=bytes(16),
        )
        eph, ciphertext = seal(
            DOOR_A.sealing.public_key(),
            plaintext,
            header.associated_data(),
            WORLD.ephemeral("hostile"),
        )
        sealed = SealedBundle(**{**vars(header), "ephemeral_public": eph, "ciphertext": ciphertext})
        with pytest.raises(DecodeError):
            lock_apply(empty, sealed.signed(WORLD.cloud_key).to_bytes())


# --- keycards --------------------------------------------------------------------------------


def test_card_uid_clone_rejected() -> None:
    held = history_of(DOOR_A.door_id, [keycard_entry(CARD_1)]).current
    entry = held.lookup(CredentialKind.KEYCARD, CARD_1.uid)
    assert entry is not None

    def lock_accepts(uid: bytes, respond: Callable[[bytes], bytes], challenge: bytes) -> bool:
        found = held.lookup(CredentialKind.KEYCARD, uid)
        return found is not None and verify_card_response(
            found.card_key, uid, challenge, respond(challenge)
        )

    assert lock_accepts(CARD_1.uid, CARD_1.respond, CHALLENGE)
    recorded = CARD_1.respond(CHALLENGE)
    clones = (
        Keycard(uid=CARD_1.uid, key=fixed_bytes("cloner's guess", 16)).respond,
        CARD_2.respond,  # another genuine card, relabelled with card 1's UID
        lambda _challenge: recorded,  # a response sniffed at an earlier tap
        lambda _challenge: bytes(16),
        lambda challenge: challenge,
        lambda _challenge: b"",
    )
    for respond in clones:
        assert not lock_accepts(CARD_1.uid, respond, LATER_CHALLENGE)
    # Card 1's genuine answer does not pass for card 2's UID either.
    both = history_of(DOOR_A.door_id, [keycard_entry(CARD_1), keycard_entry(CARD_2)]).current
    card_2 = both.lookup(CredentialKind.KEYCARD, CARD_2.uid)
    assert card_2 is not None
    assert not verify_card_response(card_2.card_key, CARD_2.uid, CHALLENGE, recorded)


def test_hostile_bytes_never_escape_as_untyped_errors() -> None:
    """Frames of every type with junk payloads: a typed error or a parse, never a crash."""
    for message_type in MessageType:
        for junk in (b"", b"\x00", b"\xff" * 7, bytes(range(200)), b"\xff" * 300):
            data = Frame(type=message_type, payload=junk).to_bytes()
            try:
                decode_message(data)
            except ProtocolError as exc:
                assert not isinstance(exc, UsageError), (message_type, junk, exc)
            except Exception as exc:  # pragma: no cover - the failure we are looking for
                raise AssertionError(f"{message_type.name} {junk!r}: {exc!r}") from exc


def every_message_type(one_change: OneChange) -> list[Message]:
    _, bundle = one_change
    return [
        Hello(
            door_id=DOOR_A.door_id,
            list_version=1,
            list_age_s=60,
            battery_pct=80,
            audit_head_seq=3,
            key_epoch=0,
            lock_time=NOW,
            challenge=CHALLENGE,
            supported_versions=(1,),
        ),
        Auth.create(
            credential=mobile_credential(),
            phone_key=PHONE_KEY,
            door_id=DOOR_A.door_id,
            challenge=CHALLENGE,
        ),
        UnlockResult(door_id=DOOR_A.door_id, reason=Reason.GRANTED, open_seconds=5, audit_seq=4),
        bundle,
        make_receipt(DOOR_A.identity, one_change[0], requested_version=1),
        AuditBatch(door_id=DOOR_A.door_id, events=events(1, 2)).signed(DOOR_A.identity),
        AuditAck(door_id=DOOR_A.door_id, key_epoch=0, up_to_seq=2).signed(WORLD.cloud_key),
        TimeSync(door_id=DOOR_A.door_id, key_epoch=0, sequence=1, cloud_time=NOW).signed(
            WORLD.cloud_key
        ),
        KeyRotation.create(
            current_key=WORLD.cloud_key_at(0), new_key=WORLD.cloud_key_at(1), new_epoch=1
        ),
        ErrorMessage(code=ErrorCode.ROLLBACK, about_type=MessageType.BUNDLE, detail="too old"),
    ]


def test_truncated_message_rejected(one_change: OneChange) -> None:
    """Every shortened payload, re-framed with a correct length and CRC, fails to decode
    (signed forms whose tail is opaque bytes fail their signature instead)."""
    messages = every_message_type(one_change)
    assert {m.TYPE for m in messages} == set(MessageType)
    for message in messages:
        payload = message.to_bytes()
        assert decode_message(message.to_frame()) == message
        for cut in range(len(payload)):
            data = Frame(type=message.TYPE, payload=payload[:cut]).to_bytes()
            with pytest.raises(ProtocolError) as caught:
                decoded = decode_message(data)
                if isinstance(decoded, SealedBundle):
                    decoded.verify(CLOUD_PUBLIC)
            assert not isinstance(caught.value, UsageError), (message.TYPE.name, cut)
