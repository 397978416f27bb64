"""The card-tap fast paths encode exactly what the declared formats say.

Theory of operation: the tap path packs flash records, journal transactions and
snapshots with ``struct`` (and a snapshot reuses the encodings of the audit events
it already wrote), and the keycard check reuses a keyed CMAC context per card. Each
test here rebuilds the same bytes the slow, declared way (``construct`` formats, a
fresh ``CMAC`` object) and requires equality, including the cases where a cache
must not be trusted: events released, replaced or logged since the last snapshot,
a card whose key changed.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from controller.audit_log import AuditLog
from controller.config import ControllerConfig
from controller.events import MQTT, CardAnswered, CardChallenge, CardTapped, FrameReceived
from controller.runtime import LockRuntime
from controller.state import (
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
    SnapshotFormat,
    TransactionFormat,
    encode_transaction,
)
from controller.storage import (
    HEADER_SIZE,
    Flash,
    MemoryMedium,
    _decode_record,
    _Kind,
    _RecordHead,
)
from controller.storage import _encode_record as encode_flash_record
from protocol import AuditEvent, AuditEventKind, CloudKeyState, CredentialKind, Reason
from protocol.bundle import encode_changes
from protocol.keycard import card_response, verify_card_response
from simulators.fixture import fixed_bytes
from tests.controller_harness import (
    BOOT_READING,
    T0,
    Cloud,
    CountingRandom,
    card_entry,
    keycard,
    lock_identity,
)

# --- flash records ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [_Kind.SNAPSHOT, _Kind.TRANSACTION])
@pytest.mark.parametrize("sequence", [0, 1, 255, 2**32 + 7, 2**64 - 1])
@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(256)) * 3])
def test_flash_record_is_the_declared_head_payload_and_crc(
    kind: _Kind, sequence: int, payload: bytes
) -> None:
    body = bytes(_RecordHead.build({"length": len(payload), "kind": kind, "sequence": sequence}))
    body += payload
    expected = body + zlib.crc32(body).to_bytes(4, "big")
    record = encode_flash_record(kind, sequence, payload)
    assert record == expected
    assert _decode_record(b"pad" + record, 3, kind, sequence) == (payload, 3 + len(record))


# --- journal transactions ---------------------------------------------------------------------


def _event(seq: int, *, credential_id: bytes = b"card-7", detail: int = 0) -> AuditEvent:
    return AuditEvent(
        seq=seq,
        time=T0 + seq,
        kind=AuditEventKind.CARD_DECISION,
        reason=seq % 13,
        credential_id=credential_id,
        detail=detail,
    )


def _declared_transaction(records: list[Record]) -> bytes:
    tags = {
        ListChanged: 1,
        AuditAppended: 2,
        AuditReleased: 3,
        ClockCorrected: 4,
        KeyRotated: 5,
        Booted: 6,
        BatteryUsed: 7,
        AuditLost: 8,
    }
    built = []
    for r in records:
        if isinstance(r, AuditAppended):
            body = r.event.to_container()
        elif isinstance(r, ListChanged):
            body = {"version": r.version, "digest": r.digest, "changed_at": r.changed_at}
            body["changes"] = encode_changes(r.changes)
        else:
            body = dataclasses.asdict(r)
        built.append({"tag": tags[type(r)], "body": body})
    return bytes(TransactionFormat.build({"records": built}))


def test_journal_transactions_match_the_declared_format() -> None:
    records: list[Record] = [
        AuditAppended(_event(1)),
        AuditAppended(_event(2, credential_id=b"", detail=0xFFFFFFFF)),
        AuditAppended(_event(3, credential_id=bytes(16))),
        BatteryUsed(0.05),
        BatteryUsed(1234.5678),
        AuditReleased(2),
        AuditLost(9),
        ClockCorrected(-300, 4),
        KeyRotated(2, bytes(32)),
        Booted(3),
        ListChanged(5, bytes(range(32)), T0, (), b""),
    ]
    for end in range(len(records) + 1):
        assert encode_transaction(records[:end]) == _declared_transaction(records[:end])


# --- snapshots --------------------------------------------------------------------------------


def _state(audit: AuditLog | None = None) -> LockState:
    identity = lock_identity("front")
    state = LockState.provisioned(
        identity, CloudKeyState(epoch=3, public_key=fixed_bytes("cloud", 32)), audit_capacity=64
    )
    if audit is not None:
        state.audit = audit
    state.clock_offset, state.time_sync_seq, state.boot_count = -17, 4, 9
    state.battery_used_mah = 12.25
    return state


def _declared_snapshot(state: LockState) -> bytes:
    i, a = state.identity, state.audit
    return bytes(
        SnapshotFormat.build(
            {
                "door_id": i.door_id,
                "property_id": i.property_id,
                "identity_seed": i.identity_seed,
                "sealing_private": i.sealing_private,
                "doorcode_secret": i.doorcode_secret,
                "cloud_epoch": state.cloud.epoch,
                "cloud_key": state.cloud.public_key,
                "credential_list": state.held.to_bytes(),
                "list_changed_at": state.list_changed_at,
                "audit_next_seq": a.next_seq,
                "audit_lost": a.lost,
                "audit_events": [e.to_container() for e in a.events()],
                "clock_offset": state.clock_offset,
                "time_sync_seq": state.time_sync_seq,
                "boot_count": state.boot_count,
                "battery_used_mah": state.battery_used_mah,
            }
        )
    )


def _log(state: LockState, count: int, *, label: str = "") -> None:
    for n in range(count):
        uid = fixed_bytes(f"{label} {n}", n % 17)  # ids of every allowed length
        state.audit.append(
            time=T0 + n, kind=AuditEventKind.CARD_DECISION, credential_id=uid, detail=n
        )


def _check(state: LockState) -> None:
    snapshot = state.to_snapshot()
    assert snapshot == _declared_snapshot(state)
    replayed = LockState.from_snapshot(snapshot, audit_capacity=64)
    assert replayed.audit.events() == state.audit.events()


def test_snapshot_of_an_empty_ring_matches_the_declared_format() -> None:
    _check(_state())


def test_snapshots_reuse_only_what_is_still_true() -> None:
    state = _state()
    _log(state, 10)
    _check(state)  # everything new
    _check(state)  # nothing new
    _log(state, 5, label="more")
    _check(state)  # tail new
    state.audit.release(4)
    _check(state)  # head released
    _log(state, 3, label="again")
    state.audit.release(13)
    _check(state)  # both at once
    state.audit.release(state.audit.head_seq)
    _check(state)  # ring empty
    _log(state, 2, label="after empty")
    _check(state)


def test_a_replaced_ring_with_the_same_sequence_numbers_is_encoded_afresh() -> None:
    state = _state()
    _log(state, 8, label="first")
    _check(state)
    state.audit = AuditLog(64)
    _log(state, 8, label="second")  # same seqs 1..8, other events
    _check(state)
    state.audit = AuditLog(64, next_seq=3)
    _log(state, 4, label="third")  # seqs 3..6 inside the cached range, other events
    _check(state)


def test_the_ring_restored_from_a_snapshot_encodes_the_same() -> None:
    state = _state()
    _log(state, 20)
    state.audit.release(6)
    rebooted = LockState.from_snapshot(state.to_snapshot(), audit_capacity=64)
    _log(rebooted, 3, label="after boot")
    _check(rebooted)


# --- the keycard check ------------------------------------------------------------------------


def _reference_cmac(key: bytes, uid: bytes, challenge: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(b"LK1-CARD" + bytes([len(uid)]) + uid + challenge)
    return mac.finalize()


@pytest.mark.parametrize("uid_size", [4, 7, 10])
def test_repeated_responses_equal_a_fresh_cmac(uid_size: int) -> None:
    key, uid = fixed_bytes(f"key {uid_size}", 16), fixed_bytes(f"uid {uid_size}", uid_size)
    for n in range(5):  # the cached context is copied, never consumed
        challenge = fixed_bytes(f"challenge {n}", 16)
        expected = _reference_cmac(key, uid, challenge)
        assert card_response(key, uid, challenge) == expected
        odd: tuple[Any, Any, Any] = (bytearray(key), memoryview(uid), bytearray(challenge))
        assert card_response(*odd) == expected  # other bytes-like types: same answer
        assert verify_card_response(key, uid, challenge, expected)
        assert not verify_card_response(key, uid, challenge, bytes(16))


def test_a_new_key_for_the_same_uid_is_not_answered_from_the_cache() -> None:
    uid, challenge = fixed_bytes("uid rekeyed", 7), fixed_bytes("challenge rekeyed", 16)
    old, new = fixed_bytes("old key", 16), fixed_bytes("new key", 16)
    old_answer = card_response(old, uid, challenge)
    assert card_response(new, uid, challenge) == _reference_cmac(new, uid, challenge)
    assert not verify_card_response(new, uid, challenge, old_answer)
    assert verify_card_response(old, uid, challenge, old_answer)


def test_a_response_for_one_uid_does_not_verify_for_another() -> None:
    key, challenge = fixed_bytes("shared key", 16), fixed_bytes("c", 16)
    answer = card_response(key, fixed_bytes("uid a", 7), challenge)
    assert not verify_card_response(key, fixed_bytes("uid b", 7), challenge, answer)


# --- one tap, one append ----------------------------------------------------------------------


def test_each_tap_appends_one_flash_record_and_compacts_on_schedule() -> None:
    identity = lock_identity("front")
    cloud = Cloud(identity)
    cards = [keycard(n) for n in range(3)]
    cloud.commit(*[card_entry(c) for c in cards])
    medium, clock = MemoryMedium(), [BOOT_READING]
    config = ControllerConfig(snapshot_every=4)
    runtime = LockRuntime.provision(
        Flash(medium),
        identity,
        cloud.public_key,
        config=config,
        clock=lambda: clock[0],
        wall_time=T0,
        random=CountingRandom("tap speed"),
    )
    runtime.handle(FrameReceived(MQTT, cloud.bundle(0)))
    for n in range(12):
        clock[0] += 0.5
        card = cards[n % 3]
        before = Flash(medium).load()
        (challenge,) = [
            a for a in runtime.handle(CardTapped(card.uid)) if isinstance(a, CardChallenge)
        ]
        assert Flash(medium).load() == before  # a challenge changes nothing durable
        runtime.handle(CardAnswered(card.uid, card.respond(challenge.challenge)))
        after = Flash(medium).load()
        state = runtime.controller.state
        if runtime.controller._since_snapshot == 0:  # this tap's transaction was compacted
            assert after.transactions == () and after.generation == before.generation + 1
        else:
            assert after.snapshot == before.snapshot
            assert after.transactions[: len(before.transactions)] == before.transactions
            assert len(after.transactions) == len(before.transactions) + 1
        replayed = LockState.replay(
            after.snapshot or b"", after.transactions, audit_capacity=config.audit_capacity
        )
        assert replayed.audit.events() == state.audit.events()
        assert replayed.battery_used_mah == state.battery_used_mah
        assert state.audit.events()[-1].reason == Reason.GRANTED
        assert state.held.view(CredentialKind.KEYCARD, card.uid) is not None
    assert medium.slots[0] is not None and len(medium.slots[0]) > HEADER_SIZE
