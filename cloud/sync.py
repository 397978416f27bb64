"""The sync engine: desired lists, version bumps, bundles, receipts.

Theory of operation: the source of truth is people, grants and keycards. After
any change to them, :func:`resync_person` recomputes what each affected door must
hold for that person (a PERSON entry per grant; a KEYCARD entry per card:
ACTIVE when active, REVOKED once deactivated or lost), compares with the door's
materialised list (:class:`~cloud.models.DoorEntry`) and, for each door whose
list differs, bumps the door's version exactly once, writes the changed entries
with that version, records the new list digest, and — for an online door —
queues the bundle in the MQTT outbox in the same transaction.

Each door row is locked before its entries are read (:func:`_lock_door`:
``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite a no-op UPDATE takes the
database write lock, since pysqlite opens a transaction only at the first write)
and re-read past the session's identity map, so two concurrent changes never
lose a version bump. A bundle from base *b* carries every entry
changed after *b* (:func:`bundle_frame`); bundles are cached per (door, base,
target) so that every phone carries identical bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
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
    seal_bundle,
)
from protocol.bundle import Change, Remove, Upsert
from protocol.crypto import (
    ed25519_public_from_bytes,
    x25519_private_from_seed,
    x25519_public_from_bytes,
)
from protocol.transport import door_topic

from .keys import SigningKey
from .models import (
    CloudKey,
    Door,
    DoorEntry,
    DoorVersion,
    Grant,
    Keycard,
    MqttOutbox,
    Person,
)

__all__ = [
    "BundleCache",
    "DoorChange",
    "accept_receipt",
    "bundle_frame",
    "door_list",
    "doors_of_person",
    "queue_bundle",
    "queue_rotations",
    "resync_person",
    "rotation_frames",
]

EntryKey = tuple[int, str]
"""``(kind, credential_id hex)``: a credential's key in the ``door_entry`` table."""


@dataclass(frozen=True)
class DoorChange:
    """A door whose list moved to ``version`` because of a change."""

    door_id: str
    version: int


class BundleCache:
    """Sealed bundles by (door, base, target, signing-key epoch), shared within a process."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._frames: dict[tuple[str, int, int, int], bytes] = {}

    def get(self, key: tuple[str, int, int, int]) -> bytes | None:
        return self._frames.get(key)

    def put(self, key: tuple[str, int, int, int], frame: bytes) -> None:
        if len(self._frames) >= self.limit:
            self._frames.pop(next(iter(self._frames)))
        self._frames[key] = frame


def doors_of_person(session: Session, person_id: str) -> dict[str, Grant]:
    """Every door the person's grants cover, with the grant that covers it."""
    doors: dict[str, Grant] = {}
    grants = session.execute(select(Grant).where(Grant.person_id == person_id)).scalars()
    for grant in sorted(grants, key=lambda g: g.door_id is None):  # door grants win
        for door_id in _doors_of_grant(session, grant):
            doors.setdefault(door_id, grant)
    return doors


def _doors_of_grant(session: Session, grant: Grant) -> list[str]:
    if grant.door_id is not None:
        return [grant.door_id]
    return list(
        session.execute(select(Door.id).where(Door.property_id == grant.property_id)).scalars()
    )


def _entry(
    kind: CredentialKind,
    credential_id: str,
    grant: Grant | None,
    *,
    status: CredentialStatus = CredentialStatus.ACTIVE,
    card_key: bytes = b"",
) -> bytes:
    """The canonical encoding of one entry, with the grant's validity and schedule."""
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


def _desired(
    person: Person, grant: Grant | None, cards: list[Keycard], present: set[EntryKey]
) -> dict[EntryKey, bytes | None]:
    """What one door must hold for one person (None: remove)."""
    want: dict[EntryKey, bytes | None] = {}
    person_key = (int(CredentialKind.PERSON), person.id)
    want[person_key] = None
    if grant is not None:
        want[person_key] = _entry(CredentialKind.PERSON, person.id, grant)
    for card in cards:
        key = (int(CredentialKind.KEYCARD), card.uid)
        active = card.state == "active" and grant is not None
        if not active and key not in present:
            continue
        status = CredentialStatus.ACTIVE if active else CredentialStatus.REVOKED
        want[key] = _entry(
            CredentialKind.KEYCARD, card.uid, grant, status=status, card_key=card.card_key
        )
    return want


def resync_person(
    session: Session,
    person_id: str,
    *,
    key: SigningKey,
    random: Callable[[int], bytes],
    cache: BundleCache,
) -> list[DoorChange]:
    """Bring every door's list in line with this person's grants and cards.

    The person's row is locked first, so two changes for one person run one after
    the other, each reading the other's committed cards (``populate_existing``
    refreshes objects this session loaded before the lock).
    """
    fresh = {"populate_existing": True}
    person = session.execute(
        select(Person)
        .where(Person.id == person_id)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE: card rows' FK locks don't conflict
        .execution_options(**fresh)
    ).scalar_one()
    cards = list(
        session.execute(
            select(Keycard).where(Keycard.person_id == person_id).execution_options(**fresh)
        ).scalars()
    )
    granted = doors_of_person(session, person_id)
    keys = [(int(CredentialKind.PERSON), person_id)] + [
        (int(CredentialKind.KEYCARD), c.uid) for c in cards
    ]
    holding = _doors_holding(session, keys)
    changes = []
    for door_id in sorted(set(granted) | holding):
        change = _resync_door(
            session,
            door_id,
            person,
            granted.get(door_id),
            cards,
            keys,
            key=key,
            random=random,
            cache=cache,
        )
        if change is not None:
            changes.append(change)
    return changes


def _doors_holding(session: Session, keys: list[EntryKey]) -> set[str]:
    doors: set[str] = set()
    for kind, cid in keys:
        rows = session.execute(
            select(DoorEntry.door_id).where(
                DoorEntry.kind == kind,
                DoorEntry.credential_id == cid,
                DoorEntry.encoded.is_not(None),
            )
        )
        doors.update(rows.scalars())
    return doors


def _resync_door(
    session: Session,
    door_id: str,
    person: Person,
    grant: Grant | None,
    cards: list[Keycard],
    keys: list[EntryKey],
    *,
    key: SigningKey,
    random: Callable[[int], bytes],
    cache: BundleCache,
) -> DoorChange | None:
    door = _lock_door(session, door_id)
    rows = {
        (r.kind, r.credential_id): r
        for r in session.execute(
            select(DoorEntry).where(
                DoorEntry.door_id == door_id, DoorEntry.credential_id.in_([cid for _, cid in keys])
            )
        ).scalars()
    }
    present = {k for k, r in rows.items() if r.encoded is not None}
    want = _desired(person, grant, cards, present)
    diff = {k: v for k, v in want.items() if (rows[k].encoded if k in rows else None) != v}
    if not diff:
        return None
    door.list_version += 1
    for entry_key, encoded in diff.items():
        row = rows.get(entry_key)
        if row is None:
            session.add(
                DoorEntry(
                    door_id=door_id,
                    kind=entry_key[0],
                    credential_id=entry_key[1],
                    encoded=encoded,
                    changed_version=door.list_version,
                )
            )
        else:
            row.encoded, row.changed_version = encoded, door.list_version
    session.flush()
    held = door_list(session, door)
    session.add(DoorVersion(door_id=door_id, version=door.list_version, digest=held.digest))
    session.flush()  # bundle_frame reads the digest back instead of rebuilding the list
    if door.online:
        frame = bundle_frame(
            session, door, door.synced_version, key=key, random=random, cache=cache
        )
        session.add(
            MqttOutbox(
                topic=door_topic(bytes.fromhex(door_id), "bundle"), payload=frame, retain=True
            )
        )
    return DoorChange(door_id, door.list_version)


def _lock_door(session: Session, door_id: str) -> Door:
    """Lock the door's row for this transaction and read it fresh.

    ``populate_existing`` matters: a Door the session loaded before the lock (the
    portfolio check loads them) would otherwise keep its stale ``list_version``.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(Door)
            .where(Door.id == door_id)
            .values(list_version=Door.list_version)
            .execution_options(synchronize_session=False)
        )
    query = select(Door).where(Door.id == door_id).with_for_update()
    return session.execute(query.execution_options(populate_existing=True)).scalar_one()


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
    base = base if 0 <= base < door.list_version else 0
    cache_key = (door.id, base, door.list_version, key.epoch)  # a rotation must re-sign
    frame = cache.get(cache_key)
    if frame is not None:
        return frame
    rows = session.execute(
        select(DoorEntry).where(DoorEntry.door_id == door.id, DoorEntry.changed_version > base)
    ).scalars()
    changes: list[Change] = [
        Upsert(Credential.from_encoded(r.encoded))
        if r.encoded is not None
        else Remove(CredentialKind(r.kind), bytes.fromhex(r.credential_id))
        for r in rows
    ]
    bundle = seal_bundle(
        changes,
        door_id=bytes.fromhex(door.id),
        door_public=x25519_public_from_bytes(door.sealing_public),
        base_version=base,
        target_version=door.list_version,
        target_digest=_current_digest(session, door),
        key_epoch=key.epoch,
        cloud_key=key.private,
        ephemeral=x25519_private_from_seed(random(32)),
    )
    frame = bundle.to_frame()
    cache.put(cache_key, frame)
    return frame


def _current_digest(session: Session, door: Door) -> bytes:
    """The digest recorded for the door's current version (recomputed only if missing)."""
    recorded = session.get(DoorVersion, (door.id, door.list_version))
    return recorded.digest if recorded is not None else door_list(session, door).digest


def accept_receipt(session: Session, door: Door, payload: bytes) -> Receipt:
    """Verify a receipt with the door's key and advance its synced version.

    Raises :class:`protocol.AuthenticationError` for a forged receipt. A receipt
    whose digest is not the digest this cloud recorded for that version changes
    nothing. CAPACITY_EXCEEDED is recorded on the door for the console.
    """
    receipt = Receipt.verified_from_bytes(payload, ed25519_public_from_bytes(door.identity_public))
    if receipt.door_id.hex() != door.id:
        raise WrongDoorError("receipt is from another door")
    known = session.get(DoorVersion, (door.id, receipt.list_version))
    matches = (known is not None and known.digest == receipt.list_digest) or (
        receipt.list_version == 0
        and receipt.list_digest == CredentialList.empty(bytes.fromhex(door.id)).digest
    )
    if matches and receipt.list_version > door.synced_version:
        door.synced_version = receipt.list_version
    if receipt.status is ReceiptStatus.CAPACITY_EXCEEDED:
        door.capacity_error = (
            f"the lock's credential store is full: version {receipt.requested_version} was refused"
        )
    elif matches and receipt.list_version >= door.list_version:
        door.capacity_error = None
    return receipt


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
    frame = bundle_frame(session, door, base, key=key, random=random, cache=cache)
    topic = door_topic(bytes.fromhex(door.id), "bundle")
    session.add(MqttOutbox(topic=topic, payload=frame, retain=True))


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
    frames = rotation_frames(session, after=after)
    for index, frame in enumerate(frames):
        session.add(MqttOutbox(topic=topic, payload=frame, retain=index == len(frames) - 1))
    return len(frames)
