"""The rate limits in the database (`db.limits`), so every bot replica counts the same requests.

Each admission is one short transaction (PostgreSQL carries thousands a
second; a photo takes a second or more to draw). A reply never waits on a slow
database longer than `DEADLINE_S`: past it, the process's own in-memory limits
decide, and the database's late answer is undone where it took a turn.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Hashable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bots.limits import BUSY_RETRY_S, WINDOW_S, Refusal, UserLimits
from db import limits

logger = logging.getLogger(__name__)

DEADLINE_S = 0.5  # as the core's other waits for the database
TURN_STALE_S = 900.0  # a turn held this long lost its replica (a clip drawn in a long line takes minutes)
Decision = tuple[Refusal | None, int]


class SharedLimits:
    """`UserLimits`' rules (`bots.limits.Limits`), counted in the database under `name:key`."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], name: str, per_minute: int, *,
        one_at_a_time: bool = True, clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions, self._name, self._per_minute = sessions, name, per_minute
        self._one_at_a_time, self._clock = one_at_a_time, clock
        self._holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._local = UserLimits(per_minute, one_at_a_time=one_at_a_time)  # while the database does not answer
        self._turns: dict[Hashable, bool] = {}  # key -> its turn is in the database (else in `_local`)
        self._background: set[asyncio.Task[object]] = set()
        self._last_sweep = 0.0
        self._hanging: asyncio.Task[object] | None = None  # a database call past its deadline, still waiting

    @property
    def per_minute(self) -> int:
        """The allowance: requests per minute."""
        return self._per_minute

    def _key(self, key: Hashable) -> str:
        parts = key if isinstance(key, tuple) else (key,)
        return ":".join([self._name, *map(str, parts)])[:200]

    async def admit(self, key: Hashable, *, until: float | None = None) -> Decision:
        """Ask the database until `until` (`time.monotonic()`; None: `DEADLINE_S` from now), else decide in
        memory. While an earlier call still hangs, the database is not asked at all: one hung call at a
        time, and no reply waits on a database known to be slow."""
        if self._hanging is None:
            work = asyncio.create_task(self._admit(self._key(key), self._clock()))
            timeout = DEADLINE_S if until is None else max(0.0, until - time.monotonic())
            done, _ = await asyncio.wait({work}, timeout=timeout)
            if done and work.exception() is None:
                decision = work.result()
                if decision[0] is None and self._one_at_a_time:
                    self._turns[key] = True
                return decision
            if done:
                logger.warning("rate limit %s not asked of the database (%s): counted here", self._name,
                               work.exception())
            else:
                logger.warning("rate limit %s: the database is slow, counted here until it answers", self._name)
                work.add_done_callback(lambda task: self._late(key, task))  # not cancelled: it waits on the connection
                self._hang(work)
        refusal, retry = await self._local.admit(key)
        if refusal is None and self._one_at_a_time:
            self._turns[key] = False
        return refusal, retry

    async def end(self, key: Hashable) -> None:
        """End `key`'s request: its turn is given back where it was taken, before the reply goes out (so
        the user's next photo finds it free on any replica), waiting for the database at most `DEADLINE_S`
        (not at all while it is known to hang: the turn is given back when it answers)."""
        in_database = self._turns.pop(key, None)
        if in_database:
            ending = self._spawn(self._end_turn(self._key(key)))
            if self._hanging is None:
                done, _ = await asyncio.wait({ending}, timeout=DEADLINE_S)
                if not done:
                    self._hang(ending)
        elif in_database is not None:
            self._local.release(key)

    def _hang(self, task: asyncio.Task[object]) -> None:
        """`task` outlived its deadline: the database counts as slow until it ends."""
        self._hanging = task
        task.add_done_callback(lambda _: setattr(self, "_hanging", None))

    async def take_back(self, key: Hashable) -> None:
        """Uncount `key`'s latest request, waiting for the database at most `DEADLINE_S`."""
        taking = self._spawn(self._write(limits.take_back_hit, key=self._key(key)))
        if self._hanging is None:
            await asyncio.wait({taking}, timeout=DEADLINE_S)

    async def _admit(self, key: str, now: float) -> Decision:
        """One transaction: the turn (one at a time), then the minute's count; a refused count gives the turn back."""
        async with self._sessions() as session, session.begin():
            await limits.relax(session)
            if self._one_at_a_time and not await limits.take_turn(
                session, key=key, holder=self._holder, now=now, stale_before=now - TURN_STALE_S
            ):
                return Refusal.BUSY, BUSY_RETRY_S
            since = now - WINDOW_S
            if await limits.count_hit(session, key=key, now=now, since=since, limit=self._per_minute):
                decision: Decision = (None, 0)
            else:
                oldest = await limits.oldest_hit(session, key=key, since=since)
                decision = Refusal.TOO_MANY, max(1, math.ceil(WINDOW_S - (now - (oldest or now))))
                if self._one_at_a_time:
                    await limits.end_turn(session, key=key, holder=self._holder)
        if now - self._last_sweep >= WINDOW_S:  # keys nobody used for a minute
            self._last_sweep = now
            self._spawn(self._write(limits.sweep, before=since))
        return decision

    def _late(self, key: Hashable, task: asyncio.Task[Decision]) -> None:
        """The database admitted a request the process had already decided on: give back the turn it took."""
        if not task.cancelled() and task.exception() is None and task.result()[0] is None and self._one_at_a_time:
            self._spawn(self._end_turn(self._key(key)))

    async def _end_turn(self, key: str) -> None:
        await self._write(limits.end_turn, key=key, holder=self._holder)

    async def _write(self, change: Callable[..., Awaitable[object]], **values: object) -> None:
        """One change in its own transaction; a failure is logged (a stale turn is taken over in time)."""
        try:
            async with self._sessions() as session, session.begin():
                await limits.relax(session)
                await change(session, **values)
        except (SQLAlchemyError, OSError) as error:
            logger.warning("rate limit %s: %s not written: %s", self._name, change.__name__, error)

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def settle(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for turns still being given back (at shutdown)."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout_s)
