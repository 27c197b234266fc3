"""The schema comes from Alembic, matches the models, and migrates down and up again."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from config import default_database_url
from db.engine import async_url, create_engine, migrate
from db.models import Base, User
from db.users import set_style

TABLES = {"users", "usage", "deployments", "training_jobs", "limit_hits", "limit_turns"}


def _diff(connection: Connection) -> list:
    return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


async def test_migrated_schema_matches_models(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as connection:
        assert await connection.run_sync(_tables) == TABLES
        assert await connection.run_sync(_diff) == []


async def test_downgrade_to_base_then_upgrade_head(db_url: str) -> None:
    await migrate(db_url, revision="base", downgrade=True)
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == set()
        await migrate(db_url)
        await migrate(db_url)  # already at head: nothing to do
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == TABLES
    finally:
        await engine.dispose()


async def test_processes_starting_together_migrate_once(postgres_db_url: str) -> None:
    await migrate(postgres_db_url, revision="base", downgrade=True)
    await asyncio.gather(*(migrate(postgres_db_url) for _ in range(3)))
    engine = create_engine(postgres_db_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == TABLES
    finally:
        await engine.dispose()


async def test_timestamps_are_utc_aware(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    async with db_sessions() as session:
        await set_style(session, platform="web", platform_user_id="u1", style="cat2dog")
        user = await session.scalar(select(User))
    assert user.created_at.utcoffset() is not None
    assert user.created_at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(user.created_at.tzinfo) - user.created_at).total_seconds()) < 60


def test_async_url_adds_the_driver() -> None:
    assert async_url("postgresql://bot@db:5432/toonbot") == "postgresql+asyncpg://bot@db:5432/toonbot"
    assert async_url("postgres://bot:pw@db/toonbot") == "postgresql+asyncpg://bot:pw@db/toonbot"
    assert async_url("sqlite:////tmp/x.sqlite3") == "sqlite+aiosqlite:////tmp/x.sqlite3"
    assert async_url("postgresql+asyncpg://db/x") == "postgresql+asyncpg://db/x"


def test_default_url_is_a_sqlite_file_in_var() -> None:
    url = default_database_url()
    assert url.startswith("sqlite+aiosqlite:///")
    assert url.removeprefix("sqlite+aiosqlite:///").endswith("var/toonbot.sqlite3")


async def test_a_sqlite_file_gets_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "toonbot.sqlite3"
    await migrate(f"sqlite:///{path}")
    assert path.is_file()
