"""TIME_SYNC issuing: the cloud signs a lock's time, bound to the lock's own challenge.

Theory of operation (``docs/protocol.md`` §6.6): only a cloud-signed TIME_SYNC moves a
lock's clock, and only with a sequence above the last one the lock accepted. The cloud
keeps one counter per door (``door.time_sync_seq``). :func:`issue_time_sync` locks the
door's row (``SELECT … FOR UPDATE`` on PostgreSQL; a SQLite transaction holds the write
lock from its start), re-reads it past the identity map, increments the counter and signs
the TIME_SYNC in the caller's transaction, so two concurrent requests never sign the same
sequence, and a rolled-back request leaves the counter as it was.

Every sync issued here is **bound** to a challenge the lock sent in its HELLO (§4.1): a
relay cannot hold it back and deliver it later, since the lock consumes the challenge
(or forgets it when the session ends). Unbound syncs (``NO_CHALLENGE``) are not issued.
The caller passes the lock's reported ``lock_time``; when it is within the tolerance
(:data:`MIN_CORRECTION_S` unless the caller passes ``tolerance_s``) of the cloud's clock no
sync is needed and nothing changes.

Nothing here reads a clock or the network: ``now`` and the signing key are arguments.
Callers check who may ask. Two callers: the HTTP API (a phone of a person who can open the
door asks, with the HELLO it read over BLE) and the MQTT bridge (an online door's live
HELLO, :func:`cloud.mqtt_ingest.record_hello`; the frame goes to the door's ``time`` topic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol import TimeSync
from protocol.cloud_messages import NO_CHALLENGE

from .errors import InvalidInputError, NotFoundError
from .keys import SigningKey
from .models import Door

__all__ = ["MIN_CORRECTION_S", "TimeSyncIssued", "issue_time_sync", "needs_time_sync"]

MIN_CORRECTION_S: Final = 2
"""A lock whose clock is off by at most this many seconds needs no TIME_SYNC."""
CHALLENGE_SIZE: Final = 16
U32_MAX: Final = 0xFFFF_FFFF


@dataclass(frozen=True)
class TimeSyncIssued:
    """The cloud's answer: a signed TIME_SYNC frame, or none when the lock's clock is right."""

    door_id: str
    cloud_time: int
    lock_time: int
    frame: bytes | None = None
    sequence: int | None = None
    key_epoch: int | None = None

    @property
    def needed(self) -> bool:
        return self.frame is not None


def needs_time_sync(lock_time: int, now: int, *, tolerance_s: int = MIN_CORRECTION_S) -> bool:
    """Whether a lock reporting ``lock_time`` at cloud time ``now`` is off by too much."""
    return abs(now - lock_time) > tolerance_s


def issue_time_sync(
    session: Session,
    door_id: str,
    *,
    challenge: bytes,
    lock_time: int,
    now: int,
    key: SigningKey,
    tolerance_s: int = MIN_CORRECTION_S,
) -> TimeSyncIssued:
    """Sign a TIME_SYNC for ``door_id`` bound to ``challenge``, if the lock's clock needs one.

    The clock needs one when it is off from ``now`` by more than ``tolerance_s`` seconds.

    Raises :class:`~cloud.errors.InvalidInputError` for a challenge that is not 16 bytes or
    is ``NO_CHALLENGE``, or a time outside u32, and :class:`~cloud.errors.NotFoundError`
    for an unknown door; both before anything changes.
    """
    _check_request(challenge, lock_time, now, tolerance_s)
    door = _lock_door(session, door_id)
    if not needs_time_sync(lock_time, now, tolerance_s=tolerance_s):
        return TimeSyncIssued(door_id=door.id, cloud_time=now, lock_time=lock_time)
    if door.time_sync_seq >= U32_MAX:
        raise InvalidInputError(f"door {door_id}: its TIME_SYNC sequence is exhausted")
    door.time_sync_seq += 1
    sync = TimeSync(
        door_id=bytes.fromhex(door.id),
        key_epoch=key.epoch,
        sequence=door.time_sync_seq,
        cloud_time=now,
        challenge=challenge,
    ).signed(key.private)
    session.flush()
    return TimeSyncIssued(
        door_id=door.id,
        cloud_time=now,
        lock_time=lock_time,
        frame=sync.to_frame(),
        sequence=sync.sequence,
        key_epoch=key.epoch,
    )


def _check_request(challenge: bytes, lock_time: int, now: int, tolerance_s: int) -> None:
    if tolerance_s < 0:
        raise InvalidInputError(f"tolerance_s must be >= 0, got {tolerance_s}")
    if len(challenge) != CHALLENGE_SIZE:
        raise InvalidInputError(f"challenge must be {CHALLENGE_SIZE} bytes, got {len(challenge)}")
    if challenge == NO_CHALLENGE:
        raise InvalidInputError(
            "challenge must be the one from the lock's HELLO, not 16 zero bytes"
        )
    for name, value in (("lock_time", lock_time), ("the cloud's clock", now)):
        if not 0 <= value <= U32_MAX:
            raise InvalidInputError(f"{name} must be unix seconds within u32, got {value}")


def _lock_door(session: Session, door_id: str) -> Door:
    """The door's row, locked for this transaction and read fresh (as :mod:`cloud.sync`)."""
    query = select(Door).where(Door.id == door_id).with_for_update()
    door = session.scalars(query.execution_options(populate_existing=True)).one_or_none()
    if door is None:
        raise NotFoundError(f"no door {door_id!r}")
    return door
