"""The cloud's signing keys: the current epoch, and rotation to the next.

Theory of operation: keys live in the ``cloud_key`` table by epoch; the newest is
current. :func:`rotate` makes the next key, signs the KEY_ROTATION with the current
one (and the new key's proof of possession) and stores it with the new epoch, so
it can be sent to every door like a bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol import KeyRotation
from protocol.crypto import ed25519_private_from_seed, public_bytes

from .models import CloudKey
from .sql import Sql

__all__ = ["SigningKey", "current_key", "ensure_key", "key_of", "rotate"]


class SigningKey:
    """The current cloud signing key and its epoch."""

    def __init__(self, epoch: int, private: Ed25519PrivateKey) -> None:
        self.epoch, self.private = epoch, private

    @property
    def public(self) -> bytes:
        return public_bytes(self.private)


def ensure_key(
    session: Session, random: Callable[[int], bytes], seed: bytes | None = None
) -> SigningKey:
    """The current key, creating epoch 0 (from ``seed`` or ``random``) if there is none."""
    row = session.execute(
        select(CloudKey).order_by(CloudKey.epoch.desc()).limit(1)
    ).scalar_one_or_none()
    if row is None:
        row = CloudKey(epoch=0, seed=seed or random(32), rotation=None)
        session.add(row)
        session.flush()
    return SigningKey(row.epoch, ed25519_private_from_seed(row.seed))


def current_key(session: Session) -> SigningKey:
    """The current key; the cloud must have been initialised (:func:`ensure_key`)."""
    with Sql(session, writes=False) as sql:
        return key_of(sql)


def key_of(sql: Sql) -> SigningKey:
    """:func:`current_key` on an open :class:`~cloud.sql.Sql`."""
    row = sql.row("SELECT epoch, seed FROM cloud_key ORDER BY epoch DESC LIMIT 1")
    if row is None:
        raise LookupError("the cloud has no signing key yet: run `door-cloud migrate` first")
    return _signing_key(int(row[0]), bytes(row[1]))


@lru_cache(maxsize=16)
def _signing_key(epoch: int, seed: bytes) -> SigningKey:
    """Deriving the private key costs more than the query: once per (epoch, seed)."""
    return SigningKey(epoch, ed25519_private_from_seed(seed))


def rotate(session: Session, random: Callable[[int], bytes]) -> KeyRotation:
    """Make the next signing key; return the KEY_ROTATION doors must receive."""
    current = current_key(session)
    seed = random(32)
    rotation = KeyRotation.create(
        current_key=current.private,
        new_key=ed25519_private_from_seed(seed),
        new_epoch=current.epoch + 1,
    )
    session.add(CloudKey(epoch=current.epoch + 1, seed=seed, rotation=rotation.to_frame()))
    session.flush()
    return rotation
