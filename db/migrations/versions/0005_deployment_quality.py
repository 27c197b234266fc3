"""deployments.guard and deployments.figures: how each deploy's quality check went, and on what figures.

A deploy compares the version's quality.json with the live version's and
refuses one that measures worse unless the admin forces it; the log keeps
the decision and both sets of figures so "why is 2.0 live?" has an answer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:  # SQLite alters tables by copying them
        batch.add_column(sa.Column("guard", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("figures", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("figures")
        batch.drop_column("guard")
