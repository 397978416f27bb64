"""Doors get a TIME_SYNC sequence counter (``door.time_sync_seq``, §6.6).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 15:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    with op.batch_alter_table("door", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("time_sync_seq", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    """Downgrade the schema."""
    with op.batch_alter_table("door", schema=None) as batch_op:
        batch_op.drop_column("time_sync_seq")
