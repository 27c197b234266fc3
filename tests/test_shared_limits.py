"""Rate limits that hold across replicas: two cores over one database refuse what one core would."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from bots.core import DB_DEADLINE_S, Attachment, Core, Request
from bots.limits import ChatLimits
from bots.shared_limits import SharedLimits
from db.engine import create_engine, session_factory
from db.usage import UsageRecorder
from fakes.stylizer import MemoryStylizer
from serving.api import Stylized
from test_db_usage import PostgresProxy
from torchserve_fixture import free_ports
from waiting import HANG_S, patience, still_minute, until

CORE = {"default_style": "selfie2anime", "requests_per_minute": 10, "max_in_flight": 4,
        "max_upload_bytes": 2**20, "output_size": 64}
# A photo held by a hung database is timed with tests/test_core_deadlines.py's margin: one a loaded 2-core
# machine survives, far below a wait for the frozen database (which never answers). The photos after it
# are told apart by what the limiter logs, not by time.
WITHIN_DEADLINE_S = 0.2 + DB_DEADLINE_S + 2.5  # the drawing, the deadline, the margin
SLOW = "the database is slow, counted here until it answers"


@pytest.fixture
def one_minute() -> Iterator[Callable[[], float]]:
    """The limiters' clock, standing still (`waiting.still_minute`); a test's own limiters may read it too."""
    now = time.time()
    with still_minute(now):
        yield lambda: now


class Held(MemoryStylizer):
    """Draws once the test opens its gate: a photo admitted stays in flight until the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0  # photos admitted and held at the gate

    async def stylize(self, style: str, image: bytes, **kw: Any) -> Stylized:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().stylize(style, image, **kw)


@asynccontextmanager
async def replicas(
    url: str, count: int, *, shared: bool, stylizer: MemoryStylizer | None = None
) -> AsyncIterator[list[Core]]:
    """`count` cores, each with its own connection pool, as separate processes have; they draw with
    `stylizer` (by default one each that takes 0.2 s a photo)."""
    async with AsyncExitStack() as stack:
        cores = []
        for _ in range(count):
            engine = create_engine(url, timeout=HANG_S)  # a hung call lasts the test (see the last one)
            stack.push_async_callback(engine.dispose)
            sessions = session_factory(engine)
            recorder = UsageRecorder(sessions)
            stack.push_async_callback(recorder.close)
            core = Core(stylizer=stylizer or MemoryStylizer(delay_s=0.2), sessions=sessions, recorder=recorder,
                        shared_limits=shared, **CORE)
            stack.push_async_callback(core.settle, 5.0)
            cores.append(core)
        yield cores


def photo(face_jpeg: bytes) -> Request:
    async def read() -> bytes:
        return face_jpeg

    return Request(platform="telegram", user_id="42", chat_id="42",
                   attachment=Attachment("image/jpeg", len(face_jpeg), read))


async def thirty_photos(url: str, count: int, shared: bool, face_jpeg: bytes) -> Counter[str | None]:
    """One user's 30 photos over `count` replicas, two at a time (one to each replica when there are
    two): what each came to. The one admitted draws once the other has its answer (not after a time),
    so the two are in flight together however slowly the machine goes."""
    seen: Counter[str | None] = Counter()
    held = Held()
    async with replicas(url, count, shared=shared, stylizer=held) as cores:
        for _ in range(15):
            held.gate.clear()
            asked = [asyncio.create_task(cores[i % len(cores)].handle(photo(face_jpeg))) for i in range(2)]
            await until(lambda: sum(a.done() for a in asked) + held.waiting == 2, "both photos admitted or answered")
            held.gate.set()
            replies = await asyncio.gather(*asked)
            seen.update(reply.problem for reply in replies)
            for reply in replies:
                assert reply.retry_after_s is None or 1 <= reply.retry_after_s <= 60
    return seen


@pytest.mark.usefixtures("one_minute")
async def test_thirty_photos_over_two_replicas_meet_the_refusals_of_one(db_url: str, face_jpeg: bytes) -> None:
    alone = await thirty_photos(db_url, 1, False, face_jpeg)
    assert alone == {None: 10, "busy": 10, "too_many": 10}  # one at a time, ten a minute
    assert await thirty_photos(db_url, 2, True, face_jpeg) == alone


@pytest.mark.usefixtures("one_minute")
async def test_in_memory_limits_do_not_hold_across_replicas(sqlite_db_url: str, face_jpeg: bytes) -> None:
    # What SHARED_LIMITS=false allows: twice as much.
    assert (await thirty_photos(sqlite_db_url, 2, False, face_jpeg))[None] == 20


async def test_a_groups_minute_holds_across_replicas(db_url: str, one_minute: Callable[[], float]) -> None:
    engines = [create_engine(db_url) for _ in range(2)]
    try:
        minutes = [SharedLimits(session_factory(e), "chat:telegram", 3, one_at_a_time=False, clock=one_minute)
                   for e in engines]
        groups = [ChatLimits(3, 2, minute=minute) for minute in minutes]
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


@pytest.mark.deadline  # the photo held by the hung database at most DB_DEADLINE_S
async def test_a_hung_database_holds_a_photo_once_and_the_next_not_at_all(
    postgres_db_url: str, face_jpeg: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = PostgresProxy(postgres_db_url)  # PostgreSQL behind a proxy that can stop passing bytes
    await proxy.start()
    try:
        async with replicas(proxy.url, 1, shared=True) as (core,):
            with patience():  # the style read and remembered, the turn given back: nothing still hangs
                assert (await core.handle(photo(face_jpeg))).problem is None
                await core.settle(HANG_S)
            proxy.freeze()
            with caplog.at_level(logging.WARNING):  # and answered while it hangs: none waits for it
                started = time.perf_counter()
                assert (await core.handle(photo(face_jpeg))).problem is None  # counted in memory meanwhile
                assert time.perf_counter() - started < WITHIN_DEADLINE_S
                async with asyncio.timeout(HANG_S):
                    for _ in range(2):
                        assert (await core.handle(photo(face_jpeg))).problem is None
            # One call outlived its deadline; while it hangs (past the engine's connect timeout, which
            # would end it and let the next photo ask again), the next photos ask the database nothing.
            assert caplog.text.count(SLOW) == 1
            proxy.thaw()
    finally:
        proxy.thaw()
        await proxy.cut()
