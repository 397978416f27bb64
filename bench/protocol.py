"""Protocol sizes and speeds: the one-change bundle, frames, crypto, apply, decode.

Theory of operation: one deterministic scene (keys from :class:`simulators.fixture.World`)
is built once: a door, the cloud key, and a sealed, signed bundle that adds one
keycard (7-byte UID, 16-byte key, no schedule, open-ended validity) to an empty
list, version 0 -> 1. Sizes are the exact bytes of that bundle's frame and of a
naive JSON rendering of the same change. Speeds are operations per second from
:func:`bench._timing.measure_rate`; each operation is checked once for the right
result before it is timed, so a broken path fails loudly instead of timing fast.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import (
    Credential,
    CredentialHistory,
    CredentialKind,
    CredentialList,
    Frame,
    MessageType,
    SealedBundle,
    apply_bundle,
    decode_message,
    make_receipt,
)
from protocol.bundle import Upsert, encode_changes
from protocol.crypto import SignContext, open_sealed, seal, sign, verify
from protocol.frame import decode_frame, encode_frame
from simulators.fixture import Door, World, fixed_bytes

from . import Figures, Goal
from ._timing import Loop, Workload, measure_rate, repeated

__all__ = ["GOALS", "UNITS", "run"]

GOALS: dict[str, Goal] = {
    "one_change_bundle_bytes": ("<=", 244),
    "frame_roundtrip_per_s": (">=", 100_000),
}
UNITS: dict[str, str] = {}
Op = Callable[[], object]
"""One operation to time: called repeatedly, result ignored."""

CAPACITY = 20_000
"""Lock capacity passed to ``apply_bundle`` (above every list built here)."""
LARGE_LIST_SIZE = 10_000
LARGE_LIST_BATCH = 100
"""The 10,000-entry list is built in commits of this many cards (versions 1..100)."""
FRAME_PAYLOAD_SIZE = 200


@dataclass(frozen=True)
class _Scene:
    """Everything the measurements share, built once and untimed."""

    world: World
    door: Door
    card: Credential
    target: CredentialList
    bundle: SealedBundle


def run(quick: bool) -> Figures:
    """Measure every figure; ``quick`` shortens each timing loop to ~0.1 s."""
    seconds = 0.1 if quick else 0.5
    scene = _scene()
    figures: Figures = {
        "one_change_bundle_bytes": len(scene.bundle.to_frame()),
        "naive_json_bundle_bytes": len(naive_json_bundle(scene)),
    }
    for name, workload in _workloads(scene).items():
        figures[name] = measure_rate(workload, seconds=seconds)
    return figures


def _workloads(scene: _Scene) -> dict[str, Workload]:
    """Figure name -> workload, in table order."""
    return {
        "frame_roundtrip_per_s": repeated(_frame_roundtrip()),
        "frame_roundtrip_fast_per_s": repeated(_frame_roundtrip_fast()),
        "seal_open_per_s": _seal_open(scene),
        "sign_verify_per_s": repeated(_sign_verify(scene)),
        "raw_sign_verify_per_s": repeated(_raw_sign_verify(scene)),
        "bundle_apply_per_s": repeated(_bundle_apply(scene)),
        "bundle_apply_10k_list_per_s": repeated(_bundle_apply_large(scene)),
        "message_decode_per_s": repeated(_message_decode(scene)),
    }


# --- the scene ---------------------------------------------------------------------------


def keycard(index: int) -> Credential:
    """Keycard number ``index``: a 7-byte UID (NXP-style, 0x04 first), a fixed 16-byte key."""
    return Credential(
        kind=CredentialKind.KEYCARD,
        credential_id=b"\x04" + index.to_bytes(6, "big"),
        card_key=fixed_bytes(f"bench card key {index}", 16),
    )


def _scene() -> _Scene:
    world = World()
    door = world.door("bench")
    card = keycard(0)
    history = CredentialHistory(door.door_id)
    target = history.commit(upserts=[card])
    bundle = history.bundle(
        0,
        door_public=door.sealing.public_key(),
        cloud_key=world.cloud_key,
        key_epoch=0,
        ephemeral=world.ephemeral("bench one-change"),
    )
    return _Scene(world=world, door=door, card=card, target=target, bundle=bundle)


# --- sizes -------------------------------------------------------------------------------


def naive_json_bundle(scene: _Scene) -> bytes:
    """The same change as a naive compact JSON document, sealed and signed for real."""
    card, door = scene.card, scene.door
    header = {
        "door_id": door.door_id.hex(),
        "base_version": 0,
        "target_version": scene.target.version,
        "target_digest": scene.target.digest.hex(),
    }
    ephemeral_public, ciphertext = seal(
        door.sealing.public_key(),
        _compact(_credential_json(card)),
        _compact(header),
        scene.world.ephemeral("bench naive json"),
    )
    unsigned = {
        **header,
        "ephemeral_public": _b64(ephemeral_public),
        "ciphertext": _b64(ciphertext),
    }
    signature = scene.world.cloud_key.sign(_compact(unsigned))
    return _compact({**unsigned, "signature": _b64(signature)})


def _credential_json(card: Credential) -> dict[str, Any]:
    return {
        "kind": card.kind.name.lower(),
        "uid": card.credential_id.hex(),
        "card_key": card.card_key.hex(),
        "status": card.status.name.lower(),
        "valid_from": card.valid_from,
        "valid_until": card.valid_until,
        "schedule": [],
    }


def _compact(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- speeds ------------------------------------------------------------------------------


def _checked(op: Op, check: Callable[[Any], bool], what: str) -> Op:
    """Return ``op`` after running it once and checking its result."""
    if not check(op()):
        raise RuntimeError(f"benchmark self-check failed: {what}")
    return op


def _frame_roundtrip() -> Op:
    payload = fixed_bytes("bench frame payload", FRAME_PAYLOAD_SIZE)

    def op() -> Frame:
        return Frame.from_bytes(Frame(type=MessageType.BUNDLE, payload=payload).to_bytes())

    return _checked(op, lambda frame: frame.payload == payload, "Frame round trip")


def _frame_roundtrip_fast() -> Op:
    payload = fixed_bytes("bench frame payload", FRAME_PAYLOAD_SIZE)

    def op() -> tuple[int, int, bytes]:
        return decode_frame(encode_frame(MessageType.BUNDLE, payload))

    return _checked(op, lambda decoded: decoded[2] == payload, "encode_frame/decode_frame")


def _seal_open(scene: _Scene) -> Workload:
    """Seal with a fresh ephemeral key each time (keys made before the clock starts)."""
    door_public, door_private = scene.door.sealing.public_key(), scene.door.sealing
    plaintext = encode_changes([Upsert(scene.card)])
    aad = scene.bundle.associated_data()

    def workload(count: int) -> Loop:
        ephemerals = [scene.world.ephemeral(f"bench seal {i}") for i in range(count)]

        def loop() -> None:
            for ephemeral in ephemerals:
                eph_public, ciphertext = seal(door_public, plaintext, aad, ephemeral)
                open_sealed(door_private, eph_public, ciphertext, aad)

        return loop

    def once() -> bytes:
        eph_public, ciphertext = seal(door_public, plaintext, aad, scene.world.ephemeral("check"))
        return open_sealed(door_private, eph_public, ciphertext, aad)

    _checked(once, lambda opened: opened == plaintext, "seal/open")
    return workload


def _sign_verify(scene: _Scene) -> Op:
    key, body = scene.world.cloud_key, scene.bundle.body_bytes()
    public = key.public_key()

    def op() -> None:
        verify(public, SignContext.BUNDLE, body, sign(key, SignContext.BUNDLE, body))

    return op


def _raw_sign_verify(scene: _Scene) -> Op:
    key: Ed25519PrivateKey = scene.world.cloud_key
    public, message = key.public_key(), SignContext.BUNDLE.value + scene.bundle.body_bytes()

    def op() -> None:
        public.verify(key.sign(message), message)

    return op


def _bundle_apply(scene: _Scene) -> Op:
    empty = CredentialList.empty(scene.door.door_id)
    return _apply_op(scene, empty, scene.bundle.to_bytes(), expected=scene.target)


def _bundle_apply_large(scene: _Scene) -> Op:
    """One new card onto a lock holding 10,000 (version 100 -> 101)."""
    history = CredentialHistory(scene.door.door_id)
    for start in range(1, LARGE_LIST_SIZE + 1, LARGE_LIST_BATCH):
        history.commit(upserts=[keycard(i) for i in range(start, start + LARGE_LIST_BATCH)])
    held = history.current
    target = history.commit(upserts=[keycard(LARGE_LIST_SIZE + 1)])
    bundle = history.bundle(
        held.version,
        door_public=scene.door.sealing.public_key(),
        cloud_key=scene.world.cloud_key,
        key_epoch=0,
        ephemeral=scene.world.ephemeral("bench 10k"),
    )
    return _apply_op(scene, held, bundle.to_bytes(), expected=target)


def _apply_op(
    scene: _Scene, current: CredentialList, payload: bytes, *, expected: CredentialList
) -> Op:
    cloud_public, door_private = scene.world.cloud_key.public_key(), scene.door.sealing

    def op() -> CredentialList:
        outcome = apply_bundle(
            current,
            payload,
            cloud_public=cloud_public,
            door_private=door_private,
            capacity=CAPACITY,
        )
        return outcome.held

    def check(held: CredentialList) -> bool:
        return held.version == expected.version and held.digest == expected.digest

    return _checked(op, check, f"apply bundle onto {len(current)} credentials")


def _message_decode(scene: _Scene) -> Op:
    target = scene.target
    receipt = make_receipt(scene.door.identity, target, requested_version=target.version)
    frame = receipt.to_frame()
    return _checked(lambda: decode_message(frame), lambda msg: msg == receipt, "RECEIPT decode")
