"""A hung database slows nothing but itself: replies wait for it at most `DB_DEADLINE_S`.

The hang is real: PostgreSQL behind a TCP proxy that stops passing bytes while
keeping every connection open (and accepting new ones), and SQLite with its
write lock held by another connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from test_db_usage import PostgresProxy, SqliteLock

from bots import core as core_module
from bots import messages
from bots.core import Attachment, Core, Request
from db.engine import create_engine, session_factory
from db.models import User
from db.usage import UsageRecorder
from fakes.stylizer import MemoryStylizer
from serving.engine import EmbeddedEngine

torch.set_num_threads(1)
LIMITS = {"default_style": "selfie2anime", "requests_per_minute": 100, "max_in_flight": 2,
          "max_upload_bytes": 2**20, "output_size": 64}
SLACK_S = 0.4  # event-loop and thread hand-offs on a loaded machine


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
async def app_core(engine_model_store: Path, postgres_db_url: str) -> AsyncIterator[tuple[Core, PostgresProxy]]:
    """A core whose database is PostgreSQL through a proxy the test can freeze."""
    proxy = PostgresProxy(postgres_db_url)
    await proxy.start()
    engine = create_engine(proxy.url, timeout=30)  # the engine's own timeouts would take far longer
    sessions = session_factory(engine)
    recorder = UsageRecorder(sessions)
    stylizer = EmbeddedEngine(engine_model_store)
    core = Core(stylizer=stylizer, sessions=sessions, recorder=recorder, **LIMITS)
    yield core, proxy
    proxy.thaw()
    await recorder.close(timeout_s=10)
    await stylizer.close()
    await engine.dispose()
    await proxy.cut()


async def test_a_frozen_postgres_does_not_stall_replies(
    app_core: tuple[Core, PostgresProxy], face_jpeg: bytes, postgres_db_url: str
) -> None:
    core, proxy = app_core
    await core.handle(ask("known", "/style anime2selfie"))
    await core.handle(ask("known", image=face_jpeg))  # warm: the model is loaded
    proxy.freeze()

    took, styles = await timed(core, ask("known", "/styles"))
    assert took < 0.1 + SLACK_S  # remembered: no round trip at all
    assert [b.style for b in styles.buttons if b.selected] == ["anime2selfie"]

    took, styles = await timed(core, ask("stranger", "/styles"))
    assert took < core_module.DB_DEADLINE_S + SLACK_S
    assert [b.style for b in styles.buttons if b.selected] == ["selfie2anime"]  # the default

    took, photo = await timed(core, ask("stranger", image=face_jpeg))
    assert photo.image is not None and photo.text == "Selfie to anime"
    took_set, switched = await timed(core, ask("stranger", "/style anime2selfie"))
    assert took_set < core_module.DB_DEADLINE_S + SLACK_S
    assert switched.text == messages.STYLE_SET.format(title="Anime to selfie")
    took, styles = await timed(core, ask("stranger", "/styles"))
    assert [b.style for b in styles.buttons if b.selected] == ["anime2selfie"]  # known here already
    await core.handle(ask("stranger", "/style selfie2anime"))  # changed again while the save hangs

    proxy.thaw()  # the save that outlived its reply lands once the database answers
    engine = create_engine(postgres_db_url)
    try:
        for _ in range(100):
            async with session_factory(engine)() as session:
                saved = await session.scalar(select(User.current_style).where(User.platform_user_id == "stranger"))
            if saved == "selfie2anime":
                break
            await asyncio.sleep(0.1)
        assert saved == "selfie2anime"  # the last choice, not the first save that hung
    finally:
        await engine.dispose()


async def test_a_locked_sqlite_does_not_stall_a_style_change(sqlite_db_url: str) -> None:
    engine = create_engine(sqlite_db_url)  # waits up to 10 s for the lock
    sessions = session_factory(engine)
    recorder = UsageRecorder(sessions)
    stylizer = MemoryStylizer()
    core = Core(stylizer=stylizer, sessions=sessions, recorder=recorder, **LIMITS)
    lock = SqliteLock(sqlite_db_url)
    try:
        await lock.cut()
        took, switched = await timed(core, ask("u1", "/style anime2selfie"))
        assert took < core_module.DB_DEADLINE_S + SLACK_S
        assert switched.text == messages.STYLE_SET.format(title="Anime to selfie")
        await lock.restore()
        await core.settle(15)
        async with sessions() as session:
            assert await session.scalar(select(User.current_style)) == "anime2selfie"
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
