"""The raw statements' fast paths against their references, on SQLite and PostgreSQL.

``Sql.insert`` (multi-row statements) must store exactly the rows ``executemany`` of the
one-row statement stores, in the same order (SQLite's rowids follow it), whatever the
count: below, at and above each chunk size; a row that breaks a constraint fails it as
there. ``Sql.stamp_at`` and the kept parses of ``Sql.moment`` give what ``Sql.stamp``
and SQLAlchemy's own conversion give. ``granted_door_ids`` (a phone login's doors) names
the doors ``granted_doors`` finds, whichever grants (door, property, both) cover them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from cloud.models import Door, Grant
from cloud.sql import _SQLITE_DATETIME_OUT, INSERT_CHUNK, Sql, _most_rows
from cloud.sync import granted_door_ids, granted_doors
from tests.cloud_world import CloudWorld, world_at

COLUMNS = "audit_record (door_id, seq, time, kind, reason, credential_id, detail)"


@pytest.fixture
def world(database_url: str) -> Iterator[CloudWorld]:
    world = world_at(database_url)
    yield world
    world.engine.dispose()


def _rows(door_id: str, count: int) -> list[tuple[object, ...]]:
    # seqs out of order, so the rowid order shows the insertion order
    return [
        (door_id, (n * 7919) % 100_003, 1_800_000_000 + n, n % 11, n % 3, f"{n:032x}", n * 5)
        for n in range(count)
    ]


def _stored(sql: Sql, door_id: str) -> list[tuple[object, ...]]:
    order = "seq" if sql.postgres else "rowid"
    return sql.rows(
        "SELECT door_id, seq, time, kind, reason, credential_id, detail FROM audit_record"
        f" WHERE door_id = ? ORDER BY {order}",
        [door_id],
    )


COUNTS = [0, 1, 3, 4, 5, 7, 8, 31, INSERT_CHUNK - 1, INSERT_CHUNK, INSERT_CHUNK + 3, 200, 485]


@pytest.mark.parametrize("count", COUNTS)
def test_insert_stores_what_executemany_stores(world: CloudWorld, count: int) -> None:
    fast, reference = world.seed.doors["Tower lobby"], world.seed.doors["Tower gym"]
    with world.sessions.begin() as session, Sql(session) as sql:
        sql.insert(COLUMNS, _rows(fast, count))
        sql.run_many(
            "INSERT INTO audit_record (door_id, seq, time, kind, reason, credential_id, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            _rows(reference, count),
        )
        stored, expected = _stored(sql, fast), _stored(sql, reference)
    assert len(stored) == count
    assert [row[1:] for row in stored] == [row[1:] for row in expected]
    if count:
        assert stored[0][0] == fast


def test_a_chunk_fits_every_sqlite_build() -> None:
    for width in range(1, 1200):
        most = _most_rows(width)
        assert most & (most - 1) == 0 and most <= INSERT_CHUNK  # a power of two
        assert most == 1 or most * width <= 999


def test_insert_refuses_a_duplicate_key_like_executemany(world: CloudWorld) -> None:
    door = world.seed.doors["Tower lobby"]
    rows = _rows(door, 40)
    dbapi = world.engine.dialect.dbapi
    assert dbapi is not None
    for duplicate in (rows[17], rows[39]):  # caught in a multi-row chunk, and at the end
        refused = pytest.raises(dbapi.IntegrityError)
        with refused, world.sessions.begin() as session, Sql(session) as sql:
            sql.insert(COLUMNS, [*rows, duplicate])
        with world.sessions() as session, Sql(session, writes=False) as sql:
            assert _stored(sql, door) == []  # nothing of the failed transaction stays


@given(seconds=st.integers(min_value=0, max_value=0xFFFF_FFFF))
def test_stamp_at_is_stamp_of_that_second(seconds: int) -> None:
    when = datetime.fromtimestamp(seconds, UTC)
    for postgres in (False, True):
        sql = Sql.__new__(Sql)
        sql.postgres = postgres
        assert sql.stamp_at(seconds) == sql.stamp(when)
        assert sql.moment(sql.stamp_at(seconds)) == when
        if not postgres:
            parsed = _SQLITE_DATETIME_OUT(sql.stamp(when)).replace(tzinfo=UTC)
            assert sql.moment(sql.stamp(when)) == parsed


def test_a_login_names_the_doors_the_grants_cover(world: CloudWorld) -> None:
    """Door grants, property grants, both on one door, and none at all."""
    people, doors = world.seed.people, world.seed.doors
    with world.sessions.begin() as session:
        lobby = session.get(Door, doors["Tower lobby"])
        assert lobby is not None
        elsewhere = session.scalars(
            select(Door.id).where(Door.property_id != lobby.property_id)
        ).first()
        assert elsewhere is not None
        for person, door_id in [
            ("Ana Ruiz", elsewhere),  # a door of another property, beside her property grant
            ("Ana Ruiz", doors["Tower gym"]),  # a door her property grant covers already
            ("Chloe Martin", doors["Tower lobby"]),
        ]:
            session.add(
                Grant(
                    id=world.random(16).hex(),
                    person_id=people[person],
                    door_id=door_id,
                    valid_from=0,
                    valid_until=2**32 - 1,
                    schedule=[],
                )
            )
    with world.sessions() as session, Sql(session, writes=False) as sql:
        nobody = sql.row(
            "SELECT id FROM person WHERE id NOT IN (SELECT person_id FROM access_grant)"
        )
        ids = [*people.values(), *([nobody[0]] if nobody else ["00" * 16])]
        for person_id in ids:
            assert granted_door_ids(sql, person_id) == sorted(granted_doors(sql, person_id))
        assert elsewhere in granted_door_ids(sql, people["Ana Ruiz"])
