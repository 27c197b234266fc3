"""Usage records: queued in memory by the request path, written in batches in the background.

A reply never waits for the database. When the database is down (refused
connections, "database is locked", timeouts) records stay queued and the
writer retries with exponential backoff, so none is lost while the process
lives; `close()` flushes what is left on shutdown.

No single record can block the queue: every text field is cleaned and cut to
its column's length, and every number bounded, when the record is made; a
batch that the database still refuses for its data is written row by row and
only the rows refused on their own are set aside (logged and counted).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import reprlib
import unicodedata
from collections import deque
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import get_args

from sqlalchemy import insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Platform, Usage, UsageStatus
from db.types import now_utc

log = logging.getLogger(__name__)

INT_MAX = 2**31 - 1  # the usage table's INTEGER columns
# Column lengths of the usage table's text fields (db/models.py).
TEXT_LENGTHS = {"platform_user_id": 64, "chat_id": 64, "style": 64, "model_version": 32}
INT_FIELDS = ("latency_ms", "input_bytes", "input_pixels", "faces", "frames")
# SQLSTATE classes that mean "this row's data", not "this database": 22 data exception, 23 integrity.
DATA_SQLSTATES = ("22", "23")


def clean_text(value: str, max_length: int) -> str:
    """Drop control characters (NUL included) and lone surrogates, then cut to `max_length`.

    PostgreSQL refuses NUL and over-long values, and no driver can encode a
    lone surrogate: any of them would fail the whole batch.
    """
    kept = "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cs"))
    return kept[:max_length]


@dataclass(frozen=True)
class UsageRecord:
    """One request, successful or not; `created_at` is when it happened, not when it is written."""

    platform: Platform
    platform_user_id: str
    chat_id: str
    style: str
    status: UsageStatus
    latency_ms: int
    model_version: str | None = None
    input_bytes: int | None = None
    input_pixels: int | None = None
    faces: int | None = None  # faces drawn, as the handler counted them
    frames: int | None = None  # an animated GIF's or a video's frames; None for a photo
    seconds: float | None = None  # that clip's length
    created_at: datetime = field(default_factory=now_utc)

    def __post_init__(self) -> None:
        # Checked and cleaned here, at the caller, so that a bad record can never block the queue.
        for name, length in TEXT_LENGTHS.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, clean_text(str(value), length))
        for name in INT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, min(int(value), INT_MAX))
        if self.platform not in get_args(Platform):
            raise ValueError(f"unknown platform {self.platform!r}")
        if self.status not in get_args(UsageStatus):
            raise ValueError(f"unknown usage status {self.status!r}")
        if self.seconds is not None:
            if not math.isfinite(self.seconds):
                raise ValueError("seconds must be a finite number")
            object.__setattr__(self, "seconds", float(self.seconds))
        counts = (self.input_bytes, self.input_pixels, self.faces, self.frames, self.seconds)
        if min(self.latency_ms, *(c or 0 for c in counts)) < 0:
            raise ValueError("latency_ms, input_bytes, input_pixels, faces, frames and seconds must be >= 0")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")


class UsageRecorder:
    """Buffers usage records and writes them from one background task.

    Create it inside the running event loop (e.g. in a bot's startup hook) and
    `await close()` in the shutdown hook.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        batch_size: int = 200,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        if batch_size < 1 or not 0 < retry_min_s <= retry_max_s:
            raise ValueError("need batch_size >= 1 and 0 < retry_min_s <= retry_max_s")
        self._sessions = sessions
        self._batch_size = batch_size
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._queue: deque[UsageRecord] = deque()
        self._set_aside = 0
        self._wakeup = asyncio.Event()  # new records, or closing: stop waiting
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(self._write_forever(), name="usage-writer")

    @property
    def pending(self) -> int:
        """Records not yet in the database."""
        return len(self._queue)

    @property
    def set_aside(self) -> int:
        """Records the database refused for their own data: logged, then dropped."""
        return self._set_aside

    def record(self, rec: UsageRecord) -> None:
        """Queue one record; returns at once."""
        if self._closing.is_set():
            raise RuntimeError("UsageRecorder is closed")
        self._queue.append(rec)
        self._drained.clear()
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until every record queued so far is in the database (however long that takes)."""
        await self._drained.wait()

    async def close(self, *, timeout_s: float = 30.0) -> None:
        """Stop taking records and flush the queue; give up (and log how many) after `timeout_s`,
        or when the shutdown is cut short (cancelled)."""
        self._closing.set()
        self._wakeup.set()
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except TimeoutError:
            log.error("database unavailable at shutdown: %d usage records not saved", self.pending)
        except asyncio.CancelledError:
            log.error("shutdown cut short: %d usage records not saved", self.pending)
            raise
        finally:
            self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_forever(self) -> None:
        delay = self._retry_min_s
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = list(itertools.islice(self._queue, self._batch_size))
                try:
                    await self._write(batch)
                    done = len(batch)
                except Exception as exc:  # noqa: BLE001 - sorted below
                    if not is_data_error(exc):  # the database, not the rows: keep them, retry
                        log.warning(
                            "usage write failed (%d pending), retrying in %.1f s: %s: %s",
                            len(self._queue), delay, type(exc).__name__, exc,
                        )
                        await self._sleep(delay)
                        delay = min(2 * delay, self._retry_max_s)
                        continue
                    done = await self._write_one_by_one(batch, exc)
                for _ in range(done):  # the writer is the only consumer: these are the head
                    self._queue.popleft()
                if delay > self._retry_min_s:
                    log.info("usage writes work again (%d pending)", len(self._queue))
                delay = self._retry_min_s
            self._drained.set()

    async def _write_one_by_one(self, batch: list[UsageRecord], exc: Exception) -> int:
        """Write `batch` row by row, setting aside rows refused for their data.

        Returns how many rows at the head of the batch are done with (written
        or set aside): it stops early, leaving the rest queued for the next
        try, when the database itself fails.
        """
        log.warning("usage batch of %d refused (%s): writing its rows one by one", len(batch), type(exc).__name__)
        for done, rec in enumerate(batch):
            try:
                await self._write([rec])
            except Exception as row_exc:  # noqa: BLE001 - sorted below
                if not is_data_error(row_exc):
                    return done
                self._set_aside += 1
                log.error(
                    "usage record set aside (%d so far), the database refused it: %s: %s; record: %s",
                    self._set_aside, type(row_exc).__name__, reprlib.repr(str(row_exc)), reprlib.repr(asdict(rec)),
                )
        return len(batch)

    async def _write(self, batch: list[UsageRecord]) -> None:
        async with self._sessions() as session:
            await session.execute(insert(Usage), [asdict(rec) for rec in batch])
            await session.commit()

    async def _sleep(self, delay: float) -> None:
        """Back off; once shutdown starts, retry at the shortest interval instead."""
        if not self._closing.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)
        else:
            await asyncio.sleep(self._retry_min_s)


def is_data_error(exc: BaseException) -> bool:
    """True when the database refused the rows themselves, not when it is unreachable or busy.

    Data errors repeat on every retry, so retrying would block the queue
    for good; everything else (refused connections, locks, timeouts) passes.
    """
    if isinstance(exc, (DataError, IntegrityError)):
        return True
    if isinstance(exc, DBAPIError):
        return str(getattr(exc.orig, "sqlstate", "") or "").startswith(DATA_SQLSTATES)
    # Refused before it reached the database: a value the driver cannot bind.
    return isinstance(exc, (StatementError, ValueError, TypeError, OverflowError))
