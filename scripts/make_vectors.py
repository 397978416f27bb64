#!/usr/bin/env python3
"""Generate the golden test vectors under ``tests/vectors/`` (``docs/protocol.md`` §11).

Every key, id, nonce and ephemeral key is fixed (derived from labels by
``simulators.fixture.fixed_bytes``), so the output is identical on every run and
machine. ``python scripts/make_vectors.py`` writes the files; ``--check`` exits 1
if a file on disk differs from what this script produces (the test suite does the
same). Byte strings are lowercase hex; enum fields are their integer values.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import zlib
from enum import IntEnum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import (  # noqa: E402
    AuditAck,
    AuditBatch,
    AuditEvent,
    AuditEventKind,
    Auth,
    Credential,
    CredentialHistory,
    CredentialKind,
    CredentialStatus,
    ErrorCode,
    ErrorMessage,
    Frame,
    Hello,
    Intent,
    KeyRotation,
    MobileCredential,
    Reason,
    ScopeKind,
    TimeSync,
    UnlockResult,
    Window,
    make_receipt,
)
from protocol.bundle import encode_changes  # noqa: E402
from protocol.crypto import ed25519_private_from_seed, public_bytes  # noqa: E402
from protocol.delta import apply_bundle  # noqa: E402
from protocol.doorcode import DoorcodeKind, issue_doorcode  # noqa: E402
from protocol.errors import ProtocolError  # noqa: E402
from protocol.frame import encode_frame  # noqa: E402
from protocol.keycard import card_response  # noqa: E402
from protocol.segmentation import segment_frame  # noqa: E402
from simulators.fixture import World, fixed_bytes  # noqa: E402

VECTOR_DIR = ROOT / "tests" / "vectors"
T0 = 1_800_000_000  # 2027-01-15T08:00:00Z, the fixed "now" of every vector


def jsonable(value: Any) -> Any:
    """Bytes → hex, enums → int, dataclasses → dicts, tuples → lists."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, IntEnum):
        return int(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def keys_block(world: World, door_name: str) -> dict[str, str]:
    """The seeds of every key a vector uses (Ed25519 seeds, X25519 private keys)."""
    return {
        "cloud_ed25519_seed": fixed_bytes("cloud-signing epoch 0").hex(),
        "cloud_ed25519_public": public_bytes(world.cloud_key).hex(),
        "door_id": world.door(door_name).door_id.hex(),
        "door_ed25519_seed": fixed_bytes(f"door-identity {door_name}").hex(),
        "door_ed25519_public": world.door(door_name).identity_public.hex(),
        "door_x25519_private": fixed_bytes(f"door-sealing {door_name}").hex(),
        "door_x25519_public": world.door(door_name).sealing_public.hex(),
    }


def frame_vectors() -> dict[str, Any]:
    payload = bytes(range(16))
    good = encode_frame(0x0A, payload)
    bad = {
        "truncated": good[:11],
        "bad_magic": b"LX" + good[2:],
        "unsupported_version": _with_crc(good[:2] + b"\x02" + good[3:-4]),
        "bad_length": good[:7] + bytes([good[7] + 1]) + good[8:],
        "trailing_bytes": good + b"\x00",
        "bad_checksum": good[:-1] + bytes([good[-1] ^ 0xFF]),
        "unknown_type": _with_crc(good[:3] + b"\x7f" + good[4:-4]),
    }
    return {
        "description": (
            "Frame envelope (§2). 'valid' frames decode; "
            "each 'invalid' frame must fail with the named error."
        ),
        "valid": [
            {
                "version": 1,
                "type": 0x0A,
                "payload": payload.hex(),
                "frame": good.hex(),
                "crc32": f"{zlib.crc32(good[:-4]):08x}",
            }
        ],
        "invalid": [
            {"case": name, "frame": data.hex(), "error": _error_name(data)}
            for name, data in bad.items()
        ],
    }


def _with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def _error_name(frame: bytes) -> str:
    try:
        Frame.from_bytes(frame)
    except ProtocolError as exc:
        return type(exc).__name__
    raise AssertionError("an invalid frame vector decoded")


def sample_card() -> Credential:
    return Credential(
        kind=CredentialKind.KEYCARD,
        credential_id=bytes.fromhex("04a1b2c3d4e5f6"),
        card_key=fixed_bytes("card key 04a1b2c3d4e5f6", 16),
    )


def mobile_credential(world: World) -> MobileCredential:
    phone_key = ed25519_private_from_seed(fixed_bytes("phone ed25519"))
    return MobileCredential(
        key_epoch=0,
        credential_id=fixed_bytes("mobile credential id", 16),
        person_id=fixed_bytes("person resident-1", 16),
        phone_public_key=public_bytes(phone_key),
        valid_from=T0,
        valid_until=T0 + 7 * 86400,
        scope_kind=ScopeKind.DOORS,
        scope_ids=(world.door("front").door_id,),
    ).signed(world.cloud_key)


def message_vectors(world: World) -> dict[str, Any]:
    door = world.door("front")
    challenge = fixed_bytes("hello challenge", 16)
    mc = mobile_credential(world)
    phone_key = ed25519_private_from_seed(fixed_bytes("phone ed25519"))
    messages = [
        Hello(
            door_id=door.door_id,
            list_version=7,
            list_age_s=3600,
            battery_pct=87,
            audit_head_seq=42,
            key_epoch=0,
            lock_time=T0,
            challenge=challenge,
            supported_versions=(1,),
        ),
        Auth.create(
            credential=mc,
            phone_key=phone_key,
            door_id=door.door_id,
            challenge=challenge,
            intent=Intent.UNLOCK,
        ),
        UnlockResult(door_id=door.door_id, reason=Reason.GRANTED, open_seconds=5, audit_seq=43),
        AuditAck(door_id=door.door_id, key_epoch=0, up_to_seq=42).signed(world.cloud_key),
        TimeSync(
            door_id=door.door_id, key_epoch=0, sequence=3, cloud_time=T0, challenge=challenge
        ).signed(world.cloud_key),
        KeyRotation.create(current_key=world.cloud_key, new_key=world.cloud_key_at(1), new_epoch=1),
        ErrorMessage(code=ErrorCode.ROLLBACK, about_type=0x04, detail="bundle older than list"),
    ]
    return {
        "description": (
            "One of each session and control message (§4, §6.5-§6.7), fields and exact bytes."
        ),
        "keys": {
            **keys_block(world, "front"),
            "phone_ed25519_seed": fixed_bytes("phone ed25519").hex(),
            "cloud_epoch1_ed25519_seed": fixed_bytes("cloud-signing epoch 1").hex(),
        },
        "mobile_credential": {"fields": jsonable(mc), "bytes": mc.to_bytes().hex()},
        "messages": [
            {
                "type": int(m.TYPE),
                "name": m.TYPE.name,
                "fields": jsonable(m),
                "payload": m.to_bytes().hex(),
                "frame": m.to_frame().hex(),
            }
            for m in messages
        ],
    }


def list_vectors(world: World) -> dict[str, Any]:
    door = world.door("front")
    history = CredentialHistory(door.door_id)
    history.commit(
        upserts=[
            sample_card(),
            Credential(
                kind=CredentialKind.PERSON,
                credential_id=fixed_bytes("person resident-1", 16),
                valid_from=T0,
                valid_until=T0 + 365 * 86400,
                schedule=(Window(days=0b0011111, start_minute=7 * 60, end_minute=19 * 60),),
            ),
            Credential(
                kind=CredentialKind.KEYCARD,
                credential_id=bytes.fromhex("0411223344556677889a"),
                status=CredentialStatus.REVOKED,
                card_key=fixed_bytes("card key lost", 16),
            ),
        ]
    )
    held = history.current
    return {
        "description": "Canonical credential-list encoding and digest (§5.2).",
        "door_id": door.door_id.hex(),
        "version": held.version,
        "entries": [jsonable(held[k]) for k in held],
        "entry_encodings": [held[k].encoded.hex() for k in held],
        "encoding": held.to_bytes().hex(),
        "digest": held.digest.hex(),
    }


def bundle_vectors(world: World) -> dict[str, Any]:
    door = world.door("front")
    history = CredentialHistory(door.door_id)
    history.commit(upserts=[sample_card()])
    ephemeral = world.ephemeral("bundle v0->v1")
    bundle = history.bundle(
        0,
        door_public=door.sealing.public_key(),
        cloud_key=world.cloud_key,
        key_epoch=0,
        ephemeral=ephemeral,
    )
    shared = ephemeral.exchange(door.sealing.public_key())
    aead_key_nonce = _derive_bytes(shared, bundle.ephemeral_public, door.sealing_public)
    applied = apply_bundle(
        history.current.empty(door.door_id),
        bundle.to_bytes(),
        cloud_public=world.cloud_key.public_key(),
        door_private=door.sealing,
        capacity=10,
    )
    return {
        "description": "A one-change bundle from version 0 to 1, sealed and signed (§6.2).",
        "keys": keys_block(world, "front"),
        "ephemeral_x25519_private": fixed_bytes("ephemeral bundle v0->v1").hex(),
        "changes": [{"op": 1, "credential": jsonable(sample_card())}],
        "plaintext": encode_changes(history.delta(0)).hex(),
        "x25519_shared_secret": shared.hex(),
        "aead_key": aead_key_nonce[:32].hex(),
        "aead_nonce": aead_key_nonce[32:].hex(),
        "associated_data": bundle.associated_data().hex(),
        "fields": jsonable(bundle),
        "signed_body": bundle.body_bytes().hex(),
        "payload": bundle.to_bytes().hex(),
        "frame": bundle.to_frame().hex(),
        "resulting_list_digest": applied.held.digest.hex(),
    }


def _derive_bytes(shared: bytes, ephemeral_public: bytes, door_public: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(
        algorithm=hashes.SHA256(),
        length=44,
        salt=ephemeral_public + door_public,
        info=b"LK1 seal ChaCha20-Poly1305",
    ).derive(shared)


def receipt_vectors(world: World) -> dict[str, Any]:
    door = world.door("front")
    history = CredentialHistory(door.door_id)
    history.commit(upserts=[sample_card()])
    receipt = make_receipt(door.identity, history.current, requested_version=1)
    return {
        "description": "Lock-signed receipt after applying the bundle vector (§6.3).",
        "keys": keys_block(world, "front"),
        "fields": jsonable(receipt),
        "signed_body": receipt.body_bytes().hex(),
        "payload": receipt.to_bytes().hex(),
        "frame": receipt.to_frame().hex(),
    }


def audit_vectors(world: World) -> dict[str, Any]:
    door = world.door("front")
    events = [
        AuditEvent(seq=1, time=T0, kind=AuditEventKind.BOOT),
        AuditEvent(
            seq=2,
            time=T0 + 5,
            kind=AuditEventKind.CARD_DECISION,
            reason=Reason.GRANTED,
            credential_id=bytes.fromhex("04a1b2c3d4e5f6"),
        ),
        AuditEvent(seq=3, time=T0 + 9, kind=AuditEventKind.BUNDLE_APPLIED, detail=1),
    ]
    batch = AuditBatch(door_id=door.door_id, events=tuple(events)).signed(door.identity)
    return {
        "description": "Lock-signed audit batch of three consecutive events (§6.4).",
        "keys": keys_block(world, "front"),
        "fields": jsonable(batch),
        "signed_body": batch.body_bytes().hex(),
        "payload": batch.to_bytes().hex(),
        "frame": batch.to_frame().hex(),
    }


def card_vectors() -> dict[str, Any]:
    cases = []
    for uid_hex in ("04a1b2c3", "04a1b2c3d4e5f6", "0411223344556677889a"):
        uid = bytes.fromhex(uid_hex)
        key, challenge = (
            fixed_bytes(f"card key {uid_hex}", 16),
            fixed_bytes(f"card challenge {uid_hex}", 16),
        )
        cases.append(
            {
                "uid": uid_hex,
                "key": key.hex(),
                "challenge": challenge.hex(),
                "cmac_input": (b"LK1-CARD" + bytes([len(uid)]) + uid + challenge).hex(),
                "response": card_response(key, uid, challenge).hex(),
            }
        )
    return {"description": "Keycard challenge-response, AES-128-CMAC (§7.3).", "cases": cases}


def doorcode_vectors(world: World) -> dict[str, Any]:
    door = world.door("front")
    secret = fixed_bytes("doorcode secret front")
    cases = []
    for kind, slot, offset in (
        (DoorcodeKind.DAILY, 0, 0),
        (DoorcodeKind.DAILY, 17, -300),
        (DoorcodeKind.QUARTER_HOUR, 3, 60),
    ):
        code = issue_doorcode(
            secret=secret,
            door_id=door.door_id,
            kind=kind,
            at=T0,
            slot=slot,
            utc_offset_minutes=offset,
        )
        cases.append(
            {"kind": int(kind), "slot": slot, "utc_offset_minutes": offset, "at": T0, "code": code}
        )
    return {
        "description": "Offline keypad doorcodes (§7.2).",
        "door_id": door.door_id.hex(),
        "secret": secret.hex(),
        "cases": cases,
    }


def segmentation_vectors(world: World) -> dict[str, Any]:
    frame = bytes.fromhex(bundle_vectors(world)["frame"])
    cases = [
        {
            "mtu": mtu,
            "transfer_id": 7,
            "segments": [s.hex() for s in segment_frame(frame, mtu=mtu, transfer_id=7)],
        }
        for mtu in (23, 185, 247)
    ]
    return {
        "description": "BLE segmentation of the bundle vector's frame (§7.1).",
        "frame": frame.hex(),
        "cases": cases,
    }


def build_vectors() -> dict[str, Any]:
    """Every vector file's content, by file name."""
    world = World()
    return {
        "frame.json": frame_vectors(),
        "messages.json": message_vectors(world),
        "credential_list.json": list_vectors(world),
        "bundle.json": bundle_vectors(world),
        "receipt.json": receipt_vectors(world),
        "audit_batch.json": audit_vectors(world),
        "card_response.json": card_vectors(),
        "doorcode.json": doorcode_vectors(world),
        "segmentation.json": segmentation_vectors(world),
    }


def render(content: Any) -> str:
    """The exact text written for one vector file."""
    return json.dumps(content, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the files; write nothing"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, content in build_vectors().items():
        path = VECTOR_DIR / name
        text = render(content)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"stale vector files: {stale}; run: python scripts/make_vectors.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
