"""Per-user limits: one photo in flight, N a minute over a sliding window; per group: a share of both."""

from __future__ import annotations

import asyncio

import pytest
from waiting import until

from bots import messages
from bots.limits import WINDOW_S, ChatLimits, Refusal, UserLimits


class Clock:
    """A hand-turned clock, so the window is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_request_in_flight_per_user() -> None:
    limits = UserLimits(per_minute=10, clock=Clock())
    assert limits.try_acquire("ann") is None
    assert limits.try_acquire("ann") is Refusal.BUSY
    assert limits.try_acquire("bob") is None  # others are not held up
    limits.release("ann")
    assert limits.try_acquire("ann") is None


def test_per_minute_allowance_slides() -> None:
    clock = Clock()
    limits = UserLimits(per_minute=3, clock=clock)
    for _ in range(3):
        assert limits.try_acquire("ann") is None
        limits.release("ann")
        clock.now += 1
    assert limits.try_acquire("ann") is Refusal.TOO_MANY
    clock.now += WINDOW_S - 3  # the first request is now a minute old
    assert limits.try_acquire("ann") is None


def test_refusal_does_not_use_up_the_allowance() -> None:
    clock = Clock()
    limits = UserLimits(per_minute=1, clock=clock)
    assert limits.try_acquire("ann") is None
    assert limits.try_acquire("ann") is Refusal.BUSY
    limits.release("ann")
    clock.now += WINDOW_S
    assert limits.try_acquire("ann") is None


def test_quiet_users_are_forgotten() -> None:
    clock = Clock()
    limits = UserLimits(per_minute=5, clock=clock)
    for user in range(100):
        limits.try_acquire(user)
        limits.release(user)
    clock.now += 2 * WINDOW_S
    limits.try_acquire("ann")
    assert len(limits._recent) == 1


def test_retry_after_says_when_the_oldest_request_leaves_the_window() -> None:
    clock = Clock()
    limits = UserLimits(per_minute=2, clock=clock)
    assert limits.try_acquire("ann") is None
    assert limits.retry_after("ann") == 5  # busy: one photo's time
    limits.release("ann")
    clock.now += 10
    assert limits.try_acquire("ann") is None
    limits.release("ann")
    clock.now += 0.5
    assert limits.try_acquire("ann") is Refusal.TOO_MANY
    assert limits.retry_after("ann") == 50  # 60 s after the first, rounded up
    assert limits.retry_after("bob") == 0


def test_a_network_counts_requests_but_is_never_busy() -> None:
    limits = UserLimits(per_minute=2, clock=Clock(), one_at_a_time=False)
    assert limits.try_acquire("10.0.0.1") is None
    assert limits.try_acquire("10.0.0.1") is None  # a second tab while the first draws
    assert limits.try_acquire("10.0.0.1") is Refusal.TOO_MANY


async def test_a_group_draws_its_share_at_once_and_the_rest_wait_their_turn() -> None:
    limits = ChatLimits(per_minute=10, at_once=2, clock=Clock())
    started: list[str] = []
    release = asyncio.Event()
    waited: list[str] = []

    async def draw(chat: str, name: str) -> None:
        async def note() -> None:
            waited.append(name)

        async with limits.share(chat, before_waiting=note) as share:
            assert share.refusal is None
            started.append(name)
            await release.wait()

    tasks = [asyncio.create_task(draw("group", name)) for name in ("a", "b", "c")]
    tasks.append(asyncio.create_task(draw("other group", "d")))
    await until(lambda: len(started) + len(waited) == 4, "each photo started or waiting")
    assert started == ["a", "b", "d"] and waited == ["c"]  # others are not held up
    release.set()
    await asyncio.gather(*tasks)
    assert started == ["a", "b", "d", "c"]
    assert limits._turns == {}  # nobody left: nothing kept


async def test_a_group_has_its_minute_and_a_members_refusal_gives_its_place_back() -> None:
    clock = Clock()
    limits = ChatLimits(per_minute=2, at_once=5, clock=clock)
    async with limits.share("group") as share:
        assert share.refusal is None
        share.answered("busy")  # the member's own limit refused: nothing drawn
    for _ in range(2):
        async with limits.share("group") as share:
            assert share.refusal is None
            share.answered(None)
    async with limits.share("group") as share:
        assert share.refusal == messages.CHAT_SLOW_DOWN.format(limit=2)
    clock.now += WINDOW_S
    async with limits.share("group") as share:
        assert share.refusal is None


async def test_a_turn_is_given_back_when_drawing_fails() -> None:
    limits = ChatLimits(per_minute=10, at_once=1, clock=Clock())
    with pytest.raises(RuntimeError):
        async with limits.share("group"):
            raise RuntimeError("the model fell over")
    async with asyncio.timeout(1), limits.share("group") as share:
        assert share.refusal is None
