"""Per-user fairness: one photo at a time and at most N a minute."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from enum import Enum

WINDOW_S = 60.0
BUSY_RETRY_S = 5  # a photo takes seconds: ask again after about one


class Refusal(Enum):
    """Why a user's request may not start now."""

    BUSY = "busy"  # their previous photo is still being drawn
    TOO_MANY = "too_many"  # over the per-minute allowance


class UserLimits:
    """In memory, per process: a restart forgives everyone, which is fine for a courtesy limit."""

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, *, one_at_a_time: bool = True
    ) -> None:
        self._per_minute = per_minute
        self._one_at_a_time = one_at_a_time  # False: count requests only (several browsers share an IP)
        self._clock = clock
        self._in_flight: set[Hashable] = set()
        self._recent: dict[Hashable, deque[float]] = {}
        self._last_sweep = clock()

    @property
    def per_minute(self) -> int:
        """The allowance: requests per minute."""
        return self._per_minute

    def try_acquire(self, user: Hashable) -> Refusal | None:
        """Admit `user` (`release` must follow) or say why not."""
        if user in self._in_flight:
            return Refusal.BUSY
        now = self._clock()
        self._sweep(now)
        recent = self._recent.setdefault(user, deque())
        while recent and now - recent[0] >= WINDOW_S:
            recent.popleft()
        if len(recent) >= self._per_minute:
            return Refusal.TOO_MANY
        recent.append(now)
        if self._one_at_a_time:
            self._in_flight.add(user)
        return None

    def retry_after(self, user: Hashable) -> int:
        """Whole seconds until `user` may be admitted again (for HTTP's Retry-After)."""
        if user in self._in_flight:
            return BUSY_RETRY_S
        recent = self._recent.get(user)
        if not recent or len(recent) < self._per_minute:
            return 0
        return max(1, math.ceil(WINDOW_S - (self._clock() - recent[0])))

    def release(self, user: Hashable) -> None:
        """End the user's request in flight."""
        self._in_flight.discard(user)

    def _sweep(self, now: float) -> None:
        """Once a minute, forget users with nothing recent so the table does not grow forever."""
        if now - self._last_sweep < WINDOW_S:
            return
        self._last_sweep = now
        stale = [u for u, r in self._recent.items() if not r or now - r[-1] >= WINDOW_S]
        for user in stale:
            del self._recent[user]
