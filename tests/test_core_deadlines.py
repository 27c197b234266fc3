"""A hung database slows nothing but itself: replies wait for it at most `DB_DEADLINE_S`.

The hang is real: PostgreSQL behind a TCP proxy that stops passing bytes while
keeping every connection open (and accepting new ones), and SQLite with its
write lock held by another connection.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_db_usage import PostgresProxy, SqliteLock

from bots import core as core_module
from bots import messages
from bots.core import Attachment, Core, Request
from db.engine import create_engine, session_factory
from db.models import Usage, User
from db.usage import UsageRecorder
from fakes.stylizer import MemoryStylizer
from serving.engine import EmbeddedEngine
from waiting import until

if TYPE_CHECKING:
    from conftest import ReadUsage

torch.set_num_threads(1)
pytestmark = pytest.mark.deadline  # the real deadlines, not the patient database
LIMITS = {"default_style": "selfie2anime", "requests_per_minute": 100, "max_in_flight": 2,
          "max_upload_bytes": 2**20, "output_size": 64}
# The requirement is a time (a reply waits at most DB_DEADLINE_S), so it is checked as one, with a margin a
# loaded 2-core machine survives (2.5 s), yet far below what a reply that waited for the hung database would
# take (the engine's 30 s timeout here, SQLite's 10 s busy wait; a frozen PostgreSQL never answers). Whether
# a reply asked the database at all is counted (`CountedSessions`), not timed.
WITHIN_DEADLINE_S = core_module.DB_DEADLINE_S + 2.5


class CountedSessions:
    """The core's session factory, counting the sessions it opens: each one is a talk with the database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self.opened = 0

    def __call__(self) -> AsyncSession:
        self.opened += 1
        return self._sessions()


async def usage_rows(read_usage: ReadUsage, url: str, count: int) -> list[tuple[str, str, str]]:
    """(user, style, status) of the usage table once it holds `count` rows (written in the background,
    retried while the database was away), oldest first."""
    rows: list[Usage] = []

    async def landed() -> bool:
        nonlocal rows
        rows = await read_usage(url)
        return len(rows) >= count

    await until(landed, f"{count} usage rows")
    return [(r.platform_user_id, r.style, r.status) for r in rows]


def ask(user: str, text: str = "", image: bytes | None = None) -> Request:
    attachment = None
    if image is not None:
        async def read() -> bytes:
            return image
        attachment = Attachment("image/jpeg", len(image), read)
    return Request(platform="telegram", user_id=user, chat_id=user, text=text, attachment=attachment)


async def timed(core: Core, request: Request) -> tuple[float, object]:
    started = time.perf_counter()
    reply = await core.handle(request)
    return time.perf_counter() - started, reply


@pytest.fixture
async def app_core(
    engine_model_store: Path, postgres_db_url: str
) -> AsyncIterator[tuple[Core, PostgresProxy, CountedSessions]]:
    """A core whose database is PostgreSQL through a proxy the test can freeze."""
    proxy = PostgresProxy(postgres_db_url)
    await proxy.start()
    engine = create_engine(proxy.url, timeout=30)  # the engine's own timeouts would take far longer
    sessions = session_factory(engine)
    recorder = UsageRecorder(sessions)
    stylizer = EmbeddedEngine(engine_model_store)
    counted = CountedSessions(sessions)
    core = Core(stylizer=stylizer, sessions=counted, recorder=recorder, **LIMITS)  # type: ignore[arg-type]
    yield core, proxy, counted
    proxy.thaw()
    await recorder.close(timeout_s=10)
    await stylizer.close()
    await engine.dispose()
    await proxy.cut()


async def test_a_frozen_postgres_does_not_stall_replies(
    app_core: tuple[Core, PostgresProxy, CountedSessions], face_jpeg: bytes, postgres_db_url: str,
    read_usage: ReadUsage,
) -> None:
    core, proxy, sessions = app_core
    await core.handle(ask("known", "/style anime2selfie"))
    await core.handle(ask("known", image=face_jpeg))  # warm: the model is loaded
    proxy.freeze()

    asked = sessions.opened
    _, styles = await timed(core, ask("known", "/styles"))
    assert sessions.opened == asked  # remembered: the database is not asked at all
    assert [b.style for b in styles.buttons if b.selected] == ["anime2selfie"]

    took, styles = await timed(core, ask("stranger", "/styles"))
    assert sessions.opened > asked  # asked, and not waited for
    assert took < WITHIN_DEADLINE_S
    assert [b.style for b in styles.buttons if b.selected] == ["selfie2anime"]  # the default

    took, photo = await timed(core, ask("stranger", image=face_jpeg))
    assert photo.image is not None and photo.text == "Selfie to anime"
    took_set, switched = await timed(core, ask("stranger", "/style anime2selfie"))
    assert took_set < WITHIN_DEADLINE_S
    assert switched.text == messages.STYLE_SET.format(title="Anime to selfie")
    took, styles = await timed(core, ask("stranger", "/styles"))
    assert [b.style for b in styles.buttons if b.selected] == ["anime2selfie"]  # known here already
    await core.handle(ask("stranger", "/style selfie2anime"))  # changed again while the save hangs

    proxy.thaw()  # the save that outlived its reply lands once the database answers
    engine = create_engine(postgres_db_url)

    async def saved() -> bool:  # the last choice, not the first save that hung
        async with session_factory(engine)() as session:
            style = await session.scalar(select(User.current_style).where(User.platform_user_id == "stranger"))
        return style == "selfie2anime"

    try:
        await until(saved, "the last style saved")
    finally:
        await engine.dispose()
    assert await usage_rows(read_usage, postgres_db_url, 2) == [  # the photo drawn while it hung is logged too
        ("known", "anime2selfie", "ok"), ("stranger", "selfie2anime", "ok"),
    ]


async def test_a_locked_sqlite_does_not_stall_a_style_change(
    sqlite_db_url: str, face_jpeg: bytes, read_usage: ReadUsage
) -> None:
    engine = create_engine(sqlite_db_url)  # waits up to 10 s for the lock
    sessions = session_factory(engine)
    recorder = UsageRecorder(sessions)
    stylizer = MemoryStylizer()
    core = Core(stylizer=stylizer, sessions=sessions, recorder=recorder, **LIMITS)
    lock = SqliteLock(sqlite_db_url)
    try:
        await lock.cut()
        took, switched = await timed(core, ask("u1", "/style anime2selfie"))
        assert took < WITHIN_DEADLINE_S
        assert switched.text == messages.STYLE_SET.format(title="Anime to selfie")
        _, drawn = await timed(core, ask("u1", image=face_jpeg))  # its usage row waits in memory
        assert drawn.image is not None
        await lock.restore()
        await core.settle(15)
        async with sessions() as session:
            assert await session.scalar(select(User.current_style)) == "anime2selfie"
        assert await usage_rows(read_usage, sqlite_db_url, 1) == [("u1", "anime2selfie", "ok")]
    finally:
        await recorder.close(timeout_s=5)
        await stylizer.close()
        await engine.dispose()


def test_saved_styles_expire_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(core_module.time, "monotonic", lambda: now[0])
    saved = core_module.SavedStyles(ttl_s=60, max_users=2)
    assert saved.get("a") == (False, None)
    saved.put("a", "cat2dog")
    saved.put("b", None)
    assert saved.get("a") == (True, "cat2dog") and saved.get("b") == (True, None)
    saved.put("c", "dog2cat")  # over the bound: the oldest goes
    assert saved.get("a") == (False, None)
    now[0] += 61
    assert saved.get("c") == (False, "dog2cat")  # expired: ask the database again
