"""Raw DB-API statements in a session's transaction: the sync engine's hot path.

Theory of operation: SQLAlchemy costs 75 to 160 µs per statement on our machines (ORM
or Core: compiling, caching, result proxies, unit of work); a DB-API cursor runs a
prepared primary-key statement in 2 to 5 µs. A keycard change is about twenty
statements, so the operations that run per change (:func:`cloud.sync.resync`
and the keycard lifecycle in :mod:`cloud.service`) talk to the driver directly,
through :class:`Sql`, on the connection and transaction of the caller's session:
what they write commits or rolls back with everything else.

Statements are written once, in SQLite's ``?`` style, and translated for psycopg
(``%s``); row locks (``FOR UPDATE``, ``FOR NO KEY UPDATE``) are added on PostgreSQL
only (a SQLite transaction holds the database's write lock from its start:
:func:`cloud.db.make_engine`).

The ORM's identity map does not see these writes: :class:`Sql` flushes the
session's pending changes when it starts, and :meth:`Sql.close` expires every
loaded object, so ORM code running later in the same transaction reads fresh rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

__all__ = ["Sql", "json_list", "marks"]

Row = tuple[Any, ...]

_SQLITE_DATETIME: Any = sqlite.DATETIME()  # type: ignore[no-untyped-call]
_SQLITE_DATETIME_IN: Callable[[datetime], str] = _SQLITE_DATETIME.bind_processor(sqlite.dialect())
_SQLITE_DATETIME_OUT: Callable[[str], datetime] = _SQLITE_DATETIME.result_processor(
    sqlite.dialect(), None
)


class Sql:
    """A DB-API cursor on ``session``'s connection, in its transaction."""

    def __init__(self, session: Session, *, writes: bool = True) -> None:
        """``writes``: whether statements may change rows the session has loaded (then
        :meth:`close` expires the session's objects)."""
        session.flush()
        connection = session.connection()
        driver = connection.connection.driver_connection
        assert driver is not None, "the session's connection is closed"
        self._open(session, driver, postgres=connection.dialect.name == "postgresql")
        self.writes = writes

    @classmethod
    def on_driver(cls, session: Session, driver: Any, *, postgres: bool) -> Sql:
        """A cursor on a DB-API connection whose transaction the caller runs
        (:func:`cloud.raw_tx.raw_service`); ``session`` carries the transaction's notes
        (:class:`cloud.sync.BundleCache`, :func:`cloud.sync.note_outbox`), never rows."""
        sql = cls.__new__(cls)
        sql._open(session, driver, postgres=postgres)
        sql.writes = False
        return sql

    def _open(self, session: Session, driver: Any, *, postgres: bool) -> None:
        self.session, self.postgres = session, postgres
        self._cursor = driver.cursor()

    def __enter__(self) -> Sql:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the cursor; expire the session's objects if they may be stale now."""
        self._cursor.close()
        if self.writes:
            self.session.expire_all()

    def _sql(self, statement: str) -> str:
        return _for_psycopg(statement) if self.postgres else statement

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""
        self._cursor.execute(self._sql(statement), params)
        rows: list[Row] = self._cursor.fetchall()
        return rows

    def row(self, statement: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        self._cursor.execute(self._sql(statement), params)
        found: Row | None = self._cursor.fetchone()
        return found

    def run(self, statement: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        self._cursor.execute(self._sql(statement), params)
        return int(self._cursor.rowcount)

    def run_many(self, statement: str, params: Iterable[Sequence[Any]]) -> None:
        """Run a statement once per parameter row (nothing if there are none)."""
        batch = list(params)
        if batch:
            self._cursor.executemany(self._sql(statement), batch)

    def insert(self, into: str, rows: Sequence[Sequence[Any]]) -> None:
        """``INSERT INTO {into} VALUES …`` of every row, in order, as multi-row statements.

        ``into`` is the table and its column list. SQLite stores a row of a multi-row
        statement for about two thirds of what ``executemany``'s one execution per row
        costs (an audit batch is up to 200 rows). The rows go in chunks of a power of
        two, at most :data:`INSERT_CHUNK`, so a few statement texts serve every count
        (each stays prepared in the driver's cache); the last few by ``executemany``.
        """
        if not rows:
            return
        width, start, count = len(rows[0]), 0, len(rows)
        most = _most_rows(width)
        while count - start >= _INSERT_MIN:
            size = min(most, 1 << ((count - start).bit_length() - 1))
            values = [*chain.from_iterable(rows[start : start + size])]
            self._cursor.execute(self._sql(_insert_text(into, width, size)), values)
            start += size
        if start < count:
            self._cursor.executemany(self._sql(_insert_text(into, width, 1)), rows[start:])

    def lock(self, mode: str = "FOR UPDATE") -> str:
        """A row-lock clause for this database (empty on SQLite)."""
        return f" {mode}" if self.postgres else ""

    def stamp(self, when: datetime) -> Any:
        """``when`` (aware) as a parameter for a ``DateTime(timezone=True)`` column,
        stored as SQLAlchemy stores it (SQLite: its text form, in UTC)."""
        return when if self.postgres else _SQLITE_DATETIME_IN(when.astimezone(UTC))

    def stamp_at(self, seconds: int) -> Any:
        """:meth:`stamp` of the moment ``seconds`` after the epoch (kept per second: a
        door's HELLOs and audit batches stamp the same few seconds again and again)."""
        return _stamp_at(seconds, self.postgres)

    def moment(self, value: Any) -> datetime | None:
        """A ``DateTime(timezone=True)`` column's value as an aware datetime (or None)."""
        if value is None:
            return None
        when: datetime = value if isinstance(value, datetime) else _sqlite_moment(value)
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@lru_cache(maxsize=1024)
def _stamp_at(seconds: int, postgres: bool) -> Any:
    when = datetime.fromtimestamp(seconds, UTC)
    return when if postgres else _SQLITE_DATETIME_IN(when)


@lru_cache(maxsize=1024)
def _sqlite_moment(text: str) -> datetime:
    """SQLite's text of a moment, parsed as SQLAlchemy parses it (datetimes are immutable:
    one parse serves every row holding the same text)."""
    return _SQLITE_DATETIME_OUT(text)


INSERT_CHUNK = 128
"""The most rows :meth:`Sql.insert` puts in one statement."""
_INSERT_MIN = 4
"""Fewer rows left than this go by ``executemany`` (a short statement saves nothing)."""
_MAX_PARAMETERS = 999
"""Parameters one statement may hold in every SQLite build (newer ones take 32,766)."""


@lru_cache(maxsize=16)
def _most_rows(width: int) -> int:
    """The largest power of two rows of ``width`` columns, at most :data:`INSERT_CHUNK`,
    whose parameters fit one statement (128 for an audit record's seven)."""
    fits = max(1, min(INSERT_CHUNK * width, _MAX_PARAMETERS) // width)
    return 1 << (fits.bit_length() - 1)


@lru_cache(maxsize=64)
def _insert_text(into: str, width: int, rows: int) -> str:
    values = "(" + ", ".join("?" * width) + ")"
    return f"INSERT INTO {into} VALUES " + ", ".join([values] * rows)


@lru_cache(maxsize=512)
def _for_psycopg(statement: str) -> str:
    return statement.replace("?", "%s")


@lru_cache(maxsize=64)
def marks(count: int) -> str:
    """``(?, ?, …)`` with ``count`` placeholders, for ``IN`` lists."""
    return "(" + ", ".join("?" * count) + ")"


def json_list(value: Any) -> list[Any]:
    """A JSON column's value: SQLite hands back text, psycopg the parsed value."""
    parsed = json.loads(value) if isinstance(value, str | bytes) else value
    return list(parsed or [])
