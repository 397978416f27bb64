"""Schema migrations (Alembic), configured from Python: no ``alembic.ini`` needed.

Theory of operation: the revisions live in ``cloud/migrations/versions`` (the
first, ``0001``, creates the whole schema; later ones change it). :func:`migrate`
upgrades a database to the newest revision on the caller's engine, in one
transaction, and is what ``door-cloud migrate`` runs; running it again is a
no-op. A database made by :func:`cloud.db.create_schema` (tests, simulators) has
the tables but no Alembic version: when its tables equal the models it is
stamped at head instead of being created again. :func:`schema_differences`
compares a live database with :data:`cloud.models.Base.metadata` (Alembic's
``compare_metadata``): an empty list means the migrations and the models agree.
A new revision is made by autogenerating against a database migrated to head
(see ``cloud/migrations/alembic.ini``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

from .db import make_engine
from .models import Base

__all__ = [
    "MIGRATIONS",
    "alembic_config",
    "current_revision",
    "head_revision",
    "migrate",
    "schema_differences",
]

MIGRATIONS = Path(__file__).resolve().with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at our migrations (``url`` for standalone runs)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "cloud/migrations/versions holds no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(
    url: str | None = None, *, engine: Engine | None = None, revision: str = "head"
) -> str | None:
    """Upgrade the database (``engine``, else ``url``) to ``revision``; return where it is now."""
    own = engine is None
    engine = engine or make_engine(url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            if revision == "head" and _made_by_create_schema(connection):
                command.stamp(config, "head")
            else:
                command.upgrade(config, revision)
        return current_revision(engine)
    finally:
        if own:
            engine.dispose()


def schema_differences(engine: Engine) -> list[Any]:
    """Alembic's diffs between the live schema and the models (empty: they agree)."""
    with engine.connect() as connection:
        return _differences(connection)


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _made_by_create_schema(connection: Connection) -> bool:
    """Unversioned, yet holding exactly the models' tables."""
    if MigrationContext.configure(connection).get_current_revision() is not None:
        return False
    tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
    return bool(tables) and not _differences(connection)
