"""The lock's identity and its provisioning step.

Theory of operation: provisioning makes the lock's own keys — an Ed25519
identity key (signs receipts and audit batches) and an X25519 sealing key
(bundles are sealed to it) — and records what the lock must trust or know: the
cloud's public signing key, its door id, its property id and the per-door
doorcode secret. :meth:`LockIdentity.registration` exports what the cloud needs
to register the door (public keys only). Randomness is an argument.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocol.crypto import ed25519_private_from_seed, public_bytes, x25519_private_from_seed

__all__ = ["LockIdentity", "Registration", "fingerprint"]


def fingerprint(public_key: bytes) -> str:
    """A short, human-comparable fingerprint of a public key (SHA-256, 8 bytes, hex)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class Registration:
    """What the cloud needs to register a door: ids, public keys, and the keypad secret
    (the cloud derives the doorcodes the lock checks, §7.2): keep it as a secret."""

    door_id: bytes
    property_id: bytes
    identity_public: bytes
    sealing_public: bytes
    doorcode_secret: bytes = field(repr=False)

    def to_json(self) -> str:
        """The registration as a JSON document (hex strings)."""
        return json.dumps(
            {
                "door_id": self.door_id.hex(),
                "property_id": self.property_id.hex(),
                "identity_public": self.identity_public.hex(),
                "sealing_public": self.sealing_public.hex(),
                "doorcode_secret": self.doorcode_secret.hex(),
            },
            indent=2,
        )


@dataclass(frozen=True, kw_only=True, repr=False)
class LockIdentity:
    """Secrets and ids fixed at provisioning. ``repr`` shows no secret."""

    door_id: bytes
    property_id: bytes
    identity_seed: bytes
    sealing_private: bytes
    doorcode_secret: bytes

    def __post_init__(self) -> None:
        for name, size in (
            ("door_id", 16),
            ("property_id", 16),
            ("identity_seed", 32),
            ("sealing_private", 32),
            ("doorcode_secret", 32),
        ):
            if len(getattr(self, name)) != size:
                raise ValueError(f"{name} must be {size} bytes")

    def __repr__(self) -> str:
        key = fingerprint(self.identity_public)
        return f"LockIdentity(door_id={self.door_id.hex()}, identity={key})"

    @classmethod
    def generate(
        cls,
        *,
        door_id: bytes,
        property_id: bytes,
        doorcode_secret: bytes,
        random: Callable[[int], bytes],
    ) -> LockIdentity:
        """Provisioning: fresh identity and sealing keys from ``random``."""
        return cls(
            door_id=door_id,
            property_id=property_id,
            identity_seed=random(32),
            sealing_private=random(32),
            doorcode_secret=doorcode_secret,
        )

    def identity_key(self) -> Ed25519PrivateKey:
        return ed25519_private_from_seed(self.identity_seed)

    def sealing_key(self) -> X25519PrivateKey:
        return x25519_private_from_seed(self.sealing_private)

    @property
    def identity_public(self) -> bytes:
        return public_bytes(self.identity_key())

    @property
    def sealing_public(self) -> bytes:
        return public_bytes(self.sealing_key())

    def registration(self) -> Registration:
        """What to hand to the cloud."""
        return Registration(
            door_id=self.door_id,
            property_id=self.property_id,
            identity_public=self.identity_public,
            sealing_public=self.sealing_public,
            doorcode_secret=self.doorcode_secret,
        )
