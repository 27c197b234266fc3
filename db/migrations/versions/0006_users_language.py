"""users.language: the language a user chose with /language (or the page's selector).

Nullable: None means "the language my platform says" (Telegram's language_code,
Discord's locale, the browser's Accept-Language), which is everyone until they choose.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 07:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:  # SQLite alters tables by copying them
        batch.add_column(sa.Column("language", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("language")
