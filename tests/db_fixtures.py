"""Fresh databases for the cloud tests: a SQLite file and, when reachable, PostgreSQL.

Theory of operation: :func:`database_url` is a fixture parametrized over
``sqlite`` and ``postgresql``. The SQLite case is a new file under ``tmp_path``.
The PostgreSQL case creates a uniquely named database through an autocommit
connection to the admin database (``$LATCHSIM_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``) and drops it afterwards (``WITH
(FORCE)``, so a connection a test leaked cannot keep it alive). When that server
cannot be reached the PostgreSQL case is skipped, saying which URL was tried and
why it failed.

Use it from a test module with ``pytest_plugins = ["tests.db_fixtures"]`` or by
calling :func:`fresh_database` from a fixture of your own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest
from sqlalchemy import make_url

__all__ = [
    "DATABASE_KINDS",
    "POSTGRES_URL_ENV",
    "database_url",
    "fresh_database",
    "postgres_admin_url",
    "postgres_unreachable_reason",
]

POSTGRES_URL_ENV = "LATCHSIM_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DATABASE_KINDS = ("sqlite", "postgresql")


def postgres_admin_url() -> str:
    """The database we connect to in order to create and drop test databases."""
    return os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)


@cache
def postgres_unreachable_reason() -> str | None:
    """None when PostgreSQL answers; otherwise a one-line reason to skip (asked once)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    url = postgres_admin_url()
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {_safe(url)} is unreachable ({first}); set {POSTGRES_URL_ENV}"
    return None


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _postgres_database() -> Iterator[str]:
    import psycopg
    from psycopg import sql

    admin = postgres_admin_url()
    name = f"latchsim_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of ``kind`` (skips when PostgreSQL is unreachable)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}")
    reason = postgres_unreachable_reason()
    if reason is not None:
        pytest.skip(reason)
    with _postgres_database() as url:
        yield url


@pytest.fixture(params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, then (if reachable) a new PostgreSQL database."""
    with fresh_database(request.param, tmp_path) as url:
        yield url
