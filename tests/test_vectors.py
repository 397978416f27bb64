"""Golden vectors: regenerated and compared, then checked independently.

The independent checks use only the JSON files, the standard library and
``cryptography`` — no ``protocol`` code — as another implementation would.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_vectors", ROOT / "scripts" / "make_vectors.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vector_files_match_generator() -> None:
    generator = _generator()
    for name, content in generator.build_vectors().items():
        on_disk = (VECTORS / name).read_text()
        assert on_disk == generator.render(content), (
            f"{name} is stale: run python scripts/make_vectors.py"
        )


def test_frame_vector_layout_and_crc() -> None:
    valid = load("frame.json")["valid"][0]
    frame = h(valid["frame"])
    payload = h(valid["payload"])
    assert frame[:2] == b"LK" and frame[2] == 1 and frame[3] == valid["type"]
    assert int.from_bytes(frame[4:8], "big") == len(payload) and frame[8:-4] == payload
    assert int.from_bytes(frame[-4:], "big") == zlib.crc32(frame[:-4]) == int(valid["crc32"], 16)


def test_invalid_frame_vectors_fail_with_named_error() -> None:
    import protocol.errors as errors
    from protocol import Frame

    for case in load("frame.json")["invalid"]:
        with pytest.raises(getattr(errors, case["error"])):
            Frame.from_bytes(h(case["frame"]))


SIGNED_CONTEXTS = {
    "RECEIPT": b"LK1 receipt\x00",
    "AUDIT_BATCH": b"LK1 audit-batch\x00",
    "AUDIT_ACK": b"LK1 audit-ack\x00",
    "TIME_SYNC": b"LK1 time-sync\x00",
    "KEY_ROTATION": b"LK1 key-rotation\x00",
}


def verify(public_hex: str, context: bytes, body: bytes, signature: bytes) -> None:
    Ed25519PublicKey.from_public_bytes(h(public_hex)).verify(signature, context + body)


def test_bundle_vector_independently() -> None:
    v = load("bundle.json")
    payload, body = h(v["payload"]), h(v["signed_body"])
    assert payload == body + payload[-64:]
    verify(v["keys"]["cloud_ed25519_public"], b"LK1 bundle\x00", body, payload[-64:])
    door = X25519PrivateKey.from_private_bytes(h(v["keys"]["door_x25519_private"]))
    ephemeral_public = body[60:92]
    shared = door.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    assert shared.hex() == v["x25519_shared_secret"]
    salt = ephemeral_public + h(v["keys"]["door_x25519_public"])
    okm = HKDF(
        algorithm=hashes.SHA256(), length=44, salt=salt, info=b"LK1 seal ChaCha20-Poly1305"
    ).derive(shared)
    assert okm.hex() == v["aead_key"] + v["aead_nonce"]
    aad = b"LK1 bundle-aad\x00" + body[:60]
    assert aad.hex() == v["associated_data"]
    plaintext = ChaCha20Poly1305(okm[:32]).decrypt(okm[32:], body[92:], aad)
    assert plaintext.hex() == v["plaintext"]
    assert body[:16].hex() == v["keys"]["door_id"]


@pytest.mark.parametrize("name", ["receipt.json", "audit_batch.json"])
def test_lock_signed_vectors_independently(name: str) -> None:
    v = load(name)
    payload, body = h(v["payload"]), h(v["signed_body"])
    context = SIGNED_CONTEXTS["RECEIPT" if name == "receipt.json" else "AUDIT_BATCH"]
    verify(v["keys"]["door_ed25519_public"], context, body, payload[-64:])
    frame = h(v["frame"])
    assert frame[8:-4] == payload and zlib.crc32(frame[:-4]) == int.from_bytes(frame[-4:], "big")


def test_cloud_signed_message_vectors_independently() -> None:
    v = load("messages.json")
    for message in v["messages"]:
        if message["name"] in SIGNED_CONTEXTS:
            payload = h(message["payload"])
            verify(
                v["keys"]["cloud_ed25519_public"],
                SIGNED_CONTEXTS[message["name"]],
                payload[:-64],
                payload[-64:],
            )


def test_credential_list_digest_independently() -> None:
    v = load("credential_list.json")
    encoding = h(v["encoding"])
    assert hashlib.sha256(b"LK1 list\x00" + encoding).hexdigest() == v["digest"]
    assert encoding[:16].hex() == v["door_id"]
    assert encoding[24:] == b"".join(h(e) for e in v["entry_encodings"])


def test_card_response_vectors_independently() -> None:
    for case in load("card_response.json")["cases"]:
        mac = cmac.CMAC(algorithms.AES(h(case["key"])))
        mac.update(h(case["cmac_input"]))
        assert mac.finalize().hex() == case["response"]


def test_segmentation_vectors_independently() -> None:
    v = load("segmentation.json")
    for case in v["cases"]:
        segments = [h(s) for s in case["segments"]]
        assert all(len(s) <= case["mtu"] - 3 for s in segments)
        for index, segment in enumerate(segments):
            assert segment[:6] == (7).to_bytes(2, "big") + index.to_bytes(2, "big") + len(
                segments
            ).to_bytes(2, "big")
        assert b"".join(s[6:] for s in segments).hex() == v["frame"]


def test_message_vectors_decode_to_their_fields() -> None:
    from protocol import decode_message

    jsonable = _generator().jsonable
    for message in load("messages.json")["messages"]:
        decoded = decode_message(h(message["frame"]))
        assert jsonable(decoded) == message["fields"]
