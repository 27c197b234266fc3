"""`db.deadline.Deadlines`: a caller waits at most the deadline, the work goes on, and asking again
joins it or collects its kept outcome instead of doing it twice. (The hung databases themselves are
in tests/test_admin_deadlines.py.)"""

from __future__ import annotations

import asyncio

import pytest

from db import deadline
from db.deadline import Deadlines, NotAnswering, until_done


class Work:
    """Work that waits for `release`, counting how often it was started."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self) -> int:
        self.started += 1
        await self.release.wait()
        return self.started


async def test_a_caller_gives_up_and_asking_again_joins_the_running_work() -> None:
    deadlines, work = Deadlines(0.05), Work()
    with pytest.raises(NotAnswering):
        await deadlines.run("k", work)
    with pytest.raises(NotAnswering):
        await deadlines.run("k", work)
    assert work.started == 1
    work.release.set()
    assert await deadlines.run("k", work) == 1  # still that work, finished now
    assert await deadlines.run("k", work) == 2  # not kept: a new call does it again


async def test_a_kept_outcome_goes_to_the_next_caller_once() -> None:
    deadlines, work = Deadlines(0.05), Work()
    with pytest.raises(NotAnswering):
        await deadlines.run("k", work, keep=True)
    work.release.set()
    await deadlines.settle(5)
    assert await deadlines.run("k", work, keep=True) == 1  # what the first ask did
    assert await deadlines.run("k", work, keep=True) == 2


async def test_a_kept_outcome_expires_and_a_failure_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    deadlines, work = Deadlines(0.05), Work()
    with pytest.raises(NotAnswering):
        await deadlines.run("k", work, keep=True)
    monkeypatch.setattr(deadline, "KEPT_S", 0.0)
    work.release.set()
    await deadlines.settle(5)
    assert await deadlines.run("k", work, keep=True) == 2  # expired: done again

    async def failing() -> int:
        await asyncio.sleep(0.2)
        raise OSError("connection reset")

    with pytest.raises(NotAnswering):
        await deadlines.run("f", failing, keep=True)
    await deadlines.settle(5)
    assert await deadlines.run("f", work) == 3  # the failure was logged and forgotten


async def test_until_done_retries_while_the_database_is_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadline, "RETRY_MIN_S", 0.01)
    tries = []

    async def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise TimeoutError
        return "written"

    assert await until_done(flaky, what="a test write") == "written" and len(tries) == 3

    async def bad_data() -> None:
        raise ValueError("a value no driver can bind")

    with pytest.raises(ValueError):
        await until_done(bad_data, what="a test write")  # its own data: retrying cannot help
