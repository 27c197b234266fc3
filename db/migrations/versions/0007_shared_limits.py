"""limit_hits and limit_turns: the rate limits kept in the database, so bot replicas share them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 07:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "limit_hits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limit_hits")),
    )
    op.create_index(op.f("ix_limit_hits_key_at"), "limit_hits", ["key", "at"])
    op.create_table(
        "limit_turns",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_limit_turns")),
    )


def downgrade() -> None:
    op.drop_table("limit_turns")
    op.drop_index(op.f("ix_limit_hits_key_at"), table_name="limit_hits")
    op.drop_table("limit_hits")
