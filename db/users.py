"""Users and their chosen style. Each write is one upsert, so concurrent chats never race."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Platform, Usage, User
from db.types import utcnow


@dataclass(frozen=True)
class Forgotten:
    """How many rows `forget_user` deleted."""

    users: int
    usage: int


async def _upsert(session: AsyncSession, platform: Platform, platform_user_id: str, **changes: Any) -> None:
    """Insert the user, or apply `changes` to the existing row (nothing if none given)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(User).values(platform=platform, platform_user_id=platform_user_id, **changes)
    keys = [User.platform, User.platform_user_id]
    if changes:
        statement = statement.on_conflict_do_update(index_elements=keys, set_=changes)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=keys)
    await session.execute(statement)
    await session.commit()


async def get_or_create_user(session: AsyncSession, *, platform: Platform, platform_user_id: str) -> User:
    """The user's row, created on first contact."""
    await _upsert(session, platform, platform_user_id)
    found = await session.scalars(
        select(User).where(User.platform == platform, User.platform_user_id == platform_user_id)
    )
    return found.one()


async def touch_user(session: AsyncSession, *, platform: Platform, platform_user_id: str) -> None:
    """Mark the user as seen now (creating the row if needed)."""
    await _upsert(session, platform, platform_user_id, last_seen_at=utcnow())


async def set_style(session: AsyncSession, *, platform: Platform, platform_user_id: str, style: str) -> None:
    """Remember the style the user chose."""
    await _upsert(session, platform, platform_user_id, current_style=style)


async def get_style(session: AsyncSession, *, platform: Platform, platform_user_id: str) -> str | None:
    """The user's chosen style, or None if they never chose one (the app picks its default)."""
    return await session.scalar(
        select(User.current_style).where(User.platform == platform, User.platform_user_id == platform_user_id)
    )


async def forget_user(session: AsyncSession, *, platform: Platform, platform_user_id: str) -> Forgotten:
    """Delete everything stored about a user: their row and their usage records.

    Deployments and training jobs keep an admin's id as an audit trail.
    """
    usage = await session.execute(
        delete(Usage).where(Usage.platform == platform, Usage.platform_user_id == platform_user_id)
    )
    users = await session.execute(
        delete(User).where(User.platform == platform, User.platform_user_id == platform_user_id)
    )
    await session.commit()
    return Forgotten(users=users.rowcount, usage=usage.rowcount)
