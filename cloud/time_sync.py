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

from sqlalchemy.orm import Session

from protocol import TimeSync
from protocol.cloud_messages import NO_CHALLENGE

from .errors import InvalidInputError, NotFoundError
from .keys import SigningKey
from .sql import Sql

__all__ = [
    "MIN_CORRECTION_S",
    "TimeSyncIssued",
    "issue_time_sync",
    "needs_time_sync",
    "time_sync_on",
]

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
    with Sql(session) as sql:
        return time_sync_on(
            sql,
            door_id,
            challenge=challenge,
            lock_time=lock_time,
            now=now,
            key=key,
            tolerance_s=tolerance_s,
        )


def time_sync_on(
    sql: Sql,
    door_id: str,
    *,
    challenge: bytes,
    lock_time: int,
    now: int,
    key: SigningKey,
    tolerance_s: int = MIN_CORRECTION_S,
) -> TimeSyncIssued:
    """:func:`issue_time_sync` on raw statements (the door's row locked, then written)."""
    _check_request(challenge, lock_time, now, tolerance_s)
    row = sql.row(f"SELECT time_sync_seq FROM door WHERE id = ?{sql.lock()}", [door_id])
    if row is None:
        raise NotFoundError(f"no door {door_id!r}")
    if not needs_time_sync(lock_time, now, tolerance_s=tolerance_s):
        return TimeSyncIssued(door_id=door_id, cloud_time=now, lock_time=lock_time)
    if row[0] >= U32_MAX:
        raise InvalidInputError(f"door {door_id}: its TIME_SYNC sequence is exhausted")
    sequence = int(row[0]) + 1
    sql.run("UPDATE door SET time_sync_seq = ? WHERE id = ?", [sequence, door_id])
    sync = TimeSync(
        door_id=bytes.fromhex(door_id),
        key_epoch=key.epoch,
        sequence=sequence,
        cloud_time=now,
        challenge=challenge,
    ).signed(key.private)
    return TimeSyncIssued(
        door_id=door_id,
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
