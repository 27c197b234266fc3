"""Waiting for a state, not for a time: what tests do instead of sleeping and hoping.

A test that sleeps "long enough" for something to happen fails on a loaded machine, and one that
checks a duration measures the machine. These wait until the thing itself has happened, for as
long as it takes; `HANG_S` only ends a wait for code that will never get there.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

# Far past any answer on a loaded 2-core machine, and past the longest retry backoff (the usage log's and
# `db.deadline`'s 30 s): only a state never reached waits this long.
HANG_S = 60.0
# A process, or a job, getting going: torch loading and first training steps beside a training run on
# the 2-core machine take minutes. Only one that never gets there waits this long.
START_S = 600.0


async def until(
    reached: Callable[[], bool | Awaitable[bool]], what: str = "the state waited for", *, every: float = 0.01,
    within: float = HANG_S,
) -> None:
    """Return once `reached()` is true (polled every `every` seconds, awaited if it is a coroutine: a
    database read; a poll that reads a log file or asks a server wants a longer `every`); fail if it
    never is (`within`: HANG_S, or START_S for a process or a job getting going)."""

    async def now() -> bool:
        answer = reached()
        return await answer if inspect.isawaitable(answer) else answer

    try:
        async with asyncio.timeout(within):
            while not await now():
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"{what} never came ({within:.0f} s)") from None


@contextmanager
def patience() -> Iterator[None]:
    """Within it the database is waited for, however slowly a loaded machine makes it answer: for what
    is counted, stored or said, not for the deadlines of a person's wait (0.5-0.8 s, past which a reply
    goes on without the database and says so), which have their own tests behind a hung database."""
    from bots import admin, shared_limits
    from bots import core as core_module
    from db.deadline import Deadlines

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(core_module, "DB_DEADLINE_S", HANG_S)
        patched.setattr(shared_limits, "DEADLINE_S", HANG_S)
        patched.setattr(admin, "Deadlines", lambda: Deadlines(HANG_S))
        yield


@contextmanager
def still_minute(now: float) -> Iterator[None]:
    """Within it the cores' rate limiters (in memory and in the database) read a clock that stands at
    `now` (Unix time): every request falls in one minute, however long a loaded machine takes over them
    (a minute that ran out midway would admit more, and the counts would say nothing)."""
    from bots import core as core_module
    from bots.limits import UserLimits
    from bots.shared_limits import SharedLimits

    class Counted(SharedLimits):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, clock=lambda: now, **kw)

    class Local(UserLimits):
        def __init__(self, per_minute: int, **kw: Any) -> None:
            super().__init__(per_minute, lambda: now, **kw)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(core_module, "SharedLimits", Counted)
        patched.setattr(core_module, "UserLimits", Local)
        yield
