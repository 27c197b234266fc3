"""Rate limits that hold across replicas: two cores over one database refuse what one core would."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from bots.core import DB_DEADLINE_S, Attachment, Core, Request
from bots.limits import ChatLimits
from bots.shared_limits import SharedLimits
from db.engine import create_engine, session_factory
from db.usage import UsageRecorder
from fakes.stylizer import MemoryStylizer
from test_db_usage import PostgresProxy
from torchserve_fixture import free_ports

CORE = {"default_style": "selfie2anime", "requests_per_minute": 10, "max_in_flight": 4,
        "max_upload_bytes": 2**20, "output_size": 64}
SLACK_S = 0.4  # event-loop and thread hand-offs on a loaded machine


@asynccontextmanager
async def replicas(url: str, count: int, *, shared: bool) -> AsyncIterator[list[Core]]:
    """`count` cores, each with its own connection pool and model, as separate processes have."""
    async with AsyncExitStack() as stack:
        cores = []
        for _ in range(count):
            engine = create_engine(url)
            stack.push_async_callback(engine.dispose)
            sessions = session_factory(engine)
            recorder = UsageRecorder(sessions)
            stack.push_async_callback(recorder.close)
            core = Core(stylizer=MemoryStylizer(delay_s=0.2), sessions=sessions, recorder=recorder,
                        shared_limits=shared, **CORE)
            stack.push_async_callback(core.settle, 5.0)
            cores.append(core)
        yield cores


def photo(face_jpeg: bytes) -> Request:
    async def read() -> bytes:
        return face_jpeg

    return Request(platform="telegram", user_id="42", chat_id="42",
                   attachment=Attachment("image/jpeg", len(face_jpeg), read))


async def thirty_photos(cores: list[Core], face_jpeg: bytes) -> Counter[str | None]:
    """One user's 30 photos, two at a time (one to each replica when there are two): what each came to."""
    seen: Counter[str | None] = Counter()
    for _ in range(15):
        replies = await asyncio.gather(*(cores[i % len(cores)].handle(photo(face_jpeg)) for i in range(2)))
        seen.update(reply.problem for reply in replies)
        for reply in replies:
            assert reply.retry_after_s is None or 1 <= reply.retry_after_s <= 60
    return seen


async def test_thirty_photos_over_two_replicas_meet_the_refusals_of_one(db_url: str, face_jpeg: bytes) -> None:
    async with replicas(db_url, 1, shared=False) as one:
        alone = await thirty_photos(one, face_jpeg)
    assert alone == {None: 10, "busy": 10, "too_many": 10}  # one at a time, ten a minute

    async with replicas(db_url, 2, shared=True) as two:
        assert await thirty_photos(two, face_jpeg) == alone


async def test_in_memory_limits_do_not_hold_across_replicas(sqlite_db_url: str, face_jpeg: bytes) -> None:
    async with replicas(sqlite_db_url, 2, shared=False) as two:  # what SHARED_LIMITS=false allows: twice as much
        assert (await thirty_photos(two, face_jpeg))[None] == 20


async def test_a_groups_minute_holds_across_replicas(db_url: str) -> None:
    engines = [create_engine(db_url) for _ in range(2)]
    try:
        groups = [ChatLimits(3, 2, minute=SharedLimits(session_factory(e), "chat:telegram", 3, one_at_a_time=False))
                  for e in engines]
        refused = []
        for i in range(6):
            async with groups[i % 2].share(-100) as share:
                refused.append(share.refusal is not None)
        assert refused == [False, False, False, True, True, True]
    finally:
        for engine in engines:
            await engine.dispose()


async def test_without_the_database_the_process_counts_alone(caplog: pytest.LogCaptureFixture) -> None:
    (closed,) = free_ports(1)
    engine = create_engine(f"postgresql+asyncpg://toonbot@127.0.0.1:{closed}/toonbot")
    limits = SharedLimits(session_factory(engine), "user", 2)
    try:
        with caplog.at_level(logging.WARNING):
            assert await limits.admit("ann") == (None, 0)
            decision = await limits.admit("ann")
        assert decision[0] is not None and decision[0].value == "busy"
        await limits.end("ann")
        assert (await limits.admit("ann"))[0] is None
        await limits.end("ann")
        assert (await limits.admit("ann"))[0] is not None  # two a minute, counted here
        assert "counted here" in caplog.text
    finally:
        await engine.dispose()


async def test_a_hung_database_holds_a_photo_once_and_the_next_not_at_all(
    postgres_db_url: str, face_jpeg: bytes
) -> None:
    proxy = PostgresProxy(postgres_db_url)  # PostgreSQL behind a proxy that can stop passing bytes
    await proxy.start()
    try:
        async with replicas(proxy.url, 1, shared=True) as (core,):
            assert (await core.handle(photo(face_jpeg))).problem is None  # the style is read and remembered
            proxy.freeze()
            for _ in range(3):
                started = time.perf_counter()
                assert (await core.handle(photo(face_jpeg))).problem is None  # counted in memory meanwhile
                assert time.perf_counter() - started < 0.2 + DB_DEADLINE_S + SLACK_S
            proxy.thaw()
    finally:
        proxy.thaw()
        await proxy.cut()
