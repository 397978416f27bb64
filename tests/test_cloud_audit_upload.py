"""Audit uploads on raw statements (cloud.lock_uploads.store_audit), SQLite and PostgreSQL.

What a verified batch proves is written once per upload: the events (only those not stored
yet), the door's next sequence number, when it was last seen (never moved back by an older
batch), and who opened a door with the app (the first-use rule). A gap stores nothing and
is counted; a batch signed by another key changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from cloud.models import AuditRecord, Door, Person
from protocol import AuditEvent, AuditEventKind, AuthenticationError, Reason
from protocol.crypto import ed25519_private_from_seed
from tests.cloud_world import CloudWorld, world_at
from tests.db_fixtures import database_url  # noqa: F401  (fixture: SQLite, PostgreSQL)
from tests.test_cloud_key_epochs import signed_batch

BASEMENT = "Tower basement"


@pytest.fixture
def world(database_url: str) -> Iterator[CloudWorld]:  # noqa: F811
    made = world_at(database_url)
    yield made
    made.engine.dispose()


def _phone_open(seq: int, time: int, person_id: str) -> AuditEvent:
    return AuditEvent(
        seq=seq,
        time=time,
        kind=AuditEventKind.PHONE_DECISION,
        reason=Reason.GRANTED,
        credential_id=bytes.fromhex(person_id),
    )


def _door(world: CloudWorld, door_id: str) -> Door:
    with world.sessions() as session:
        door = session.get(Door, door_id)
        assert door is not None
        return door


def _seen(world: CloudWorld, door_id: str) -> datetime | None:
    """The door's last seen, aware (SQLite hands back its UTC fields naive)."""
    seen = _door(world, door_id).last_seen
    return seen if seen is None or seen.tzinfo else seen.replace(tzinfo=UTC)


def _stored(world: CloudWorld, door_id: str) -> list[int]:
    with world.sessions() as session:
        query = select(AuditRecord.seq).where(AuditRecord.door_id == door_id)
        return sorted(session.scalars(query))


def _upload(world: CloudWorld, door_id: str, payload: bytes) -> tuple[int, bool]:
    with world.service() as cloud:
        ack, gap = cloud.store_audit(door_id, payload, app_users=True)
    return ack.up_to_seq, gap


def test_an_upload_stores_new_events_and_what_they_prove(world: CloudWorld) -> None:
    door_id = world.seed.doors[BASEMENT]
    key = ed25519_private_from_seed(world.locks[door_id].state.identity.identity_seed)
    person = next(iter(world.seed.people.values()))
    with world.sessions.begin() as session:
        row = session.get(Person, person)
        assert row is not None
        row.used_app = False
    t1, t2 = world.now - 600, world.now - 60
    first = signed_batch(door_id, (_phone_open(1, t1, person),), key)
    assert _upload(world, door_id, first) == (1, False)
    assert _seen(world, door_id) == datetime.fromtimestamp(t1, UTC)
    with world.sessions() as session:
        assert session.get(Person, person).used_app  # type: ignore[union-attr]

    both = signed_batch(door_id, (_phone_open(1, t1, person), _phone_open(2, t2, person)), key)
    assert _upload(world, door_id, both) == (2, False)  # event 1 again: stored once
    assert _stored(world, door_id) == [1, 2]
    assert _seen(world, door_id) == datetime.fromtimestamp(t2, UTC)

    assert _upload(world, door_id, first) == (2, False)  # a replay of the older batch
    assert _seen(world, door_id) == datetime.fromtimestamp(t2, UTC)  # not back

    future = signed_batch(door_id, (_phone_open(3, world.now + 3600, person),), key)
    _upload(world, door_id, future)
    assert _seen(world, door_id) == datetime.fromtimestamp(
        world.now, UTC
    )  # never later than the cloud's now


def test_a_gap_stores_nothing_and_is_counted(world: CloudWorld) -> None:
    door_id = world.seed.doors[BASEMENT]
    key = ed25519_private_from_seed(world.locks[door_id].state.identity.identity_seed)
    person = next(iter(world.seed.people.values()))
    gaps = _door(world, door_id).audit_gaps
    beyond = signed_batch(door_id, (_phone_open(5, world.now, person),), key)
    assert _upload(world, door_id, beyond) == (0, True)
    assert _stored(world, door_id) == []
    assert _door(world, door_id).audit_gaps == gaps + 1


def test_a_batch_signed_by_another_key_changes_nothing(world: CloudWorld) -> None:
    door_id = world.seed.doors[BASEMENT]
    person = next(iter(world.seed.people.values()))
    forged = signed_batch(
        door_id, (_phone_open(1, world.now, person),), ed25519_private_from_seed(bytes(32))
    )
    before = (_door(world, door_id).audit_next_seq, _seen(world, door_id))
    with pytest.raises(AuthenticationError), world.service() as cloud:
        cloud.store_audit(door_id, forged, app_users=True)
    assert (_door(world, door_id).audit_next_seq, _seen(world, door_id)) == before
    with world.sessions() as session:
        count = session.scalar(select(func.count()).select_from(AuditRecord))
    assert count == 0
