"""usage.frames and usage.seconds: what an animated GIF or a video had drawn (empty for photos).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:  # SQLite alters tables by copying them
        batch.add_column(sa.Column("frames", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("seconds")
        batch.drop_column("frames")
