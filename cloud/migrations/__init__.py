"""Alembic migrations of the cloud schema (see :mod:`cloud.migrate`)."""
