"""Bearer tokens may expire (``token.expires_at``: console sessions, app guests); an
email names the person it is about (``email_outbox.person_id``: a manager's outbox).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 18:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("email_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("person_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_email_outbox_person_id"), ["person_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_email_outbox_person_id_person"), "person", ["person_id"], ["id"]
        )


def downgrade() -> None:
    """Downgrade the schema."""
    with op.batch_alter_table("email_outbox", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_email_outbox_person_id_person"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_email_outbox_person_id"))
        batch_op.drop_column("person_id")
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
