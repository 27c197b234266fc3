"""Initial schema: users, usage, deployments, training_jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 15:26:27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def choice(name: str, *values: str) -> sa.Enum:
    """VARCHAR(16) limited by a CHECK constraint, as in db.models."""
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def timestamp(name: str, *, server_default: bool = False) -> sa.Column:
    """A timezone-aware UTC timestamp, stamped by the database when asked."""
    default = db.types.utcnow() if server_default else None
    return sa.Column(name, db.types.UTCDateTime(), server_default=default, nullable=default is None)


PLATFORMS = ("telegram", "discord", "web")


def upgrade() -> None:
    """Create the four tables."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", choice("platform", *PLATFORMS), nullable=False),
        sa.Column("platform_user_id", sa.String(length=64), nullable=False),
        sa.Column("current_style", sa.String(length=64), nullable=True),
        timestamp("created_at", server_default=True),
        timestamp("last_seen_at", server_default=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("platform", "platform_user_id", name=op.f("uq_users_platform_platform_user_id")),
    )
    op.create_table(
        "usage",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("platform", choice("platform", *PLATFORMS), nullable=False),
        sa.Column("platform_user_id", sa.String(length=64), nullable=False),
        sa.Column("chat_id", sa.String(length=64), nullable=False),
        sa.Column("style", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column(
            "status",
            choice("status", "ok", "bad_input", "no_face", "rate_limited", "overloaded", "error"),
            nullable=False,
        ),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("input_bytes", sa.Integer(), nullable=True),
        sa.Column("input_pixels", sa.Integer(), nullable=True),
        timestamp("created_at", server_default=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage")),
    )
    op.create_index(op.f("ix_usage_created_at"), "usage", ["created_at"])
    op.create_index(
        op.f("ix_usage_platform_platform_user_id"), "usage", ["platform", "platform_user_id"]
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("style", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("action", choice("action", "deploy", "rollback"), nullable=False),
        sa.Column("deployed_by", sa.String(length=80), nullable=False),
        sa.Column("runtime", choice("runtime", "torchserve", "embedded"), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        timestamp("created_at", server_default=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    op.create_index(op.f("ix_deployments_style"), "deployments", ["style"])
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pair", sa.String(length=64), nullable=False),
        sa.Column("iterations", sa.Integer(), nullable=False),
        sa.Column("from_version", sa.String(length=32), nullable=True),
        sa.Column(
            "status",
            choice("status", "queued", "running", "done", "failed", "cancelled"),
            nullable=False,
        ),
        sa.Column("requested_by", sa.String(length=80), nullable=False),
        sa.Column("notify_platform", choice("notify_platform", *PLATFORMS), nullable=False),
        sa.Column("notify_chat_id", sa.String(length=64), nullable=False),
        sa.Column("deploy_when_done", sa.Boolean(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=80), nullable=True),
        timestamp("heartbeat_at"),
        timestamp("started_at"),
        timestamp("finished_at"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        timestamp("created_at", server_default=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_jobs")),
    )
    op.create_index(
        op.f("ix_training_jobs_status_created_at"), "training_jobs", ["status", "created_at"]
    )


def downgrade() -> None:
    """Drop the four tables (and with them every record)."""
    op.drop_table("training_jobs")
    op.drop_table("deployments")
    op.drop_table("usage")
    op.drop_table("users")
