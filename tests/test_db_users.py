"""Users: style round-trip, last seen, concurrent first contact, forgetting a user."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Usage, User
from db.usage import UsageRecord, UsageRecorder
from db.users import forget_user, get_or_create_user, get_style, set_style, touch_user

Sessions = async_sessionmaker[AsyncSession]


async def test_style_round_trip(db_sessions: Sessions) -> None:
    async with db_sessions() as session:
        assert await get_style(session, platform="telegram", platform_user_id="42") is None
        await set_style(session, platform="telegram", platform_user_id="42", style="selfie2anime")
        await set_style(session, platform="telegram", platform_user_id="42", style="cat2dog")
        # the same id on another platform is another person
        await set_style(session, platform="discord", platform_user_id="42", style="anime2selfie")
    async with db_sessions() as session:
        assert await get_style(session, platform="telegram", platform_user_id="42") == "cat2dog"
        assert await get_style(session, platform="discord", platform_user_id="42") == "anime2selfie"
        assert await session.scalar(select(func.count()).select_from(User)) == 2


async def test_get_or_create_is_idempotent_and_touch_moves_last_seen(db_sessions: Sessions) -> None:
    async with db_sessions() as session:
        first = await get_or_create_user(session, platform="web", platform_user_id="abc")
        assert first.current_style is None
    await asyncio.sleep(0.01)
    async with db_sessions() as session:
        await touch_user(session, platform="web", platform_user_id="abc")
        again = await get_or_create_user(session, platform="web", platform_user_id="abc")
    assert again.id == first.id
    assert again.created_at == first.created_at
    assert again.last_seen_at > first.last_seen_at


async def test_concurrent_first_contact_makes_one_row(db_sessions: Sessions) -> None:
    async def contact() -> int:
        async with db_sessions() as session:
            return (await get_or_create_user(session, platform="discord", platform_user_id="7")).id

    ids = await asyncio.gather(*(contact() for _ in range(8)))
    assert len(set(ids)) == 1


async def test_forget_user_removes_their_rows_only(db_sessions: Sessions) -> None:
    recorder = UsageRecorder(db_sessions)
    for user in ["1", "1", "1", "2"]:
        recorder.record(UsageRecord("telegram", user, "chat", "cat2dog", "ok", latency_ms=5))
    await recorder.close()
    async with db_sessions() as session:
        await set_style(session, platform="telegram", platform_user_id="1", style="cat2dog")
        await set_style(session, platform="telegram", platform_user_id="2", style="cat2dog")
        forgotten = await forget_user(session, platform="telegram", platform_user_id="1")
        assert (forgotten.users, forgotten.usage) == (1, 3)
        assert await get_style(session, platform="telegram", platform_user_id="1") is None
        assert await get_style(session, platform="telegram", platform_user_id="2") == "cat2dog"
        assert await session.scalar(select(func.count()).select_from(Usage)) == 1
        again = await forget_user(session, platform="telegram", platform_user_id="1")
        assert (again.users, again.usage) == (0, 0)
