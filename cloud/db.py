"""Database engines: SQLite by default, PostgreSQL via ``DATABASE_URL``.

Theory of operation: :func:`make_engine` turns a URL into a SQLAlchemy engine
configured for the cloud (SQLite: foreign keys on, WAL, and every transaction begun
IMMEDIATE with a busy timeout, so concurrent transactions wait instead of failing;
PostgreSQL through psycopg 3); a SQLite file's write-ahead log is checkpointed on a
thread of its own (:mod:`cloud.wal_checkpoint`), nudged after each commit. The schema is
created by :func:`create_schema` (tests, demo) or by Alembic migrations
(``door-cloud migrate``).
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from .models import Base
from .wal_checkpoint import BACKSTOP_PAGES, Checkpointer

__all__ = [
    "DEFAULT_DATABASE_URL",
    "checkpointer_of",
    "committed",
    "create_schema",
    "database_url",
    "make_engine",
    "read_only_sessions",
    "session_factory",
]

DEFAULT_DATABASE_URL = "sqlite:///latchsim-cloud.db"


def database_url() -> str:
    """``$DATABASE_URL`` or the default SQLite file."""
    return os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)


def make_engine(url: str | None = None) -> Engine:
    """An engine for ``url`` (default :func:`database_url`)."""
    url = url or database_url()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        # pysqlite's own transaction handling off (isolation_level=None); _begin_immediate
        # starts each transaction instead.
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _begin_immediate)
        database = engine.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            _checkpointers[engine] = Checkpointer(Path(database))
            event.listen(engine, "commit", lambda _connection: committed(engine))
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode, NORMAL syncs at checkpoints rather than at every commit: a commit
    # survives the process dying at once; a power loss may roll back the newest commits
    # (whole: never part of one). A durable commit is an fsync (~0.7 ms here), which
    # would bound SQLite to ~1,500 changes a second; production runs on PostgreSQL.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")  # see cloud.wal_checkpoint
    cursor.close()


_checkpointers: weakref.WeakKeyDictionary[Engine, Checkpointer] = weakref.WeakKeyDictionary()


def committed(engine: Engine) -> None:
    """Tell the engine's background checkpointer a transaction committed (SQLite files).

    Sessions do it by themselves (an engine ``commit`` event); code that commits on a raw
    DB-API connection (:func:`cloud.raw_tx.raw_service`) calls this after its commit.
    """
    checkpointer = _checkpointers.get(engine)
    if checkpointer is not None:
        checkpointer.nudge()


def checkpointer_of(engine: Engine) -> Checkpointer | None:
    """The background checkpointer of a SQLite file engine (None for others)."""
    return _checkpointers.get(engine)


READ_ONLY: Final = "latchsim_read_only"
"""Execution option of :func:`read_only_sessions`: their SQLite transactions begin deferred."""


def _begin_immediate(connection: Any) -> None:
    """Start every SQLite transaction holding the write lock (``BEGIN IMMEDIATE``).

    A deferred transaction that read first (a bearer-token lookup, say) and writes later
    fails at once with SQLITE_BUSY when another connection wrote in between (the busy
    timeout does not apply: its snapshot is stale). Taking the lock at BEGIN makes
    concurrent transactions wait their turn instead; WAL readers outside a transaction
    are not held up. SQLite thus runs one transaction at a time: use PostgreSQL for load.
    (Sent straight to the driver: through ``exec_driver_sql`` it cost more than the rest
    of a keycard change's statements together.)
    """
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.connection.driver_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_schema(engine: Engine) -> None:
    """Create every table that does not exist yet."""
    Base.metadata.create_all(engine)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that do not expire objects on commit (we return them after commit)."""
    return sessionmaker(engine, expire_on_commit=False)


def read_only_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for transactions that only read (a console page's live refresh, say).

    On SQLite they begin deferred instead of ``IMMEDIATE``: in WAL mode a reader neither
    waits for the write lock nor holds it, so a page polling every second does not queue
    behind, or hold up, the changes it shows. A write in one may fail at once with
    "database is locked": do not write in them.
    """
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
