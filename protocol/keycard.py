"""Keycard challenge-response: a card proves it holds its per-card key, not just a UID.

Theory of operation: a keycard (ISO 14443) has a public ``uid`` of 4, 7 or 10 bytes
that any reader, and so any cloner, can read and copy. It also holds a 16-byte
AES-128 ``key`` that never leaves the card. At a tap the lock sends a fresh,
unpredictable 16-byte challenge; the card answers::

    response = AES-CMAC(key, b"LK1-CARD" || len(uid) || uid || challenge)

The lock recomputes the CMAC from the key in its credential list and compares in
constant time. A card cloned by copying only its UID cannot compute the answer, and
an answer recorded at an earlier tap is bound to that tap's challenge, so replaying
it fails. The UID (with its length byte) is inside the MAC, so a response made by
one card does not verify for another.

The cloud need not store one random key per card: :func:`derive_card_key`
diversifies per-card keys from a master secret with HKDF-SHA256, bound to the UID.

This module is pure: the challenge is an argument (the caller draws it from its
random source); nothing here reads a clock or a random source.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import UsageError

__all__ = [
    "CARD_CHALLENGE_SIZE",
    "CARD_KEY_SIZE",
    "CARD_RESPONSE_SIZE",
    "CARD_UID_SIZES",
    "MIN_MASTER_KEY_SIZE",
    "Keycard",
    "card_response",
    "derive_card_key",
    "verify_card_response",
]

CARD_CHALLENGE_SIZE = 16
"""Bytes in the lock's challenge."""
CARD_KEY_SIZE = 16
"""Bytes in a card's AES-128 key."""
CARD_RESPONSE_SIZE = 16
"""Bytes in the card's answer (one AES-CMAC tag)."""
CARD_UID_SIZES: tuple[int, ...] = (4, 7, 10)
"""UID lengths ISO 14443 allows (single, double and triple size)."""
MIN_MASTER_KEY_SIZE = 16
"""Fewest bytes :func:`derive_card_key` accepts as a master secret."""

_RESPONSE_LABEL = b"LK1-CARD"
_KEY_INFO_LABEL = b"LK1-CARD-KEY"
_KEYED_MACS = 8_192
"""Cards whose keyed CMAC state :func:`_keyed_mac` keeps (about 1 KiB each)."""


_BYTES_TYPES = (bytes, bytearray, memoryview)


def _is_bytes(value: object) -> bool:
    return isinstance(value, _BYTES_TYPES)


def _check_uid(uid: bytes) -> None:
    if not isinstance(uid, _BYTES_TYPES) or len(uid) not in CARD_UID_SIZES:
        raise UsageError(f"a card uid must be {', '.join(map(str, CARD_UID_SIZES))} bytes")


def _check_key(key: bytes) -> None:
    if not isinstance(key, _BYTES_TYPES) or len(key) != CARD_KEY_SIZE:
        raise UsageError(f"a card key must be {CARD_KEY_SIZE} bytes")


def _check_challenge(challenge: bytes) -> None:
    if not isinstance(challenge, _BYTES_TYPES) or len(challenge) != CARD_CHALLENGE_SIZE:
        raise UsageError(f"a card challenge must be {CARD_CHALLENGE_SIZE} bytes")


@lru_cache(maxsize=_KEYED_MACS)
def _keyed_mac(key: bytes, uid: bytes) -> CMAC:
    """A CMAC under ``key`` that has already absorbed the label and the length-prefixed uid.

    Setting up an AES-CMAC context (key checks, key schedule, subkeys) is most of the cost
    of a response; a tap only adds the challenge. The returned context is only ever
    copied, never updated or finalised, so sharing it is safe. The cache is bounded and
    keyed by the key itself, so a card whose key changes gets a fresh context.
    """
    mac = CMAC(algorithms.AES(key))
    mac.update(_RESPONSE_LABEL + len(uid).to_bytes(1, "big") + uid)
    return mac


def _cmac(key: bytes, uid: bytes, challenge: bytes) -> bytes:
    """Compute the tag over the labelled, length-prefixed uid and the challenge."""
    if type(key) is not bytes or type(uid) is not bytes:  # the cache is keyed by bytes
        key, uid = bytes(key), bytes(uid)
    mac = _keyed_mac(key, uid).copy()
    mac.update(challenge)
    return mac.finalize()


def card_response(key: bytes, uid: bytes, challenge: bytes) -> bytes:
    """Return the card's 16-byte answer to ``challenge``.

    Raises:
        UsageError: ``key``, ``uid`` or ``challenge`` has the wrong length or type.
    """
    _check_key(key)
    _check_uid(uid)
    _check_challenge(challenge)
    return _cmac(key, uid, challenge)


def verify_card_response(key: bytes, uid: bytes, challenge: bytes, response: bytes) -> bool:
    """Return whether ``response`` proves possession of ``key`` for ``uid`` and ``challenge``.

    The comparison is constant-time. Any argument of the wrong length or type yields
    ``False``: this never raises, whatever bytes a card (or a cloner) sent.
    """
    if not (isinstance(key, _BYTES_TYPES) and len(key) == CARD_KEY_SIZE):
        return False
    if not (isinstance(uid, _BYTES_TYPES) and len(uid) in CARD_UID_SIZES):
        return False
    if not (isinstance(challenge, _BYTES_TYPES) and len(challenge) == CARD_CHALLENGE_SIZE):
        return False
    if not (isinstance(response, _BYTES_TYPES) and len(response) == CARD_RESPONSE_SIZE):
        return False
    return hmac.compare_digest(_cmac(key, uid, challenge), bytes(response))


def derive_card_key(master: bytes, uid: bytes) -> bytes:
    """Diversify a card's 16-byte key from a cloud ``master`` secret and the card's ``uid``.

    HKDF-SHA256 (RFC 5869) with no salt and ``info = b"LK1-CARD-KEY" || uid``.

    Raises:
        UsageError: ``master`` is shorter than :data:`MIN_MASTER_KEY_SIZE` bytes, or
            ``uid`` has a length ISO 14443 does not allow.
    """
    if not _is_bytes(master) or len(master) < MIN_MASTER_KEY_SIZE:
        raise UsageError(f"a master secret must be at least {MIN_MASTER_KEY_SIZE} bytes")
    _check_uid(uid)
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=CARD_KEY_SIZE,
        salt=None,
        info=_KEY_INFO_LABEL + bytes(uid),
    )
    return hkdf.derive(bytes(master))


@dataclass(frozen=True, kw_only=True)
class Keycard:
    """A genuine keycard: a public UID and a secret per-card key.

    The key is left out of ``repr`` so that it never reaches a log line.
    """

    uid: bytes
    """The card's ISO 14443 UID (4, 7 or 10 bytes); public, readable by anyone."""
    key: bytes = field(repr=False)
    """The card's AES-128 key (16 bytes); secret."""

    def __post_init__(self) -> None:
        _check_uid(self.uid)
        _check_key(self.key)
        object.__setattr__(self, "uid", bytes(self.uid))
        object.__setattr__(self, "key", bytes(self.key))

    def respond(self, challenge: bytes) -> bytes:
        """Answer a lock's challenge, as the card's chip does at a tap.

        Raises:
            UsageError: ``challenge`` is not :data:`CARD_CHALLENGE_SIZE` bytes.
        """
        return card_response(self.key, self.uid, challenge)
