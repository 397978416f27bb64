"""What a phone keeps on disk: prefetched bundles and the uploads waiting for a signal.

Theory of operation
-------------------
A :class:`PhoneStore` is one SQLite file (the phone's app storage), so both survive a
restart of the phone bridge:

* **Bundles.** While online the phone fetches the pending bundle of every door its
  person can open (``GET /v1/phones/bundles``) and :meth:`PhoneStore.keep_bundles`
  replaces what it held with them, one per door. A bundle is sealed to its door and
  signed by the cloud: the phone can neither read nor alter it (a lock refuses an
  altered one, §6.2.2). At the door, :meth:`PhoneStore.bundle_for` picks it by the
  version the lock announced in HELLO: it serves only a lock that holds at least the
  bundle's base and less than its target. Frames are parsed (never trusted) when kept,
  and one that is not a BUNDLE frame is refused with :class:`StoreError`.
* **Uploads.** Receipts and audit batches a lock hands over go to the cloud at once
  when online, else :meth:`PhoneStore.enqueue` writes them to a queue. A drain
  (:meth:`PhoneStore.drain`) uploads them oldest first and deletes each only after its
  upload succeeded, in its own transaction: a crash in between uploads it again,
  which the cloud takes idempotently (receipts only move a version forward, audit
  events are stored once by sequence number, §6.3 and §6.5), so every upload takes
  effect exactly once. A failed upload stops the drain and keeps the rest in order.
* **Login.** The phone's token and its mobile credential (:meth:`PhoneStore.keep_login`,
  one row), so a restarted phone bridge is still logged in.
* **Audit acks.** The cloud answers an audit upload with a signed AUDIT_ACK frame to give
  that lock on the next visit (:meth:`PhoneStore.keep_ack`, one per door): an ack never
  replaces one that covers more events (a higher ``up_to_seq``).
* **Key rotations.** The KEY_ROTATION frames of the cloud's key epochs (§6.7), one per
  epoch, fetched while online (:meth:`PhoneStore.keep_rotations`) so that an offline
  phone still carries them to a lock at an older epoch (:meth:`PhoneStore.rotations`).
  They name no door and hold no secret; the phone cannot verify them (the lock does).

The store is synchronous (``sqlite3``, a few rows, one connection for the store's life
in WAL mode: see :class:`PhoneStore`): call it from a worker thread in asyncio code, and
:meth:`PhoneStore.close` it when done. One store, one process.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, TypeVar

from protocol import AuditAck, KeyRotation, MessageType, ProtocolError, SealedBundle
from protocol.frame import decode_frame

from .errors import PhoneBridgeError

__all__ = ["CachedBundle", "HeldLogin", "PhoneStore", "StoreError", "Upload", "UploadKind"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS bundle (
    door_id TEXT PRIMARY KEY,
    base_version INTEGER NOT NULL,
    target_version INTEGER NOT NULL,
    frame BLOB NOT NULL,
    fetched_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS upload (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    door_id TEXT NOT NULL,
    frame BLOB NOT NULL,
    queued_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS phone (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    phone_id TEXT NOT NULL,
    token TEXT NOT NULL,
    credential BLOB NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    logged_in_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rotation (
    epoch INTEGER PRIMARY KEY,
    frame BLOB NOT NULL,
    fetched_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ack (
    door_id TEXT PRIMARY KEY,
    up_to_seq INTEGER NOT NULL,
    frame BLOB NOT NULL,
    kept_at INTEGER NOT NULL
);
"""


class StoreError(PhoneBridgeError, ValueError):
    """Something the store refuses to keep (its message says what and why)."""


class UploadKind(StrEnum):
    """What waits to go to the cloud."""

    RECEIPT = "receipt"
    AUDIT = "audit"


@dataclass(frozen=True)
class CachedBundle:
    """A prefetched bundle: its door, the versions it spans and the frame as fetched."""

    door_id: str
    base_version: int
    target_version: int
    frame: bytes
    fetched_at: int


@dataclass(frozen=True)
class Upload:
    """One queued upload, in queue order (``id``)."""

    id: int
    kind: UploadKind
    door_id: str
    frame: bytes
    queued_at: int


@dataclass(frozen=True)
class HeldLogin:
    """The phone's login as kept: its id, bearer token and signed mobile credential."""

    phone_id: str
    token: str
    credential: bytes
    valid_from: int
    valid_until: int
    logged_in_at: int


class PhoneStore:
    """The phone's SQLite file at ``path`` (created on first use)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        # One connection for the store's life, shared by the worker threads asyncio code
        # calls it from (one at a time: the lock). WAL with synchronous=NORMAL: a commit
        # reaches the file before the call returns, so it survives the process dying at
        # once; a power loss may undo the newest commits, whole. That loses nothing: a
        # lock keeps its audit events until the cloud acknowledges them and hands out a
        # receipt again on the next visit. (A synced commit cost ~2.5 ms of a ~40 ms visit.)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._transaction() as db:
                db.executescript(_SCHEMA)
        except sqlite3.Error:
            self._db.close()
            raise

    # --- bundles ---------------------------------------------------------------------

    def keep_bundles(self, frames: Mapping[str, bytes], *, now: int) -> None:
        """Hold exactly ``frames`` (door id → BUNDLE frame), as one fresh prefetch.

        Doors missing from ``frames`` are in sync: what was held for them is dropped.
        Nothing changes if any frame is refused.
        """
        rows = [_bundle_row(door_id, frame, now) for door_id, frame in frames.items()]
        with self._transaction() as db:
            db.execute("DELETE FROM bundle")
            db.executemany("INSERT INTO bundle VALUES (?, ?, ?, ?, ?)", rows)

    def bundles(self) -> list[CachedBundle]:
        """Every held bundle, by door id."""
        with self._reading() as db:
            rows = db.execute("SELECT * FROM bundle ORDER BY door_id").fetchall()
        return [CachedBundle(*row) for row in rows]

    def bundle_for(self, door_id: str, held_version: int) -> bytes | None:
        """The frame that moves a lock holding ``held_version`` on, or None (nothing fits)."""
        with self._reading() as db:
            return _bundle_for(db, door_id, held_version)

    def carried_to(
        self, door_id: str, held_version: int, key_epoch: int
    ) -> tuple[bytes | None, list[tuple[int, bytes]]]:
        """What a visit carries to a lock at ``held_version`` and ``key_epoch``, read at once:
        :meth:`bundle_for` and :meth:`rotations` above the epoch."""
        with self._reading() as db:
            return _bundle_for(db, door_id, held_version), _rotations(db, key_epoch, None)

    # --- uploads ---------------------------------------------------------------------

    def enqueue(self, kind: UploadKind, door_id: str, frame: bytes, *, now: int) -> int:
        """Queue one upload behind the others; return its id."""
        (queued,) = self.enqueue_all([(kind, frame)], door_id, now=now)
        return queued

    def enqueue_all(
        self, items: Sequence[tuple[UploadKind, bytes]], door_id: str, *, now: int
    ) -> list[int]:
        """Queue a door's uploads behind the others, in order, in one transaction."""
        rows = [(UploadKind(kind).value, door_id.lower(), frame, now) for kind, frame in items]
        ids = []
        with self._transaction() as db:
            for row in rows:
                cursor = db.execute(
                    "INSERT INTO upload (kind, door_id, frame, queued_at) VALUES (?, ?, ?, ?)", row
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def uploads(self) -> list[Upload]:
        """What waits to go to the cloud, oldest first."""
        with self._reading() as db:
            rows = db.execute("SELECT * FROM upload ORDER BY id").fetchall()
        return [Upload(r[0], UploadKind(r[1]), r[2], bytes(r[3]), r[4]) for r in rows]

    def drain(self, upload: Callable[[Upload], object]) -> int:
        """Upload the queue oldest first, deleting each after it went; return how many went.

        An exception from ``upload`` stops the drain and propagates; that upload and
        every later one stay queued, in order.
        """
        done = 0
        for item in self.uploads():
            upload(item)
            self.uploaded(item)
            done += 1
        return done

    def uploaded(self, item: Upload) -> None:
        """Take ``item`` off the queue once the cloud has it (an async drain calls this)."""
        with self._transaction() as db:
            db.execute("DELETE FROM upload WHERE id = ?", (item.id,))

    # --- login ----------------------------------------------------------------------

    def keep_login(self, login: HeldLogin) -> None:
        """Hold ``login`` in place of any earlier one."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO phone VALUES (1, ?, ?, ?, ?, ?, ?)",
                (
                    login.phone_id,
                    login.token,
                    login.credential,
                    login.valid_from,
                    login.valid_until,
                    login.logged_in_at,
                ),
            )

    def login(self) -> HeldLogin | None:
        """The held login, or None (the phone never logged in, or logged out)."""
        with self._reading() as db:
            row = db.execute(
                "SELECT phone_id, token, credential, valid_from, valid_until, logged_in_at"
                " FROM phone WHERE id = 1"
            ).fetchone()
        if row is None:
            return None
        return HeldLogin(row[0], row[1], bytes(row[2]), row[3], row[4], row[5])

    def forget_login(self) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM phone")

    # --- audit acks ------------------------------------------------------------------

    def keep_ack(self, door_id: str, frame: bytes, *, now: int) -> bool:
        """Hold the AUDIT_ACK ``frame`` for ``door_id``; return False if a held one covers more."""
        door_id, up_to_seq = _ack_row(door_id, frame)
        with self._transaction() as db:
            row = db.execute("SELECT up_to_seq FROM ack WHERE door_id = ?", (door_id,)).fetchone()
            if row is not None and row[0] > up_to_seq:
                return False
            db.execute(
                "INSERT OR REPLACE INTO ack VALUES (?, ?, ?, ?)", (door_id, up_to_seq, frame, now)
            )
        return True

    def ack_for(self, door_id: str) -> bytes | None:
        """The AUDIT_ACK frame to deliver to ``door_id``, or None."""
        with self._reading() as db:
            row = db.execute(
                "SELECT frame FROM ack WHERE door_id = ?", (door_id.lower(),)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def delivered_ack(self, door_id: str, frame: bytes) -> None:
        """Drop ``frame`` once the lock has it (a newer ack kept meanwhile stays)."""
        with self._transaction() as db:
            db.execute("DELETE FROM ack WHERE door_id = ? AND frame = ?", (door_id.lower(), frame))

    # --- key rotations ---------------------------------------------------------------

    def keep_rotations(self, frames: Sequence[bytes], *, now: int) -> int:
        """Hold these KEY_ROTATION frames, by the epoch each introduces; return how many are new.

        A frame for an epoch already held replaces it. Nothing changes if any frame is refused.
        """
        rows = [(_rotation_epoch(frame), frame, now) for frame in frames]
        with self._transaction() as db:
            held = {row[0] for row in db.execute("SELECT epoch FROM rotation")}
            db.executemany("INSERT OR REPLACE INTO rotation VALUES (?, ?, ?)", rows)
        return len({epoch for epoch, _, _ in rows} - held)

    def rotations(self, *, after: int, up_to: int | None = None) -> list[tuple[int, bytes]]:
        """``(epoch, frame)`` of the held rotations above ``after`` (to ``up_to``), in order."""
        with self._reading() as db:
            return _rotations(db, after, up_to)

    def newest_rotation_epoch(self) -> int:
        """The newest epoch a rotation is held for (0: none)."""
        with self._reading() as db:
            (epoch,) = db.execute("SELECT COALESCE(MAX(epoch), 0) FROM rotation").fetchone()
        return int(epoch)

    # --- the file --------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (the store is unusable afterwards; closing twice is harmless)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> PhoneStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:  # the connection's context commits, or rolls back
            yield self._db


def _bundle_row(door_id: str, frame: bytes, now: int) -> tuple[str, int, int, bytes, int]:
    door_id = door_id.lower()
    bundle = _parse_for_door(
        door_id, frame, MessageType.BUNDLE, SealedBundle.from_bytes, ("a", "bundle")
    )
    return door_id, bundle.base_version, bundle.target_version, frame, now


def _ack_row(door_id: str, frame: bytes) -> tuple[str, int]:
    door_id = door_id.lower()
    ack = _parse_for_door(
        door_id, frame, MessageType.AUDIT_ACK, AuditAck.from_bytes, ("an", "audit ack")
    )
    return door_id, ack.up_to_seq


def _rotation_epoch(frame: bytes) -> int:
    """The epoch a KEY_ROTATION frame introduces (parsed, never trusted); StoreError if not one."""
    try:
        _, message_type, payload = decode_frame(frame)
        if message_type != MessageType.KEY_ROTATION:
            raise StoreError(f"not a KEY_ROTATION frame (type {message_type:#04x})")
        return KeyRotation.from_bytes(payload).new_epoch
    except ProtocolError as exc:
        raise StoreError(f"not a key rotation frame: {exc}") from exc


_M = TypeVar("_M", SealedBundle, AuditAck)


def _parse_for_door(
    door_id: str,
    frame: bytes,
    expected: MessageType,
    parse: Callable[[bytes], _M],
    noun: tuple[str, str],
) -> _M:
    """Parse (never trust) a frame the phone keeps for ``door_id``; StoreError if it is not one.

    ``noun`` is the article and name for messages, e.g. ``("an", "audit ack")``.
    """
    article, name = noun
    try:
        _, message_type, payload = decode_frame(frame)
        if message_type != expected:
            raise StoreError(
                f"door {door_id}: not {article} {expected.name} frame (type {message_type:#04x})"
            )
        message = parse(payload)
    except ProtocolError as exc:
        raise StoreError(f"door {door_id}: not {article} {name} frame: {exc}") from exc
    if message.door_id.hex() != door_id:
        raise StoreError(f"door {door_id}: the {name} is addressed to {message.door_id.hex()}")
    return message


def _bundle_for(db: sqlite3.Connection, door_id: str, held_version: int) -> bytes | None:
    row = db.execute(
        "SELECT frame FROM bundle WHERE door_id = ? AND base_version <= ? AND target_version > ?",
        (door_id.lower(), held_version, held_version),
    ).fetchone()
    return None if row is None else bytes(row[0])


def _rotations(db: sqlite3.Connection, after: int, up_to: int | None) -> list[tuple[int, bytes]]:
    query = "SELECT epoch, frame FROM rotation WHERE epoch > ? AND epoch <= ? ORDER BY epoch"
    rows = db.execute(query, (after, 0xFFFFFFFF if up_to is None else up_to)).fetchall()
    return [(int(epoch), bytes(frame)) for epoch, frame in rows]
