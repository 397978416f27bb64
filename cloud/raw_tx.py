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

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import PoolProxiedConnection

from .db import committed
from .errors import CloudError
from .service import CloudService
from .sql import Sql
from .sync import BundleCache, commit_pending, drop_pending

__all__ = ["raw_service"]


@contextmanager
def raw_service(
    engine: Engine, now: int, random: Callable[[int], bytes], cache: BundleCache
) -> Iterator[CloudService]:
    """One transaction on a pooled DB-API connection, as a :class:`CloudService`.

    After the block, ``took_outbox(service.session)`` tells whether online doors have
    frames waiting (wake the MQTT bridge then), as after a session's commit.
    """
    pooled = engine.raw_connection()
    try:
        driver = pooled.driver_connection
        assert driver is not None, "the pool handed out a closed connection"
        postgres = engine.dialect.name == "postgresql"
        if not postgres:
            driver.execute("BEGIN IMMEDIATE")
        notes = Session()
        sql = Sql.on_driver(notes, driver, postgres=postgres)
        try:
            yield CloudService(notes, now, random, cache, raw=sql)
        except CloudError as exc:
            _end(pooled, notes, commit=exc.commit_before_raise)
            raise
        except BaseException:
            _end(pooled, notes, commit=False)
            raise
        finally:
            sql.close()
        _end(pooled, notes, commit=True)
    finally:
        pooled.close()
    committed(engine)


def _end(pooled: PoolProxiedConnection, notes: Session, *, commit: bool) -> None:
    if commit:
        pooled.commit()
        commit_pending(notes)
    else:
        pooled.rollback()
        drop_pending(notes)
