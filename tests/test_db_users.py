"""Users: style round-trip, concurrent first contact, forgetting a user."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Usage, User
from db.usage import UsageRecord, UsageRecorder
from db.users import forget_user, get_style, set_style

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


async def test_concurrent_first_contact_makes_one_row(db_sessions: Sessions) -> None:
    async def contact(style: str) -> None:
        async with db_sessions() as session:
            await set_style(session, platform="discord", platform_user_id="7", style=style)

    await asyncio.gather(*(contact(f"style{i}") for i in range(8)))
    async with db_sessions() as session:
        rows = (await session.scalars(select(User).where(User.platform_user_id == "7"))).all()
    assert len(rows) == 1 and rows[0].current_style.startswith("style")


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
