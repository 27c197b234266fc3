"""users.last_seen_at goes: nothing wrote it, and the usage log already says when each user was last seen.

Every request is a usage row with its user and time (indexed by platform and
user id), so "last seen" is `max(usage.created_at)` for that user. Keeping a
column current beside it would be a second write per user and a users row for
every visitor, one that could reappear just after /forget.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 07:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:  # SQLite alters tables by copying them
        batch.drop_column("last_seen_at")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("last_seen_at", db.types.UTCDateTime(), server_default=db.types.utcnow(), nullable=False)
        )
