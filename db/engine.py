"""Engine, sessions and schema migrations: one engine per process, Alembic owns the schema."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS = "db:migrations"
MIGRATION_LOCK_KEY = 0x746F6F6E  # "toon": any constant shared by every toonbot process

# Driver to use when a URL names only the database, as DATABASE_URL often does.
ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}

logger = logging.getLogger(__name__)


def async_url(url: str) -> str:
    """The URL with its async driver filled in (`postgresql://` -> `postgresql+asyncpg://`)."""
    parsed = make_url(url)
    driver = ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets admins read stats while bots write usage; SQLite ignores
    # foreign keys unless asked.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str, *, timeout: float = 10.0) -> AsyncEngine:
    """An async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg).

    `timeout` bounds connecting to PostgreSQL, and waiting for a lock on SQLite
    ("database is locked"). Pooled connections are pinged before use, so the
    engine recovers by itself after the database comes back.
    """
    url = async_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)  # var/, on first use
    if parsed.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {"timeout": timeout, "command_timeout": 60}
    else:
        connect_args = {"timeout": timeout}
    engine = create_async_engine(
        url, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args
    )
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (no lazy reload in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def answers(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """True when the database answers a trivial query; False when it refuses or cannot be reached
    (the readiness probes of every process ask this)."""
    try:
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as error:
        logger.info("the database does not answer: %s", type(error).__name__)
        return False
    return True


def alembic_config() -> Config:
    """Alembic settings built in code, so migrations run wherever the package is installed."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def _run_alembic(connection: Connection, revision: str, downgrade: bool) -> None:
    if connection.dialect.name == "postgresql":
        # Several bot processes may start at once: one migrates, the others
        # wait here and then find nothing left to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    config = alembic_config()
    config.attributes["connection"] = connection
    if downgrade:
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)


async def migrate(url: str, *, revision: str = "head", downgrade: bool = False) -> None:
    """Bring the database at `url` to `revision` (`alembic upgrade head` by default)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run_alembic, revision, downgrade)
    finally:
        await engine.dispose()
