"""Read-only sessions on SQLite begin deferred: they read while a writer holds the lock.

Every other transaction begins ``IMMEDIATE`` (cloud.db.make_engine) and so waits for the
write lock; a console page's live poll must not. Made deterministic by a zero busy
timeout: a transaction that would wait fails at once instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError

from cloud.db import create_schema, make_engine, read_only_sessions, session_factory
from cloud.models import Person


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'cloud.db'}")

    def no_waiting(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA busy_timeout=0")

    event.listen(engine, "connect", no_waiting)
    create_schema(engine)
    yield engine
    engine.dispose()


def test_a_read_only_session_reads_while_a_writer_holds_the_lock(engine: Engine) -> None:
    count = select(func.count()).select_from(Person)
    with session_factory(engine).begin() as writer:
        writer.add(Person(id="a" * 32, name="Ana", email="ana@example.com"))
        writer.flush()  # the writer's transaction holds SQLite's write lock from here
        with read_only_sessions(engine)() as reader, reader.begin():
            assert reader.execute(count).scalar_one() == 0  # the committed state
        locked = (OperationalError, sqlite3.OperationalError)  # raised by our BEGIN IMMEDIATE
        with pytest.raises(locked, match="locked"), session_factory(engine)() as other:
            other.execute(count)  # an ordinary session would wait for the lock
    with read_only_sessions(engine)() as reader:
        assert reader.execute(count).scalar_one() == 1
