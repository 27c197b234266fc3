"""The tables: users, usage, deployments, training_jobs, and the shared rate limits (limit_hits, limit_turns).

The schema itself is owned by the Alembic migrations in `db/migrations`;
these mappings must match them (tests/test_db_migrations.py checks that).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.types import UTCDateTime, utcnow

Platform = Literal["telegram", "discord", "web"]
UsageStatus = Literal["ok", "bad_input", "no_face", "rate_limited", "overloaded", "error"]
DeployAction = Literal["deploy", "rollback"]
ServingRuntime = Literal["torchserve", "embedded"]  # what a deploy switched (training has its own Runtime)
# How a deploy's quality check went (styles.quality): better or level with the live version, refused as worse,
# deployed as worse because the admin said `force`, or not comparable (no quality.json, another test split).
GuardDecision = Literal["passed", "refused", "forced", "unmeasured", "incomparable"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]

# Usage grows without bound: 64-bit ids on PostgreSQL, while SQLite needs
# plain INTEGER for its auto-incrementing rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def choice(literal: Any, name: str) -> Enum:
    """A VARCHAR limited by a CHECK constraint to the values of a Literal type."""
    return Enum(*get_args(literal), name=name, native_enum=False, create_constraint=True, length=16)


def created_column(*, index: bool = False) -> Mapped[datetime]:
    """The insert time, stamped by the database unless the caller knows better."""
    return mapped_column(UTCDateTime(), server_default=utcnow(), nullable=False, index=index)


class Base(DeclarativeBase):
    """Declarative base; `eager_defaults` fetches server defaults (RETURNING) on insert."""

    metadata = MetaData(naming_convention=NAMING)
    __mapper_args__ = {"eager_defaults": True}


class User(Base):
    """A person on one platform, with the style and language they chose."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[Platform] = mapped_column(choice(Platform, "platform"))
    platform_user_id: Mapped[str] = mapped_column(String(64))
    current_style: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))  # a /language choice, e.g. "pt_BR"; None: the platform's
    created_at: Mapped[datetime] = created_column()  # when they first chose a style


class Usage(Base):
    """One request, successful or not; no foreign key, so it never waits for a user row."""

    __tablename__ = "usage"
    __table_args__ = (Index(None, "platform", "platform_user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[Platform] = mapped_column(choice(Platform, "platform"))
    platform_user_id: Mapped[str] = mapped_column(String(64))
    chat_id: Mapped[str] = mapped_column(String(64))
    style: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[UsageStatus] = mapped_column(choice(UsageStatus, "status"))
    latency_ms: Mapped[int] = mapped_column(Integer)
    input_bytes: Mapped[int | None] = mapped_column(Integer)
    input_pixels: Mapped[int | None] = mapped_column(Integer)
    faces: Mapped[int | None] = mapped_column(Integer)  # faces drawn (0: a centre crop); None: no picture
    frames: Mapped[int | None] = mapped_column(Integer)  # an animated GIF's or a video's frames; None: a photo
    seconds: Mapped[float | None] = mapped_column(Float)  # that clip's length
    created_at: Mapped[datetime] = created_column(index=True)


class Deployment(Base):
    """One deploy or rollback of a style's model version, kept as an audit trail."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(primary_key=True)
    style: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(32))
    action: Mapped[DeployAction] = mapped_column(choice(DeployAction, "action"))
    deployed_by: Mapped[str] = mapped_column(String(80))  # "platform:user id"
    runtime: Mapped[ServingRuntime] = mapped_column(choice(ServingRuntime, "runtime"))
    ok: Mapped[bool] = mapped_column(Boolean)
    message: Mapped[str] = mapped_column(Text, default="")
    guard: Mapped[GuardDecision | None] = mapped_column(String(16))  # None: rollbacks and older rows
    figures: Mapped[dict[str, Any] | None] = mapped_column(  # {"version": quality.json, "live": ..., "worse": [...]}
        JSON().with_variant(JSONB(), "postgresql")
    )
    created_at: Mapped[datetime] = created_column()


class TrainingJob(Base):
    """A retraining request, claimed and run by one training worker at a time."""

    __tablename__ = "training_jobs"
    __table_args__ = (Index(None, "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pair: Mapped[str] = mapped_column(String(64))  # dataset name, e.g. "selfie2anime"
    iterations: Mapped[int] = mapped_column(Integer)
    from_version: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(choice(JobStatus, "status"), default="queued")
    requested_by: Mapped[str] = mapped_column(String(80))  # "platform:user id"
    notify_platform: Mapped[Platform] = mapped_column(choice(Platform, "notify_platform"))
    notify_chat_id: Mapped[str] = mapped_column(String(64))
    deploy_when_done: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[int] = mapped_column(Integer, default=0)  # iterations done
    worker_id: Mapped[str | None] = mapped_column(String(80))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)  # why it failed or was cancelled
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    created_at: Mapped[datetime] = created_column()


class LimitHit(Base):
    """One request counted against a minute's allowance (a user's, an address's, a group's), so that
    every replica counts the same requests (`db.limits`); older than the minute, it is deleted."""

    __tablename__ = "limit_hits"
    __table_args__ = (Index(None, "key", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200))  # e.g. "user:telegram:123"
    at: Mapped[float] = mapped_column(Float)  # Unix time, as the replica that counted it saw it


class LimitTurn(Base):
    """A user's one photo being drawn, held by one replica until it is answered (one at a time each)."""

    __tablename__ = "limit_turns"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))  # the process (and limiter) holding it
    since: Mapped[float] = mapped_column(Float)  # Unix time; a turn held too long is taken over (a replica died)
