"""UsageRecorder: records never wait for, and are never lost to, the database.

The outage tests really take the database away from the app: SQLite by an
exclusive lock held from another connection ("database is locked"), PostgreSQL
by cutting a TCP proxy that sits between the engine and the server (open
connections die, new ones are refused).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import make_url, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import create_engine, session_factory
from db.models import Usage
from db.usage import UsageRecord, UsageRecorder

Sessions = async_sessionmaker[AsyncSession]
FAST_RETRY = {"retry_min_s": 0.05, "retry_max_s": 0.2}


def usage(user: str, **fields: object) -> UsageRecord:
    return UsageRecord(
        **{"platform": "telegram", "platform_user_id": user, "chat_id": "c1", "style": "selfie2anime",
           "status": "ok", "latency_ms": 120, **fields}  # type: ignore[arg-type]
    )


async def stored_users(sessions: Sessions) -> list[str]:
    async with sessions() as session:
        return sorted(await session.scalars(select(Usage.platform_user_id)))


class SqliteLock:
    """Takes a SQLite database away by holding its write lock from another connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._path = make_url(url).database
        self._holder: sqlite3.Connection | None = None

    async def cut(self) -> None:
        self._holder = sqlite3.connect(self._path, isolation_level=None)
        self._holder.execute("BEGIN EXCLUSIVE")

    async def restore(self) -> None:
        assert self._holder is not None
        self._holder.execute("ROLLBACK")
        self._holder.close()


class PostgresProxy:
    """A TCP proxy in front of PostgreSQL that can be cut and restored, or frozen: connections
    stay open and new ones are accepted, but nothing goes through (a hung server)."""

    def __init__(self, url: str) -> None:
        self._target = make_url(url)
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.WriteTransport] = []
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0
        self.url = ""

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = self._target.set(port=self.port).render_as_string(hide_password=False)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def restore(self) -> None:
        await self.start()  # the same port again

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._transports.append(client_w.transport)
        await self._flowing.wait()
        server_r, server_w = await asyncio.open_connection(self._target.host, self._target.port)
        self._transports.append(server_w.transport)
        await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def outage(db_url: str) -> AsyncIterator[SqliteLock | PostgresProxy]:
    """Something that makes the database unavailable to an engine on `outage.url`."""
    if db_url.startswith("sqlite"):
        yield SqliteLock(db_url)
        return
    proxy = PostgresProxy(db_url)
    await proxy.start()
    yield proxy
    await proxy.cut()


@pytest.fixture
async def app_sessions(outage: SqliteLock | PostgresProxy) -> AsyncIterator[Sessions]:
    """The app's sessions, through the outage (short timeouts keep the test quick)."""
    before = set(threading.enumerate())
    engine = create_engine(outage.url, timeout=0.5)
    yield session_factory(engine)
    await engine.dispose()
    # A write cancelled mid-flight leaves its aiosqlite connection to the garbage collector, whose
    # clean-up stops the connection's thread with a reply to whatever loop is current then: a later
    # test's, or one already closed. Collect it while this test's loop runs, and let the thread end.
    gc.collect()
    for thread in set(threading.enumerate()) - before:
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 5)


async def failures_logged(caplog: pytest.LogCaptureFixture, count: int) -> None:
    while sum("usage write failed" in r.getMessage() for r in caplog.records) < count:
        await asyncio.sleep(0.02)


async def test_concurrent_records_all_land(db_sessions: Sessions) -> None:
    recorder = UsageRecorder(db_sessions, batch_size=3)
    when = datetime.now(UTC) - timedelta(minutes=5)

    async def request(i: int) -> None:
        await asyncio.sleep(0)
        recorder.record(usage(f"u{i:02d}", created_at=when, input_bytes=1000 + i, input_pixels=64 * 64, faces=i % 3,
                              frames=i or None, seconds=i / 10 or None))

    await asyncio.gather(*(request(i) for i in range(20)))
    await recorder.flush()
    assert recorder.pending == 0
    assert await stored_users(db_sessions) == [f"u{i:02d}" for i in range(20)]
    async with db_sessions() as session:
        row = await session.scalar(select(Usage).where(Usage.platform_user_id == "u07"))
    assert (row.input_bytes, row.input_pixels, row.status, row.latency_ms, row.faces) == (1007, 4096, "ok", 120, 1)
    assert (row.frames, row.seconds) == (7, pytest.approx(0.7))
    assert row.created_at == when  # the time of the request, not of the write
    await recorder.close()


async def test_no_record_lost_while_database_is_down(
    outage: SqliteLock | PostgresProxy, app_sessions: Sessions, db_sessions: Sessions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="db.usage")
    recorder = UsageRecorder(app_sessions, batch_size=4, **FAST_RETRY)
    for i in range(10):
        recorder.record(usage(f"before{i}"))
    await recorder.flush()

    await outage.cut()
    for i in range(10):
        recorder.record(usage(f"during{i}", status="no_face"))
    await asyncio.wait_for(failures_logged(caplog, 3), 30)  # it retried, and kept failing
    assert recorder.pending == 10
    assert len(await stored_users(db_sessions)) == 10

    await outage.restore()
    await asyncio.wait_for(recorder.flush(), 30)
    assert recorder.pending == 0
    expected = sorted([f"before{i}" for i in range(10)] + [f"during{i}" for i in range(10)])
    assert await stored_users(db_sessions) == expected
    await recorder.close()


async def test_close_flushes_records_pending_during_an_outage(
    outage: SqliteLock | PostgresProxy, app_sessions: Sessions, db_sessions: Sessions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="db.usage")
    recorder = UsageRecorder(app_sessions, **FAST_RETRY)
    await outage.cut()
    for i in range(5):
        recorder.record(usage(f"late{i}"))
    await asyncio.wait_for(failures_logged(caplog, 1), 30)

    async def comes_back() -> None:
        await asyncio.sleep(0.3)
        await outage.restore()

    await asyncio.gather(recorder.close(timeout_s=30), comes_back())
    assert recorder.pending == 0
    assert await stored_users(db_sessions) == [f"late{i}" for i in range(5)]
    with pytest.raises(RuntimeError):
        recorder.record(usage("after-close"))


@pytest.mark.parametrize(
    "fields",
    [{"status": "fine"}, {"platform": "irc"}, {"latency_ms": -1}, {"created_at": datetime(2026, 1, 1)}],
)
def test_bad_records_are_refused_at_the_caller(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        usage("u", **fields)


POISON = {
    "style": "x" * 2**20,  # an unknown style name of 1 MB
    "platform_user_id": "c" * 100,  # a visitor cookie the client chose
    "chat_id": "a\x00b\x1b[31m\u0085",  # NUL, an escape sequence, a C1 control
    "model_version": "1.0\ud800" + "9" * 40,  # a lone surrogate no driver can encode
    "latency_ms": 2**40,
    "input_bytes": 2**33,
}


async def test_poisoned_fields_are_cleaned_and_later_records_still_land(
    db_sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="db.usage")
    recorder = UsageRecorder(db_sessions, **FAST_RETRY)
    for name, value in POISON.items():
        recorder.record(usage(f"poison-{name}", **{name: value}))
    for i in range(5):
        recorder.record(usage(f"normal{i}"))
    await asyncio.wait_for(recorder.flush(), 10)
    assert (recorder.pending, recorder.set_aside) == (0, 0)
    assert "usage write failed" not in caplog.text
    async with db_sessions() as session:
        rows = {row.platform_user_id: row for row in await session.scalars(select(Usage))}
    assert len(rows) == len(POISON) + 5
    assert rows["poison-style"].style == "x" * 64
    assert "c" * 64 in rows
    assert rows["poison-chat_id"].chat_id == "ab[31m"
    assert rows["poison-model_version"].model_version == "1.0" + "9" * 29
    assert rows["poison-latency_ms"].latency_ms == 2**31 - 1
    assert rows["poison-input_bytes"].input_bytes == 2**31 - 1
    await recorder.close()


async def test_a_row_the_database_refuses_is_set_aside_alone(
    db_sessions: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = UsageRecorder(db_sessions, batch_size=10, **FAST_RETRY)
    bad = usage("bad")
    object.__setattr__(bad, "status", "fine")  # past the checks, as a bug might slip one through
    records = [usage("first"), bad, usage("last")]
    for rec in records:
        recorder.record(rec)
    await asyncio.wait_for(recorder.flush(), 10)
    for i in range(3):
        recorder.record(usage(f"later{i}"))
    await asyncio.wait_for(recorder.flush(), 10)
    assert (recorder.pending, recorder.set_aside) == (0, 1)
    assert await stored_users(db_sessions) == ["first", "last", "later0", "later1", "later2"]
    assert "usage record set aside (1 so far)" in caplog.text
    await recorder.close()


@pytest.mark.parametrize(
    ("ending", "said"),
    [("timeout", "database unavailable at shutdown: 1 usage records not saved"),
     ("cut short", "shutdown cut short: 1 usage records not saved")],
)
async def test_close_gives_up_and_says_how_many(
    ending: str, said: str, outage: SqliteLock | PostgresProxy, app_sessions: Sessions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = UsageRecorder(app_sessions, **FAST_RETRY)
    await outage.cut()
    recorder.record(usage("lost"))
    if ending == "timeout":
        await recorder.close(timeout_s=0.3)
    else:  # cancelled, as `python -m bots` does once its stop grace is over
        closing = asyncio.create_task(recorder.close(timeout_s=30))
        await asyncio.sleep(0)  # one turn of the loop: the close has begun, and waits for the flush
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
    assert said in caplog.text
    await outage.restore()
    # A writer cancelled mid-write still closes its connection; let it, or the loop's own
    # clean-up (which cancels again) can leave aiosqlite's close waiting for good.
    if others := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(others, timeout=30)
