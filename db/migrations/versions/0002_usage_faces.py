"""usage.faces: how many faces a request had drawn (group photos draw several).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:  # SQLite alters tables by copying them
        batch.add_column(sa.Column("faces", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("faces")
