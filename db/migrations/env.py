"""Alembic environment: async engines on SQLite and PostgreSQL.

`db.engine.migrate()` hands in an open connection; the `alembic` command line
connects to the configured DATABASE_URL (`config.Settings`: the environment or
`.env`), or to the default SQLite file when it is unset.
"""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from config import get_settings
from db.engine import create_engine
from db.models import Base

config = context.config
if config.config_file_name is not None:  # command line only: the app keeps its own logging
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations(connection: Connection) -> None:
    """Run the pending migrations on one connection, in one transaction."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE is limited
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    """Connect from the command line and migrate."""
    engine = create_engine(get_settings().database_url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
connection = config.attributes.get("connection")
if connection is None:
    asyncio.run(run_async_migrations())
else:
    run_migrations(connection)
