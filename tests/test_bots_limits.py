"""Per-user limits: one photo in flight, N a minute over a sliding window."""

from __future__ import annotations

from bots.limits import WINDOW_S, Refusal, UserLimits


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
