"""Signatures and sealing, from ``cryptography`` only (``docs/protocol.md`` §6).

Theory of operation:

* **Signing** is Ed25519 over ``context || body``. Each signed form has its own
  context string naming the protocol version and the purpose (:class:`SignContext`),
  so a signature made for one purpose never verifies for another, and the version
  is inside what is signed (no downgrade).
* **Sealing** to one door is ephemeral-static X25519, HKDF-SHA256 and
  ChaCha20-Poly1305. The HKDF salt is ``ephemeral_public || door_public`` and the
  info string binds the purpose; key and nonce both come from HKDF, which is safe
  because every seal uses a fresh ephemeral key. The caller's associated data
  (door id, versions, digest) is authenticated but not encrypted.
* Randomness is an argument: callers pass the ephemeral private key (or 32 random
  bytes) so that test vectors are reproducible.

Any verification or decryption failure raises the one opaque
:class:`protocol.errors.AuthenticationError`.
"""

from __future__ import annotations

from enum import Enum

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import AuthenticationError, UsageError

__all__ = [
    "AEAD_TAG_SIZE",
    "SignContext",
    "ed25519_private_from_seed",
    "ed25519_public_from_bytes",
    "open_sealed",
    "public_bytes",
    "seal",
    "sign",
    "verify",
    "x25519_private_from_seed",
    "x25519_public_from_bytes",
]

AEAD_TAG_SIZE = 16
_SEAL_INFO = b"LK1 seal ChaCha20-Poly1305"


class SignContext(Enum):
    """Domain-separation prefixes for every signed form (§6.1)."""

    MOBILE_CREDENTIAL = b"LK1 mobile-credential\x00"
    AUTH = b"LK1 auth\x00"
    BUNDLE = b"LK1 bundle\x00"
    RECEIPT = b"LK1 receipt\x00"
    AUDIT_BATCH = b"LK1 audit-batch\x00"
    AUDIT_ACK = b"LK1 audit-ack\x00"
    TIME_SYNC = b"LK1 time-sync\x00"
    KEY_ROTATION = b"LK1 key-rotation\x00"
    KEY_POSSESSION = b"LK1 key-possession\x00"


def sign(key: Ed25519PrivateKey, context: SignContext, body: bytes) -> bytes:
    """Sign ``context || body``; Ed25519 is deterministic, so equal inputs sign equally."""
    return key.sign(context.value + body)


def verify(key: Ed25519PublicKey, context: SignContext, body: bytes, signature: bytes) -> None:
    """Verify a signature over ``context || body`` or raise :class:`AuthenticationError`."""
    try:
        key.verify(bytes(signature), context.value + bytes(body))
    except InvalidSignature:
        raise AuthenticationError() from None


def seal(
    door_public: X25519PublicKey,
    plaintext: bytes,
    associated_data: bytes,
    ephemeral: X25519PrivateKey,
) -> tuple[bytes, bytes]:
    """Seal ``plaintext`` to one door. Returns ``(ephemeral_public, ciphertext_with_tag)``."""
    ephemeral_public = public_bytes(ephemeral)
    shared = ephemeral.exchange(door_public)
    aead, nonce = _derive(shared, ephemeral_public, public_bytes(door_public))
    return ephemeral_public, aead.encrypt(nonce, plaintext, associated_data)


def open_sealed(
    door_private: X25519PrivateKey,
    ephemeral_public: bytes,
    ciphertext: bytes,
    associated_data: bytes,
) -> bytes:
    """Open a sealed box addressed to this door, or raise :class:`AuthenticationError`."""
    try:
        shared = door_private.exchange(x25519_public_from_bytes(ephemeral_public))
        aead, nonce = _derive(shared, bytes(ephemeral_public), public_bytes(door_private))
        return aead.decrypt(nonce, bytes(ciphertext), bytes(associated_data))
    except (InvalidTag, ValueError, UsageError):
        raise AuthenticationError() from None


def _derive(
    shared: bytes, ephemeral_public: bytes, door_public: bytes
) -> tuple[ChaCha20Poly1305, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(), length=44, salt=ephemeral_public + door_public, info=_SEAL_INFO
    ).derive(shared)
    return ChaCha20Poly1305(okm[:32]), okm[32:]


def public_bytes(
    key: Ed25519PrivateKey | Ed25519PublicKey | X25519PrivateKey | X25519PublicKey,
) -> bytes:
    """The 32 raw bytes of a public key (of the public half, for a private key)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey | X25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def ed25519_private_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from its 32-byte seed."""
    _check_len(seed, 32, "Ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def x25519_private_from_seed(seed: bytes) -> X25519PrivateKey:
    """An X25519 private key from 32 bytes (clamped by the library)."""
    _check_len(seed, 32, "X25519 private key")
    return X25519PrivateKey.from_private_bytes(seed)


def ed25519_public_from_bytes(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from 32 raw bytes; bad bytes raise :class:`UsageError`."""
    _check_len(data, 32, "Ed25519 public key")
    try:
        return Ed25519PublicKey.from_public_bytes(bytes(data))
    except ValueError as exc:
        raise UsageError(f"invalid Ed25519 public key: {exc}") from None


def x25519_public_from_bytes(data: bytes) -> X25519PublicKey:
    """An X25519 public key from 32 raw bytes."""
    _check_len(data, 32, "X25519 public key")
    return X25519PublicKey.from_public_bytes(bytes(data))


def _check_len(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise UsageError(f"{what} must be {size} bytes, got {len(data)}")
