"""Protocol demo: build, seal, relay and apply a bundle, printing each step.

Theory of operation: this wires the sans-IO protocol pieces by hand — a cloud
(credential history and signing key), one offline door (its list, keys and audit
log) and a phone that relays bytes it cannot read — and checks every expected
outcome, including the attacks a relay could try. It exits non-zero if any
outcome differs. Later issues replace it with the simulated-building demo.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol import (
    PROTOCOL_VERSION,
    AuditAck,
    AuditBatch,
    AuditEvent,
    AuditEventKind,
    AuditLedger,
    Auth,
    AuthenticationError,
    Credential,
    CredentialHistory,
    CredentialKind,
    CredentialList,
    Hello,
    Intent,
    MobileCredential,
    ProtocolError,
    Reason,
    Receipt,
    RollbackError,
    ScopeKind,
    UnlockResult,
    apply_bundle,
    decode_message,
    make_receipt,
)
from protocol.crypto import ed25519_private_from_seed, public_bytes, x25519_private_from_seed
from protocol.keycard import Keycard, verify_card_response
from protocol.segmentation import Reassembler, segment_frame

from .fixture import World

MTU = 247
CAPACITY = 10_000


@dataclass
class Narrator:
    """Prints numbered steps with timings and remembers failed expectations."""

    failures: list[str] = field(default_factory=list)
    count: int = 0

    def step(self, title: str, action: Callable[[], str]) -> None:
        self.count += 1
        started = time.perf_counter()
        try:
            detail = action()
            mark = "ok "
        except AssertionError as exc:
            detail, mark = f"UNEXPECTED: {exc}", "FAIL"
            self.failures.append(title)
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"[{mark}] {self.count:2d}. {title:<52} {elapsed_ms:7.2f} ms  {detail}")


def expect_error(error: type[ProtocolError], action: Callable[[], object]) -> str:
    """Run ``action`` and require it to raise ``error``; return its message."""
    try:
        action()
    except error as exc:
        return f"refused: {type(exc).__name__}: {exc}"
    raise AssertionError(f"expected {error.__name__}, nothing was raised")


def main() -> int:
    world = World()
    door = world.door("basement")
    cloud_public = world.cloud_key.public_key()
    history = CredentialHistory(door.door_id)
    held = CredentialList.empty(door.door_id)
    card = Keycard(uid=bytes.fromhex("04a1b2c3d4e5f6"), key=os.urandom(16))
    phone_key = ed25519_private_from_seed(os.urandom(32))
    now = int(time.time())
    n = Narrator()
    state: dict[str, object] = {}
    print(f"latchsim protocol demo — protocol version {PROTOCOL_VERSION}, BLE MTU {MTU}\n")

    def activate() -> str:
        history.commit(
            upserts=[
                Credential(kind=CredentialKind.KEYCARD, credential_id=card.uid, card_key=card.key)
            ]
        )
        bundle = history.bundle(
            0,
            door_public=door.sealing.public_key(),
            cloud_key=world.cloud_key,
            key_epoch=0,
            ephemeral=x25519_private_from_seed(os.urandom(32)),
        )
        state["bundle"] = bundle.to_frame()
        return (
            f"list v{history.current.version}, sealed bundle frame {len(bundle.to_frame())} bytes"
        )

    def credential() -> str:
        mc = MobileCredential(
            key_epoch=0,
            credential_id=os.urandom(16),
            person_id=b"resident-0001---",
            phone_public_key=public_bytes(phone_key),
            valid_from=now - 60,
            valid_until=now + 7 * 86400,
            scope_kind=ScopeKind.DOORS,
            scope_ids=(door.door_id,),
        ).signed(world.cloud_key)
        state["mc"] = mc
        return f"mobile credential {len(mc.to_bytes())} bytes, valid 7 days"

    def relay_reads() -> str:
        frame = state["bundle"]
        assert isinstance(frame, bytes)
        assert card.key not in frame and card.uid not in frame, "bundle leaks the card"
        other = world.door("lobby")
        return expect_error(
            AuthenticationError,
            lambda: apply_bundle(
                CredentialList.empty(door.door_id),
                frame[8:-4],
                cloud_public=cloud_public,
                door_private=other.sealing,
                capacity=CAPACITY,
            ),
        )

    def hello_auth() -> str:
        challenge = os.urandom(16)
        hello = Hello(
            door_id=door.door_id,
            list_version=held.version,
            list_age_s=3600,
            battery_pct=87,
            audit_head_seq=0,
            key_epoch=0,
            lock_time=now,
            challenge=challenge,
            supported_versions=(PROTOCOL_VERSION,),
        )
        mc = state["mc"]
        assert isinstance(mc, MobileCredential)
        auth = Auth.create(
            credential=mc,
            phone_key=phone_key,
            door_id=door.door_id,
            challenge=challenge,
            intent=Intent.UNLOCK,
        )
        received = decode_message(auth.to_frame())
        assert isinstance(received, Auth)
        MobileCredential.verified_from_bytes(received.credential.to_bytes(), cloud_public)
        received.verify(door_id=door.door_id, challenge=challenge)
        assert received.credential.opens(door_id=door.door_id, property_id=bytes(16))
        result = UnlockResult(
            door_id=door.door_id, reason=Reason.GRANTED, open_seconds=5, audit_seq=1
        )
        return (
            f"HELLO {len(hello.to_frame())} B, AUTH {len(auth.to_frame())} B, "
            f"UNLOCK_RESULT {len(result.to_frame())} B: granted"
        )

    def ble_transfer() -> str:
        frame = state["bundle"]
        assert isinstance(frame, bytes)
        writes = segment_frame(frame, mtu=MTU, transfer_id=1)
        reassembler = Reassembler()
        out = [reassembler.receive(w) for w in writes]
        assert out[-1] == frame
        state["received"] = out[-1]
        return f"{len(writes)} BLE write(s) of {[len(w) for w in writes]} bytes (limit {MTU - 3})"

    def apply() -> str:
        nonlocal held
        frame = state["received"]
        assert isinstance(frame, bytes)
        outcome = apply_bundle(
            held,
            decode_payload(frame),
            cloud_public=cloud_public,
            door_private=door.sealing,
            capacity=CAPACITY,
        )
        assert outcome.changed and outcome.held.digest == history.current.digest
        held = outcome.held
        receipt = make_receipt(door.identity, held, requested_version=outcome.bundle.target_version)
        state["receipt"] = receipt.to_frame()
        size = len(receipt.to_frame())
        return f"lock now v{held.version} ({len(held)} credentials), receipt {size} B"

    def cloud_receipt() -> str:
        frame = state["receipt"]
        assert isinstance(frame, bytes)
        receipt = Receipt.verified_from_bytes(decode_payload(frame), door.identity.public_key())
        assert receipt.list_digest == history.current.digest
        return f"receipt verified: door at v{receipt.list_version}; pending cleared"

    def duplicate() -> str:
        frame = state["bundle"]
        assert isinstance(frame, bytes)
        again = apply_bundle(
            held,
            decode_payload(frame),
            cloud_public=cloud_public,
            door_private=door.sealing,
            capacity=CAPACITY,
        )
        receipt = make_receipt(
            door.identity, again.held, requested_version=again.bundle.target_version
        )
        assert not again.changed and receipt.to_frame() == state["receipt"]
        return "no change, byte-identical receipt"

    def tamper() -> str:
        frame = bytearray(decode_payload(state["bundle"]))  # type: ignore[arg-type]
        frame[100] ^= 0x01
        return expect_error(
            AuthenticationError,
            lambda: apply_bundle(
                held,
                bytes(frame),
                cloud_public=cloud_public,
                door_private=door.sealing,
                capacity=CAPACITY,
            ),
        )

    def rollback() -> str:
        nonlocal held
        history.commit(
            upserts=[
                Credential(
                    kind=CredentialKind.KEYCARD,
                    credential_id=b"\x04spare!",
                    card_key=os.urandom(16),
                )
            ]
        )
        newer = history.bundle(
            1,
            door_public=door.sealing.public_key(),
            cloud_key=world.cloud_key,
            key_epoch=0,
            ephemeral=x25519_private_from_seed(os.urandom(32)),
        )
        held = apply_bundle(
            held,
            newer.to_bytes(),
            cloud_public=cloud_public,
            door_private=door.sealing,
            capacity=CAPACITY,
        ).held
        old = decode_payload(state["bundle"])  # type: ignore[arg-type]
        return expect_error(
            RollbackError,
            lambda: apply_bundle(
                held, old, cloud_public=cloud_public, door_private=door.sealing, capacity=CAPACITY
            ),
        )

    def card_tap() -> str:
        challenge = os.urandom(16)
        entry = held.lookup(CredentialKind.KEYCARD, card.uid)
        assert entry is not None and entry.decide(now) is Reason.GRANTED
        assert verify_card_response(entry.card_key, card.uid, challenge, card.respond(challenge))
        clone_ok = verify_card_response(entry.card_key, card.uid, challenge, bytes(16))
        assert not clone_ok, "a UID clone was accepted"
        return "real card granted; UID clone refused"

    def audit() -> str:
        events = [
            AuditEvent(
                seq=i + 1, time=now + i, kind=AuditEventKind.CARD_DECISION, credential_id=card.uid
            )
            for i in range(3)
        ]
        batch = AuditBatch(door_id=door.door_id, events=tuple(events)).signed(door.identity)
        ledger = AuditLedger(door_id=door.door_id, lock_key=door.identity.public_key())
        fresh = ledger.accept(batch.to_bytes())
        assert len(fresh) == 3 and ledger.accept(batch.to_bytes()) == ()
        ack = AuditAck(door_id=door.door_id, key_epoch=0, up_to_seq=3).signed(world.cloud_key)
        return f"batch {len(batch.to_frame())} B accepted once; ACK {len(ack.to_frame())} B"

    n.step("manager activates keycard; cloud seals a bundle", activate)
    n.step("cloud issues the resident's mobile credential", credential)
    n.step("relay tries to read the bundle", relay_reads)
    n.step("BLE session: HELLO, AUTH, unlock", hello_auth)
    n.step("phone hands the bundle over BLE", ble_transfer)
    n.step("lock verifies, decrypts, applies atomically", apply)
    n.step("phone uploads receipt; cloud verifies it", cloud_receipt)
    n.step("same bundle delivered twice", duplicate)
    n.step("relay flips one byte of the bundle", tamper)
    n.step("relay replays the older bundle after an update", rollback)
    n.step("resident taps the keycard", card_tap)
    n.step("lock uploads a signed audit batch", audit)
    if n.failures:
        print(f"\n{len(n.failures)} expected outcome(s) did not happen: {n.failures}")
        return 1
    print(f"\nall {n.count} steps behaved as expected")
    return 0


def decode_payload(frame: bytes) -> bytes:
    """The payload of a checked frame."""
    from protocol.frame import decode_frame

    return decode_frame(frame)[2]


if __name__ == "__main__":
    sys.exit(main())
