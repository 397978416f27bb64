"""Alembic's environment for the cloud schema.

Theory of operation: the target is :data:`cloud.models.Base.metadata`. The
connection comes from :mod:`cloud.migrate` (``config.attributes["connection"]``)
so migrations run on the caller's engine and transaction; failing that, an
engine is made from ``sqlalchemy.url`` or ``$DATABASE_URL`` by
:func:`cloud.db.make_engine`. SQLite cannot ALTER most things, so on SQLite
operations are rendered and run in batch mode (copy and move the table).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cloud.db import database_url, make_engine
from cloud.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    """Emit SQL for ``--sql`` runs instead of executing it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run on the connection :mod:`cloud.migrate` passed, or on a new engine."""
    given: Connection | None = config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
