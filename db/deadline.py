"""Deadlines on the database work a person waits for (an admin's /stats, anyone's /forget).

A hung database must not freeze the commands an operator needs during an
incident: the work runs for at most `DEADLINE_S` while the person waits, then
`NotAnswering` tells the caller to say so. The work itself is not cancelled
(cancelling a query on a hung connection waits on that connection too, and
would leave a write's fate unknown): it goes on in the background and ends
when the database answers or fails.

Work is keyed, so that asking again never does it twice: a call with the key
of work still running waits for that work instead of starting it again, and
work asked to be kept (`keep=True`, for writes) that finished after its caller
gave up hands its outcome to the next call with its key, within `KEPT_S`
(the retry reports what was done).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from db.usage import is_data_error

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEADLINE_S = 0.8  # a person's command answers within 1 s, whatever the database does
KEPT_S = 600.0  # how long a kept outcome waits for its caller's retry
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0  # `until_done`'s backoff
# What a database that is away raises (asyncpg's own command timeout is a TimeoutError).
DATABASE_AWAY = (SQLAlchemyError, OSError, TimeoutError)


class NotAnswering(Exception):
    """The database did not answer within the deadline; the work goes on in the background."""


@dataclass
class _Work:
    task: asyncio.Task[Any]
    keep: bool = False  # a caller gave up on it and asked for its outcome to be kept
    abandoned: bool = False  # a caller gave up on it: nobody may read its exception but us
    kept_until: float | None = field(default=None)


class Deadlines:
    """Runs keyed database work for at most `seconds` each time someone waits for it."""

    def __init__(self, seconds: float = DEADLINE_S) -> None:
        self.seconds = seconds
        self._work: dict[Hashable, _Work] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]], *, keep: bool = False) -> T:
        """`work()`'s result, or `NotAnswering` after `seconds` (the work goes on); a kept outcome
        of earlier work under `key` is returned (or its failure forgotten) instead of working again."""
        self._drop_expired()
        current = self._work.get(key)
        if current is not None and current.task.done():
            del self._work[key]
            if current.kept_until is not None and time.monotonic() < current.kept_until and _succeeded(current.task):
                return current.task.result()  # type: ignore[no-any-return]
            current = None
        if current is None:
            current = _Work(asyncio.ensure_future(work()))
            self._work[key] = current
            current.task.add_done_callback(lambda task, key=key, entry=current: self._finished(key, entry))
        done, _ = await asyncio.wait({current.task}, timeout=self.seconds)
        if not done:
            current.abandoned = True
            current.keep = current.keep or keep
            raise NotAnswering
        if self._work.get(key) is current:
            del self._work[key]
        return current.task.result()  # type: ignore[no-any-return]

    async def settle(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for work still running in the background (tests, shutdown)."""
        running = [w.task for w in self._work.values() if not w.task.done()]
        if running:
            await asyncio.wait(running, timeout=timeout_s)

    def _drop_expired(self) -> None:
        """Forget kept outcomes nobody came back for."""
        now = time.monotonic()
        for key in [k for k, w in self._work.items() if w.kept_until is not None and w.kept_until <= now]:
            del self._work[key]

    def _finished(self, key: Hashable, entry: _Work) -> None:
        """Keep the outcome of work its caller gave up on, if asked; log a failure nobody will see."""
        if entry.abandoned and not _succeeded(entry.task):
            error = None if entry.task.cancelled() else entry.task.exception()
            logger.warning("database work %r failed after its caller gave up: %s", key, error)
        if entry.keep and _succeeded(entry.task):
            entry.kept_until = time.monotonic() + KEPT_S
        elif self._work.get(key) is entry and entry.abandoned:
            del self._work[key]


def _succeeded(task: asyncio.Task[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def until_done(work: Callable[[], Awaitable[T]], *, what: str) -> T:
    """`work()`, tried again with backoff while the database is away: for writes a person was
    promised (a /forget, a deployment's log entry), which must not be lost to a timeout."""
    delay = RETRY_MIN_S
    while True:
        try:
            return await work()
        except DATABASE_AWAY as error:
            if is_data_error(error):  # this write's own data: trying again cannot help
                raise
            logger.warning("%s failed, retrying in %.1f s: %s: %s", what, delay, type(error).__name__, error)
        await asyncio.sleep(delay)
        delay = min(2 * delay, RETRY_MAX_S)
