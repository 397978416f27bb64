"""The sync engine: desired lists, version bumps, bundles, receipts.

Theory of operation: the source of truth is people, grants and keycards. After
any change to them, :func:`resync` recomputes what each affected door must
hold for that person (a PERSON entry per grant; a KEYCARD entry per card:
ACTIVE when active, REVOKED once deactivated or lost), compares with the door's
materialised list (:class:`~cloud.models.DoorEntry`) and, for each door whose
list differs, bumps the door's version exactly once, writes the changed entries
with that version, records the new list digest, and — for an online door —
queues the bundle in the MQTT outbox in the same transaction.

Each door row is locked before its entries are read (:func:`_lock_doors`,
``SELECT … FOR UPDATE`` on PostgreSQL; a SQLite transaction holds the database's
write lock from its start, see :func:`cloud.db.make_engine`) and re-read past the
session's identity map, so two concurrent changes never lose a version bump. All
doors a change reaches are locked, read and bumped together (a few statements, not
a few per door). A bundle from base *b* carries every entry changed after *b*
(:func:`bundle_frame`). :class:`BundleCache` keeps sealed bundles, so every phone
carries identical bytes, and each door's newest list, so a change does not re-read
a door's whole list to compute its digest; it keeps only what committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from protocol import (
    Credential,
    CredentialKind,
    CredentialList,
    CredentialStatus,
    Receipt,
    ReceiptStatus,
    Window,
    WrongDoorError,
)
from protocol.bundle import (
    Change,
    Remove,
    Upsert,
    encode_changes,
    encode_entry_changes,
    seal_encoded_changes,
)
from protocol.credential_list import CredentialKey
from protocol.crypto import (
    ed25519_public_from_bytes,
    x25519_private_from_seed,
    x25519_public_from_bytes,
)
from protocol.transport import door_topic

from .errors import NotFoundError
from .keys import SigningKey
from .models import (
    CloudKey,
    Door,
    DoorEntry,
)
from .sql import Sql, json_list, marks

__all__ = [
    "Accepted",
    "BundleCache",
    "DoorChange",
    "GrantTerms",
    "accept_receipt",
    "bundle_frame",
    "commit_pending",
    "door_bundle",
    "door_list",
    "doors_of_person",
    "drop_pending",
    "granted_door_ids",
    "granted_doors",
    "identity_key",
    "note_outbox",
    "openable_doors",
    "queue_bundle",
    "queue_bundle_on",
    "queue_frames",
    "queue_rotations",
    "queue_rotations_on",
    "receipt_on",
    "resync",
    "rotation_frames",
    "took_outbox",
]

EntryKey = tuple[int, str]
"""``(kind, credential_id hex)``: a credential's key in the ``door_entry`` table."""


@dataclass(frozen=True)
class DoorChange:
    """A door whose list moved to ``version`` because of a change."""

    door_id: str
    version: int


FrameKey = tuple[str, int, int, int]
"""A sealed bundle's cache key: (door id, base version, target version, signing-key epoch)."""


class BundleCache:
    """What a process keeps between transactions: sealed bundles and each door's newest list.

    Bundles are kept by :data:`FrameKey`, so every phone carries identical bytes; lists by
    door, at the version they were built for. Both are kept only once the transaction that
    made them has committed: until then they are visible to that transaction alone, and a
    rollback forgets them. (A rolled-back version number is reused by the next change with
    other content, so a bundle or list kept from it would be wrong.) A door another process
    moved on is simply rebuilt, since its version no longer matches.
    """

    def __init__(self, limit: int = 10_000, list_limit: int = 256) -> None:
        self.limit, self.list_limit = limit, list_limit
        self._frames: dict[FrameKey, bytes] = {}
        self._lists: dict[str, CredentialList] = {}

    def frame(self, session: Session, key: FrameKey) -> bytes | None:
        """The sealed bundle for ``key`` made by ``session`` or by a committed transaction."""
        return self._pending(session).frames.get(key) or self._frames.get(key)

    def keep_frame(self, session: Session, key: FrameKey, frame: bytes) -> None:
        """Keep ``frame`` for ``key`` once ``session`` commits."""
        self._pending(session).frames[key] = frame

    def list_at(self, session: Session, door_id: str, version: int) -> CredentialList | None:
        """The door's list at ``version`` if ``session`` or a committed transaction built it."""
        held = self._pending(session).lists.get(door_id) or self._lists.get(door_id)
        return held if held is not None and held.version == version else None

    def keep_list(self, session: Session, door_id: str, held: CredentialList) -> None:
        """Keep ``held`` as the door's list once ``session`` commits."""
        self._pending(session).lists[door_id] = held

    def _pending(self, session: Session) -> _Pending:
        pending: _Pending | None = session.info.get(_PENDING)
        if pending is None or pending.cache is not self:
            pending = session.info[_PENDING] = _Pending(self)
        return pending

    def _commit(self, pending: _Pending) -> None:
        for key, frame in pending.frames.items():
            if len(self._frames) >= self.limit:
                self._frames.pop(next(iter(self._frames)))
            self._frames[key] = frame
        for door_id, held in pending.lists.items():
            self._lists.pop(door_id, None)
            if len(self._lists) >= self.list_limit:
                self._lists.pop(next(iter(self._lists)))
            self._lists[door_id] = held


@dataclass
class _Pending:
    """What one transaction made, kept by its session until it commits."""

    cache: BundleCache
    frames: dict[FrameKey, bytes] = field(default_factory=dict)
    lists: dict[str, CredentialList] = field(default_factory=dict)


_PENDING: Final = "latchsim.bundle_cache"


def commit_pending(session: Session) -> None:
    """``session``'s transaction committed: the cache keeps what it made (a session's
    commit calls this itself; :func:`cloud.raw_tx.raw_service` calls it by hand)."""
    pending: _Pending | None = session.info.pop(_PENDING, None)
    if pending is not None:
        pending.cache._commit(pending)


def drop_pending(session: Session, _previous: object = None) -> None:
    """``session``'s transaction rolled back: forget what it made and noted."""
    session.info.pop(_PENDING, None)
    session.info.pop(_OUTBOX_WRITTEN, None)


_OUTBOX_WRITTEN: Final = "latchsim.mqtt_outbox_written"


def note_outbox(session: Session) -> None:
    """Record that this transaction queued MQTT frames (see :func:`took_outbox`)."""
    session.info[_OUTBOX_WRITTEN] = True


def took_outbox(session: Session) -> bool:
    """Whether the transaction just committed queued MQTT frames (and forget it): the
    caller then wakes the MQTT bridge, so online doors get them at once (§10)."""
    return bool(session.info.pop(_OUTBOX_WRITTEN, False))


# Once for every session: listening per session cost more than sealing a bundle.
event.listen(Session, "after_commit", commit_pending)
event.listen(Session, "after_soft_rollback", drop_pending)


@dataclass(frozen=True)
class GrantTerms:
    """When a grant lets its person in: validity bounds and weekly windows."""

    valid_from: int
    valid_until: int
    schedule: tuple[tuple[int, int, int], ...]


_GRANTED_DOORS: Final = (
    # door grants first: where a person has both, the door grant's terms win
    "SELECT g.person_id, g.door_id, g.valid_from, g.valid_until, g.schedule, 0 AS rank, g.id"
    " FROM access_grant g WHERE g.door_id IS NOT NULL AND g.person_id IN {people}"
    " UNION ALL"
    " SELECT g.person_id, d.id, g.valid_from, g.valid_until, g.schedule, 1 AS rank, g.id"
    " FROM access_grant g JOIN door d ON d.property_id = g.property_id"
    " WHERE g.door_id IS NULL AND g.person_id IN {people}"
    " ORDER BY 6, 7"
)


def _granted_doors(sql: Sql, person_ids: list[str]) -> dict[str, dict[str, GrantTerms]]:
    """Per person, every door their grants cover with the terms that cover it."""
    people = marks(len(person_ids))
    doors: dict[str, dict[str, GrantTerms]] = {person_id: {} for person_id in person_ids}
    for person_id, door_id, start, end, schedule, _, _ in sql.rows(
        _GRANTED_DOORS.format(people=people), [*person_ids, *person_ids]
    ):
        windows = tuple((int(d), int(s), int(e)) for d, s, e in json_list(schedule))
        doors[person_id].setdefault(door_id, GrantTerms(int(start), int(end), windows))
    return doors


def doors_of_person(session: Session, person_id: str) -> dict[str, GrantTerms]:
    """Every door the person's grants cover, with the terms of the grant that covers it."""
    with Sql(session, writes=False) as sql:
        return granted_doors(sql, person_id)


def granted_doors(sql: Sql, person_id: str) -> dict[str, GrantTerms]:
    """:func:`doors_of_person` on an open :class:`~cloud.sql.Sql`."""
    return _granted_doors(sql, [person_id])[person_id]


_GRANTED_DOOR_IDS: Final = (
    "SELECT door_id FROM access_grant WHERE person_id = ? AND door_id IS NOT NULL"
    " UNION"
    " SELECT d.id FROM access_grant g JOIN door d ON d.property_id = g.property_id"
    " WHERE g.person_id = ? AND g.door_id IS NULL"
)


def granted_door_ids(sql: Sql, person_id: str) -> list[str]:
    """The doors of :func:`granted_doors`, sorted, without the terms of their grants
    (one small query: a phone login names the doors, nothing more)."""
    rows = sql.rows(_GRANTED_DOOR_IDS, [person_id, person_id])
    return sorted(door_id for (door_id,) in rows)


_OPENABLE_DOORS: Final = (
    "SELECT d.id, d.name, p.portfolio_id FROM door d JOIN property p ON p.id = d.property_id"
    " WHERE d.id IN (SELECT door_id FROM access_grant WHERE person_id = ? AND door_id IS NOT NULL)"
    " OR d.property_id IN"
    " (SELECT property_id FROM access_grant WHERE person_id = ? AND door_id IS NULL)"
)


def openable_doors(sql: Sql, person_id: str) -> list[tuple[str, str, str]]:
    """``(door id, door name, portfolio id)`` of every door the person's grants cover."""
    rows = sql.rows(_OPENABLE_DOORS, [person_id, person_id])
    return [(door_id, name, portfolio) for door_id, name, portfolio in rows]


@lru_cache(maxsize=4096)
def _entry(
    kind: CredentialKind,
    credential_id: str,
    grant: GrantTerms | None,
    *,
    status: CredentialStatus = CredentialStatus.ACTIVE,
    card_key: bytes = b"",
) -> bytes:
    """The canonical encoding of one entry, with the grant's validity and schedule.

    Kept per arguments: every change recomputes a person's entries on every door they
    open, and most are the same bytes each time."""
    if grant is None:
        return Credential(
            kind=kind, credential_id=bytes.fromhex(credential_id), status=status, card_key=card_key
        ).encoded
    schedule = tuple(Window(days=d, start_minute=s, end_minute=e) for d, s, e in grant.schedule)
    return Credential(
        kind=kind,
        credential_id=bytes.fromhex(credential_id),
        status=status,
        valid_from=grant.valid_from,
        valid_until=grant.valid_until,
        schedule=schedule,
        card_key=card_key,
    ).encoded


@dataclass(frozen=True)
class _Card:
    uid: str
    card_key: bytes
    active: bool


def _desired(
    person_id: str, grant: GrantTerms | None, cards: list[_Card], present: set[EntryKey]
) -> dict[EntryKey, bytes | None]:
    """What one door must hold for one person (None: remove)."""
    want: dict[EntryKey, bytes | None] = {}
    person_key = (int(CredentialKind.PERSON), person_id)
    want[person_key] = None
    if grant is not None:
        want[person_key] = _entry(CredentialKind.PERSON, person_id, grant)
    for card in cards:
        key = (int(CredentialKind.KEYCARD), card.uid)
        active = card.active and grant is not None
        if not active and key not in present:
            continue
        status = CredentialStatus.ACTIVE if active else CredentialStatus.REVOKED
        want[key] = _entry(
            CredentialKind.KEYCARD, card.uid, grant, status=status, card_key=card.card_key
        )
    return want


@dataclass
class _Door:
    """What the sync engine reads of a door row (locked for the transaction)."""

    id: str
    online: bool
    list_version: int
    synced_version: int
    sealing_public: bytes


def resync(
    sql: Sql,
    person_ids: Iterable[str],
    *,
    key: SigningKey,
    random: Callable[[int], bytes],
    cache: BundleCache,
) -> list[DoorChange]:
    """Bring every door's list in line with these people's grants and cards.

    Each door that changes is bumped once, whatever number of the people it concerns (a
    new door with a building's residents gets one version). The people's rows are locked
    first, in id order, so two changes for one person run one after the other, each
    reading the other's committed cards and entries; then the doors, in id order, so
    concurrent changes for other people never lose a version bump. Runs on raw DB-API
    statements in the caller's transaction (:mod:`cloud.sql`): a dozen statements
    whatever the number of doors.
    """
    ids = sorted(set(person_ids))
    if not ids:
        return []
    people = marks(len(ids))
    lock = sql.lock("FOR NO KEY UPDATE")  # card rows' FK locks don't conflict with it
    found = sql.rows(f"SELECT id FROM person WHERE id IN {people} ORDER BY id{lock}", ids)
    if len(found) != len(ids):
        raise NotFoundError(f"no person {sorted(set(ids) - {p for (p,) in found})[0]!r}")
    cards: dict[str, list[_Card]] = {person_id: [] for person_id in ids}
    for person_id, uid, card_key, state in sql.rows(
        f"SELECT person_id, uid, card_key, state FROM keycard WHERE person_id IN {people}", ids
    ):
        cards[person_id].append(_Card(uid, bytes(card_key), state == "active"))
    granted = _granted_doors(sql, ids)
    keys = {key for _, key in _keys_of(ids, cards)}
    entries = _entries_of(sql, keys)
    holding = {door_id for door_id, held in entries.items() if any(held.values())}
    doors = _lock_doors(sql, sorted(holding.union(*granted.values())))
    # A door concerns only the people granted it and those whose keys it holds; for
    # anyone else _desired asks for nothing the door does not already lack.
    owner = {key: person_id for person_id, key in _keys_of(ids, cards)}
    position = {person_id: n for n, person_id in enumerate(ids)}
    grantees: dict[str, list[str]] = {}
    for person_id in ids:
        for door_id in granted[person_id]:
            grantees.setdefault(door_id, []).append(person_id)
    changed: list[_DoorDiff] = []
    for door in doors:
        held = entries.get(door.id, {})
        present = {k for k, encoded in held.items() if encoded is not None}
        concerned = set(grantees.get(door.id, ())).union(map(owner.__getitem__, present))
        diff: dict[EntryKey, bytes | None] = {}
        for person_id in sorted(concerned, key=position.__getitem__):  # in id order, as ever
            grant = granted[person_id].get(door.id)
            for k, v in _desired(person_id, grant, cards[person_id], present).items():
                if held.get(k) != v:
                    diff[k] = v
        if diff:
            changed.append(_bump(sql, door, diff, held, cache))
    _write_bumps(sql, changed)
    _queue_bundles(sql, [c for c in changed if c.door.online], key, random, cache)
    return [DoorChange(c.door.id, c.door.list_version) for c in changed]


def _keys_of(ids: list[str], cards: dict[str, list[_Card]]) -> Iterator[tuple[str, EntryKey]]:
    """``(person id, key)`` of every entry the people may have on a door: their own and
    their cards'."""
    for person_id in ids:
        yield person_id, (int(CredentialKind.PERSON), person_id)
        for card in cards[person_id]:
            yield person_id, (int(CredentialKind.KEYCARD), card.uid)


def _entries_of(sql: Sql, keys: set[EntryKey]) -> dict[str, dict[EntryKey, bytes | None]]:
    """Per door, the rows (tombstones too) of any of ``keys``."""
    ids = sorted({cid for _, cid in keys})
    rows = sql.rows(
        "SELECT door_id, kind, credential_id, encoded FROM door_entry"
        f" WHERE credential_id IN {marks(len(ids))}",
        ids,
    )
    entries: dict[str, dict[EntryKey, bytes | None]] = {}
    for door_id, kind, cid, encoded in rows:
        if (kind, cid) in keys:
            held = None if encoded is None else bytes(encoded)
            entries.setdefault(door_id, {})[(kind, cid)] = held
    return entries


def _lock_doors(sql: Sql, door_ids: list[str]) -> list[_Door]:
    """Lock the doors' rows for this transaction (in id order) and read them."""
    if not door_ids:
        return []
    rows = sql.rows(
        "SELECT id, online, list_version, synced_version, sealing_public FROM door"
        f" WHERE id IN {marks(len(door_ids))} ORDER BY id{sql.lock()}",
        door_ids,
    )
    return [_Door(i, bool(o), lv, sv, bytes(sp)) for i, o, lv, sv, sp in rows]


@dataclass
class _DoorDiff:
    """One door's new version: the entries that changed and the list they make."""

    door: _Door
    diff: dict[EntryKey, bytes | None]
    existing: set[EntryKey]
    upserts: list[Credential]
    removals: list[CredentialKey]
    held: CredentialList


def _bump(
    sql: Sql,
    door: _Door,
    diff: dict[EntryKey, bytes | None],
    held: dict[EntryKey, bytes | None],
    cache: BundleCache,
) -> _DoorDiff:
    """Move ``door`` one version on by ``diff`` (in memory; :func:`_write_bumps` writes)."""
    base_list = cache.list_at(sql.session, door.id, door.list_version) or _read_list(
        sql, door.id, door.list_version
    )
    door.list_version += 1
    upserts = [_decoded(e) for e in diff.values() if e is not None]
    removals = [(kind, bytes.fromhex(cid)) for (kind, cid), e in diff.items() if e is None]
    new_list = base_list.with_changes(version=door.list_version, upserts=upserts, removals=removals)
    cache.keep_list(sql.session, door.id, new_list)
    return _DoorDiff(door, diff, set(held), upserts, removals, new_list)


def _write_bumps(sql: Sql, changed: list[_DoorDiff]) -> None:
    """Write every bumped door: version, changed entries, and the new version's digest."""
    updates: list[tuple[bytes | None, int, str, int, str]] = []
    inserts: list[tuple[str, int, str, bytes | None, int]] = []
    for c in changed:
        door_id, version, existing = c.door.id, c.door.list_version, c.existing
        for (kind, cid), encoded in c.diff.items():
            if (kind, cid) in existing:
                updates.append((encoded, version, door_id, kind, cid))
            else:
                inserts.append((door_id, kind, cid, encoded, version))
    sql.run_many(
        "UPDATE door_entry SET encoded = ?, changed_version = ?"
        " WHERE door_id = ? AND kind = ? AND credential_id = ?",
        updates,
    )
    sql.run_many(
        "INSERT INTO door_entry (door_id, kind, credential_id, encoded, changed_version)"
        " VALUES (?, ?, ?, ?, ?)",
        inserts,
    )
    sql.run_many(
        "UPDATE door SET list_version = ? WHERE id = ?",
        [(c.door.list_version, c.door.id) for c in changed],
    )
    sql.run_many(
        "INSERT INTO door_version (door_id, version, digest) VALUES (?, ?, ?)",
        [(c.door.id, c.door.list_version, c.held.digest) for c in changed],
    )


def _queue_bundles(
    sql: Sql,
    changed: list[_DoorDiff],
    key: SigningKey,
    random: Callable[[int], bytes],
    cache: BundleCache,
) -> None:
    """Seal each online door's bundle from its synced version into the MQTT outbox.

    A door in sync needs exactly this change; the entries of doors further behind are
    read in one query for all of them.
    """
    behind = [c.door.id for c in changed if c.door.synced_version != c.door.list_version - 1]
    missed: dict[str, list[Change]] = {door_id: [] for door_id in behind}
    if behind:
        for door_id, kind, cid, encoded in sql.rows(
            "SELECT e.door_id, e.kind, e.credential_id, e.encoded"
            " FROM door_entry e JOIN door d ON d.id = e.door_id"
            f" WHERE e.door_id IN {marks(len(behind))} AND e.changed_version > d.synced_version",
            behind,
        ):
            missed[door_id].append(_change(kind, cid, encoded))
    outbox = []
    for c in changed:
        door = c.door
        known = missed.get(door.id) or [
            *map(Upsert, c.upserts),
            *(Remove(CredentialKind(kind), cid) for kind, cid in c.removals),
        ]
        frame = _sealed(
            sql.session,
            door.id,
            door.sealing_public,
            door.synced_version,
            door.list_version,
            key=key,
            random=random,
            cache=cache,
            contents=_given(known, c.held.digest),
        )
        outbox.append((door_topic(bytes.fromhex(door.id), "bundle"), frame, True))
    queue_frames(sql, outbox)


def _given(changes: list[Change], digest: bytes) -> Callable[[int], tuple[list[Change], bytes]]:
    """Contents for :func:`_sealed` that the caller already has."""
    return lambda _base: (changes, digest)


@lru_cache(maxsize=4096)
def _decoded(encoded: bytes) -> Credential:
    """An entry's bytes as read back from ``door_entry`` (frozen, so shared safely)."""
    return Credential.from_encoded(encoded)


def _change(kind: int, credential_id: str, encoded: bytes | None) -> Change:
    if encoded is not None:
        return Upsert(_decoded(bytes(encoded)))
    return Remove(CredentialKind(kind), bytes.fromhex(credential_id))


def _read_list(sql: Sql, door_id: str, version: int) -> CredentialList:
    blobs = sql.rows(
        "SELECT encoded FROM door_entry WHERE door_id = ? AND encoded IS NOT NULL", [door_id]
    )
    return CredentialList.from_encoded_entries(
        door_id=bytes.fromhex(door_id), version=version, entries=[bytes(b) for (b,) in blobs]
    )


def door_list(session: Session, door: Door) -> CredentialList:
    """The door's current list, from its materialised entries."""
    blobs = session.execute(
        select(DoorEntry.encoded).where(
            DoorEntry.door_id == door.id, DoorEntry.encoded.is_not(None)
        )
    ).scalars()
    return CredentialList.from_encoded_entries(
        door_id=bytes.fromhex(door.id),
        version=door.list_version,
        entries=[b for b in blobs if b is not None],
    )


def bundle_frame(
    session: Session,
    door: Door,
    base: int,
    *,
    key: SigningKey,
    random: Callable[[int], bytes],
    cache: BundleCache,
) -> bytes:
    """The sealed, signed bundle taking ``door`` from ``base`` to its current version."""
    with Sql(session, writes=False) as sql:
        return door_bundle(
            sql,
            door.id,
            door.sealing_public,
            base,
            door.list_version,
            key=key,
            random=random,
            cache=cache,
        )


def door_bundle(
    sql: Sql,
    door_id: str,
    sealing_public: bytes,
    base: int,
    target: int,
    *,
    key: SigningKey,
    random: Callable[[int], bytes],
    cache: BundleCache,
) -> bytes:
    """:func:`bundle_frame` on raw statements, for a door at ``target`` (its list version):
    the entries changed after ``base`` and the recorded digest, two statements."""

    def contents(base: int) -> tuple[bytes, bytes]:
        rows = sql.rows(
            "SELECT kind, credential_id, encoded FROM door_entry"
            " WHERE door_id = ? AND changed_version > ?",
            [door_id, base],
        )
        recorded = sql.row(
            "SELECT digest FROM door_version WHERE door_id = ? AND version = ?", [door_id, target]
        )
        digest = bytes(recorded[0]) if recorded else _read_list(sql, door_id, target).digest
        return _stored_changes(rows), digest

    return _sealed(
        sql.session,
        door_id,
        sealing_public,
        base,
        target,
        key=key,
        random=random,
        cache=cache,
        contents=contents,
    )


def _stored_changes(rows: Iterable[tuple[int, str, bytes | None]]) -> bytes:
    """The canonical plaintext of ``door_entry`` rows ``(kind, credential_id, encoded)``,
    without decoding the entries the cloud encoded (a removal where ``encoded`` is NULL)."""
    upserts: list[bytes] = []
    removals: list[bytes] = []
    for kind, cid, encoded in rows:
        if encoded is None:
            removals.append(bytes((kind,)) + bytes.fromhex(cid))
        else:
            upserts.append(bytes(encoded))
    return encode_entry_changes(upserts, removals)


Contents = Callable[[int], tuple[list[Change] | bytes, bytes]]
"""What :func:`_sealed` seals, given the base: the changes since it (or their canonical
encoding), and the digest of the list at the target."""


def _sealed(
    session: Session,
    door_id: str,
    sealing_public: bytes,
    base: int,
    target: int,
    *,
    key: SigningKey,
    random: Callable[[int], bytes],
    cache: BundleCache,
    contents: Contents,
) -> bytes:
    """The bundle from ``base`` (0 if it is no version before ``target``) to ``target``,
    from the cache or sealed from ``contents(base)``."""
    base = base if 0 <= base < target else 0
    cache_key = (door_id, base, target, key.epoch)  # a rotation must re-sign
    frame = cache.frame(session, cache_key)
    if frame is not None:
        return frame
    changes, digest = contents(base)
    frame = seal_encoded_changes(
        changes if isinstance(changes, bytes) else encode_changes(changes),
        door_id=bytes.fromhex(door_id),
        door_public=_sealing_key(sealing_public),
        base_version=base,
        target_version=target,
        target_digest=digest,
        key_epoch=key.epoch,
        cloud_key=key.private,
        ephemeral=x25519_private_from_seed(random(32)),
    ).to_frame()
    cache.keep_frame(session, cache_key, frame)
    return frame


@lru_cache(maxsize=4096)
def _sealing_key(sealing_public: bytes) -> X25519PublicKey:
    """A door's sealing key, parsed once (keys are immutable; the bytes are the key)."""
    return x25519_public_from_bytes(bytes(sealing_public))


def accept_receipt(session: Session, door: Door, payload: bytes) -> Receipt:
    """Verify a receipt with the door's key and advance its synced version.

    Raises :class:`protocol.AuthenticationError` for a forged receipt. A receipt
    whose digest is not the digest this cloud recorded for that version changes
    nothing. CAPACITY_EXCEEDED is recorded on the door for the console. (The session's
    objects are expired: ``door`` reads its new values.)
    """
    with Sql(session) as sql:
        return receipt_on(sql, door.id, payload).receipt


_DOOR_RECEIPT: Final = (
    "SELECT identity_public, synced_version, list_version, capacity_error FROM door WHERE id = ?"
)


class Accepted(NamedTuple):
    """What :func:`receipt_on` did: the verified receipt, the door's synced version after."""

    receipt: Receipt
    synced_version: int


def receipt_on(sql: Sql, door_id: str, payload: bytes) -> Accepted:
    """:func:`accept_receipt` on raw statements: the door's row locked, read and written
    once (not at all when nothing changes)."""
    row = sql.row(_DOOR_RECEIPT + sql.lock(), [door_id])
    if row is None:
        raise NotFoundError(f"no door {door_id!r}")
    identity, synced, listed, capacity_error = bytes(row[0]), row[1], row[2], row[3]
    receipt = Receipt.verified_from_bytes(payload, identity_key(identity))
    if receipt.door_id.hex() != door_id:
        raise WrongDoorError("receipt is from another door")
    known = sql.row(
        "SELECT digest FROM door_version WHERE door_id = ? AND version = ?",
        [door_id, receipt.list_version],
    )
    matches = (known is not None and bytes(known[0]) == receipt.list_digest) or (
        receipt.list_version == 0
        and receipt.list_digest == CredentialList.empty(bytes.fromhex(door_id)).digest
    )
    new_synced, new_error = synced, capacity_error
    if matches and receipt.list_version > synced:
        new_synced = receipt.list_version
    if receipt.status is ReceiptStatus.CAPACITY_EXCEEDED:
        new_error = (
            f"the lock's credential store is full: version {receipt.requested_version} was refused"
        )
    elif matches and receipt.list_version >= listed:
        new_error = None
    if (new_synced, new_error) != (synced, capacity_error):
        sql.run(
            "UPDATE door SET synced_version = ?, capacity_error = ? WHERE id = ?",
            [new_synced, new_error, door_id],
        )
    return Accepted(receipt, new_synced)


@lru_cache(maxsize=4096)
def identity_key(identity_public: bytes) -> Ed25519PublicKey:
    """A lock's identity key, parsed once (keys are immutable: the bytes are the key)."""
    return ed25519_public_from_bytes(bytes(identity_public))


# --- catch-up bundles and key rotations for MQTT doors (used by cloud.mqtt_bridge) --------


def queue_bundle(
    session: Session,
    door: Door,
    base: int,
    *,
    key: SigningKey,
    random: Callable[[int], bytes],
    cache: BundleCache,
) -> None:
    """Queue the door's bundle from ``base`` to its current version, retained (§10)."""
    with Sql(session, writes=False) as sql:
        queue_bundle_on(sql, door.id, base, key=key, random=random, cache=cache)


def queue_bundle_on(
    sql: Sql,
    door_id: str,
    base: int,
    *,
    key: SigningKey,
    random: Callable[[int], bytes],
    cache: BundleCache,
) -> None:
    """:func:`queue_bundle` on raw statements."""
    row = sql.row("SELECT sealing_public, list_version FROM door WHERE id = ?", [door_id])
    if row is None:
        raise NotFoundError(f"no door {door_id!r}")
    frame = door_bundle(
        sql, door_id, bytes(row[0]), base, row[1], key=key, random=random, cache=cache
    )
    queue_frames(sql, [(door_topic(bytes.fromhex(door_id), "bundle"), frame, True)])


def queue_frames(sql: Sql, frames: list[tuple[str, bytes, bool]]) -> None:
    """Queue ``(topic, payload, retain)`` frames in the MQTT outbox, in this transaction
    (:func:`note_outbox`: the bridge is woken after the commit)."""
    sql.run_many(
        "INSERT INTO mqtt_outbox (topic, payload, retain, sent) VALUES (?, ?, ?, ?)",
        [(topic, payload, retain, False) for topic, payload, retain in frames],
    )
    if frames:
        note_outbox(sql.session)


def rotation_frames(session: Session, *, after: int) -> list[bytes]:
    """The KEY_ROTATION frames introducing every epoch above ``after``, oldest first."""
    rows = session.execute(
        select(CloudKey.rotation)
        .where(CloudKey.epoch > after, CloudKey.rotation.is_not(None))
        .order_by(CloudKey.epoch)
    ).scalars()
    return [frame for frame in rows if frame is not None]


def queue_rotations(session: Session, *, after: int, topic: str) -> int:
    """Queue the rotations a lock at epoch ``after`` lacks, in order (§6.7); return how many.

    Only the newest is retained, as ``topic`` holds the newest rotation (§10). Locks at
    other epochs answer the older ones with KEY_ROTATION_ORDER and change nothing.
    """
    with Sql(session, writes=False) as sql:
        return queue_rotations_on(sql, after=after, topic=topic)


def queue_rotations_on(sql: Sql, *, after: int, topic: str) -> int:
    """:func:`queue_rotations` on raw statements."""
    rows = sql.rows(
        "SELECT rotation FROM cloud_key WHERE epoch > ? AND rotation IS NOT NULL ORDER BY epoch",
        [after],
    )
    frames = [bytes(frame) for (frame,) in rows]
    queue_frames(sql, [(topic, frame, n == len(frames) - 1) for n, frame in enumerate(frames)])
    return len(frames)
