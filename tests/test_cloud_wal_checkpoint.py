"""A SQLite cloud's write-ahead log is checkpointed on a thread of its own (cloud.wal_checkpoint).

Commits wake the thread; it copies the log into the database file, then ends once no
commit came for a while. Nothing is lost on the way: what the database file holds alone
(the log set aside) is what was committed.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cloud.db import checkpointer_of, create_schema, make_engine, session_factory
from cloud.models import MqttOutbox
from cloud.raw_tx import raw_service
from cloud.sync import BundleCache
from cloud.wal_checkpoint import BACKSTOP_PAGES, IDLE_S, Checkpointer

ENDS_WITHIN_S = IDLE_S + 10.0
"""The thread ends IDLE_S after the last commit; the rest is slack for a loaded machine."""


def _rows_in_file_alone(database: Path, table: str) -> int:
    """Rows of ``table`` in a copy of the database file without its write-ahead log."""
    alone = database.with_name("alone.db")
    shutil.copyfile(database, alone)
    connection = sqlite3.connect(alone)
    try:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        connection.close()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite file cloud whose checkpointer has finished with the schema's commits."""
    made = make_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    create_schema(made)
    _checkpointer(made).join(ENDS_WITHIN_S)
    yield made
    made.dispose()


def _checkpointer(engine: Engine) -> Checkpointer:
    checkpointer = checkpointer_of(engine)
    assert checkpointer is not None
    return checkpointer


def _database(engine: Engine) -> Path:
    assert engine.url.database is not None
    return Path(engine.url.database)


def test_session_commits_are_checkpointed_by_the_thread_which_then_ends(engine: Engine) -> None:
    checkpointer = _checkpointer(engine)
    before = checkpointer.checkpoints
    sessions = session_factory(engine)
    for n in range(20):
        with sessions.begin() as session:
            session.add(MqttOutbox(topic=f"t/{n}", payload=b"frame", retain=False))
    checkpointer.join(ENDS_WITHIN_S)
    assert not checkpointer.running()
    assert checkpointer.checkpoints > before
    assert _rows_in_file_alone(_database(engine), "mqtt_outbox") == 20
    with engine.connect() as connection:
        pragma = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
    assert pragma == BACKSTOP_PAGES


def test_raw_transactions_wake_the_thread_too(engine: Engine) -> None:
    checkpointer = _checkpointer(engine)
    before = checkpointer.checkpoints
    with raw_service(engine, 0, bytes, BundleCache()) as cloud:
        assert cloud.raw is not None
        cloud.raw.run(
            "INSERT INTO mqtt_outbox (topic, payload, retain, sent) VALUES (?, ?, 0, 0)",
            ["t", b"frame"],
        )
    checkpointer.join(ENDS_WITHIN_S)
    assert checkpointer.checkpoints > before
    assert _rows_in_file_alone(_database(engine), "mqtt_outbox") == 1


def test_a_thread_ended_starts_again_on_the_next_commit(engine: Engine) -> None:
    checkpointer = _checkpointer(engine)
    assert not checkpointer.running()
    before = checkpointer.checkpoints
    with session_factory(engine).begin() as session:
        session.add(MqttOutbox(topic="t", payload=b"frame", retain=False))
    checkpointer.join(ENDS_WITHIN_S)
    assert checkpointer.checkpoints > before


def test_in_memory_and_postgres_engines_have_no_checkpointer() -> None:
    assert checkpointer_of(make_engine("sqlite://")) is None
    assert checkpointer_of(make_engine("sqlite:///:memory:")) is None
    assert checkpointer_of(make_engine("postgresql://nobody@127.0.0.1:1/none")) is None
