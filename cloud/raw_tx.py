"""A cloud service on one raw DB-API transaction, without an ORM unit of work.

Theory of operation: a SQLAlchemy session's begin, connection checkout and commit cost
about 150 µs here, a fifth of a keycard change. Callers that make many changes in a row
and need no ORM object (bulk and simulated load: the fast building simulator, the
benchmarks) use :func:`raw_service` instead of a session: it checks a DB-API connection
out of the engine's pool, begins the transaction itself (``BEGIN IMMEDIATE`` on SQLite,
as :func:`cloud.db.make_engine` does for sessions; implicitly on PostgreSQL), and hands
out a :class:`~cloud.service.CloudService` whose keycard lifecycle and sync engine run
on that transaction's cursor (:attr:`CloudService.raw`). It commits when the block ends,
or when it raises a :class:`~cloud.errors.CloudError` marked ``commit_before_raise`` (a
wrong activation code must stay counted), and rolls back on any other exception.

Even the pool's checkout and return (with its reset) cost as much as a small
transaction's statements: a caller running many transactions one after another in one
thread (the fast simulator: every phone upload and door message is one) keeps a
:class:`RawTransactions`, which holds one connection, cursor and notes session for all of
them; :func:`raw_service` is one transaction on a :class:`RawTransactions` of its own.

The service's session is unbound and only carries the transaction's notes (what
:class:`cloud.sync.BundleCache` keeps once the transaction commits, whether the MQTT
outbox was written: :func:`cloud.sync.took_outbox`). Operations that load ORM objects
cannot run on it: they raise SQLAlchemy's ``UnboundExecutionError``. The raw path
covers activation and deactivation (on behalf and self-service), lost cards, resyncs,
phone logins and bundle fetches, and audit uploads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import PoolProxiedConnection

from .db import committed
from .errors import CloudError
from .service import CloudService
from .sql import Sql
from .sync import BundleCache, commit_pending, drop_pending

__all__ = ["RawTransactions", "raw_service"]


@contextmanager
def raw_service(
    engine: Engine, now: int, random: Callable[[int], bytes], cache: BundleCache
) -> Iterator[CloudService]:
    """One transaction on a pooled DB-API connection, as a :class:`CloudService`.

    After the block, ``took_outbox(service.session)`` tells whether online doors have
    frames waiting (wake the MQTT bridge then), as after a session's commit.
    """
    transactions = RawTransactions(engine)
    try:
        with transactions.service(now, random, cache) as cloud:
            yield cloud
    finally:
        transactions.close()


class RawTransactions:
    """Raw transactions one after another, in one thread, on one pooled connection.

    The connection is checked out at the first transaction and kept until :meth:`close`
    (or an error other than a :class:`~cloud.errors.CloudError`: the next transaction
    then checks out a fresh one, as the pool's pre-ping would); between transactions it
    holds no transaction and no lock. A transaction's notes
    (``took_outbox(service.session)``) are there until the next one begins.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.notes = Session()
        self._pooled: PoolProxiedConnection | None = None
        self._driver: Any = None
        self._sql: Sql | None = None

    @contextmanager
    def service(
        self, now: int, random: Callable[[int], bytes], cache: BundleCache
    ) -> Iterator[CloudService]:
        """One transaction as a :class:`CloudService` (see :func:`raw_service`)."""
        sql = self._sql or self._open()
        notes = self.notes
        notes.info.clear()
        if not self.postgres:
            self._driver.execute("BEGIN IMMEDIATE")
        try:
            yield CloudService(notes, now, random, cache, raw=sql)
        except CloudError as exc:
            self._end(commit=exc.commit_before_raise)
            raise
        except BaseException:
            try:
                self._end(commit=False)
            finally:
                self.close()
            raise
        self._end(commit=True)

    def close(self) -> None:
        """Give the connection back to the pool (the next transaction takes one again)."""
        sql, pooled = self._sql, self._pooled
        self._sql = self._pooled = self._driver = None
        try:
            if sql is not None:
                sql.close()
        finally:
            if pooled is not None:
                pooled.close()

    def _open(self) -> Sql:
        self._pooled = pooled = self.engine.raw_connection()
        self._driver = driver = pooled.driver_connection
        assert driver is not None, "the pool handed out a closed connection"
        self._sql = sql = Sql.on_driver(self.notes, driver, postgres=self.postgres)
        return sql

    def _end(self, *, commit: bool) -> None:
        if commit:
            self._driver.commit()
            commit_pending(self.notes)
            committed(self.engine)
        else:
            self._driver.rollback()
            drop_pending(self.notes)
