"""Wrong self-activation codes move from process memory into the ``code_attempt`` table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 12:59:23.254222
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "code_attempt",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("person_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["person.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("code_attempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_code_attempt_person_id"), ["person_id"], unique=False)


def downgrade() -> None:
    """Downgrade the schema."""
    with op.batch_alter_table("code_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_code_attempt_person_id"))

    op.drop_table("code_attempt")
