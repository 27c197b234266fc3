"""Users and their chosen style and language. Each write is one upsert, so concurrent chats never race."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Platform, Usage, User


@dataclass(frozen=True)
class Choices:
    """What a user chose: a style and a language (None: never chose; the app's default, their platform's)."""

    style: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class Forgotten:
    """How many rows `forget_user` deleted."""

    users: int
    usage: int


async def _upsert(session: AsyncSession, platform: Platform, platform_user_id: str, **changes: Any) -> None:
    """Insert the user with `changes`, or apply them to the existing row."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(User).values(platform=platform, platform_user_id=platform_user_id, **changes)
    statement = statement.on_conflict_do_update(index_elements=[User.platform, User.platform_user_id], set_=changes)
    await session.execute(statement)
    await session.commit()


async def set_style(session: AsyncSession, *, platform: Platform, platform_user_id: str, style: str) -> None:
    """Remember the style the user chose."""
    await _upsert(session, platform, platform_user_id, current_style=style)


async def get_style(session: AsyncSession, *, platform: Platform, platform_user_id: str) -> str | None:
    """The user's chosen style, or None if they never chose one (the app picks its default)."""
    return await session.scalar(
        select(User.current_style).where(User.platform == platform, User.platform_user_id == platform_user_id)
    )


async def set_language(
    session: AsyncSession, *, platform: Platform, platform_user_id: str, language: str | None
) -> None:
    """Remember the language the user chose (None: follow their platform's again)."""
    await _upsert(session, platform, platform_user_id, language=language)


async def get_choices(session: AsyncSession, *, platform: Platform, platform_user_id: str) -> Choices:
    """The user's style and language, in one query (each None when never chosen)."""
    row = (
        await session.execute(
            select(User.current_style, User.language).where(
                User.platform == platform, User.platform_user_id == platform_user_id
            )
        )
    ).first()
    return Choices() if row is None else Choices(style=row.current_style, language=row.language)


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
