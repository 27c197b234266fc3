"""Fairness: per user, one photo at a time and at most N a minute; per group chat, a share of the model."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from bots import messages

WINDOW_S = 60.0
BUSY_RETRY_S = 5  # a photo takes seconds: ask again after about one


class Refusal(Enum):
    """Why a user's request may not start now."""

    BUSY = "busy"  # their previous photo is still being drawn
    TOO_MANY = "too_many"  # over the per-minute allowance


class Limits(Protocol):
    """A minute's allowance per key, maybe one at a time: `UserLimits` in memory, or `bots.shared_limits`
    in the database, which every replica shares."""

    @property
    def per_minute(self) -> int:
        """The allowance: requests per minute."""

    async def admit(self, key: Hashable, *, until: float | None = None) -> tuple[Refusal | None, int]:
        """(None, 0) when `key` may start now (`end` must follow), else (why not, whole seconds to wait);
        decided by `until` (`time.monotonic()`) where a store may be slow."""

    async def end(self, key: Hashable) -> None:
        """End `key`'s request in flight (again is harmless)."""

    async def take_back(self, key: Hashable) -> None:
        """Uncount `key`'s latest admitted request (it drew nothing)."""


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

    async def admit(self, user: Hashable, *, until: float | None = None) -> tuple[Refusal | None, int]:
        """`try_acquire` and, when refused, `retry_after` (`Limits`)."""
        refusal = self.try_acquire(user)
        return refusal, 0 if refusal is None else self.retry_after(user)

    async def end(self, user: Hashable) -> None:
        """`release` (`Limits`)."""
        self.release(user)

    async def take_back(self, user: Hashable) -> None:
        """`refund` (`Limits`)."""
        self.refund(user)

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

    def refund(self, user: Hashable) -> None:
        """Take back the user's latest admitted request from the minute's count (it drew nothing)."""
        recent = self._recent.get(user)
        if recent:
            recent.pop()

    def _sweep(self, now: float) -> None:
        """Once a minute, forget users with nothing recent so the table does not grow forever."""
        if now - self._last_sweep < WINDOW_S:
            return
        self._last_sweep = now
        stale = [u for u, r in self._recent.items() if not r or now - r[-1] >= WINDOW_S]
        for user in stale:
            del self._recent[user]


@dataclass
class Share:
    """One photo's turn in its group's share (`ChatLimits.share`)."""

    refusal: str | None  # words for the member when the group is over its minute: no turn was given
    drew: bool = True

    def answered(self, problem: str | None) -> None:
        """The core's answer came: if the member's own limits refused it, it drew nothing, and
        the group gets its place in the minute back (one member's refused burst costs it nothing)."""
        self.drew = problem not in ("busy", "too_many")


class ChatLimits:
    """Per group chat (a Telegram group, a Discord server), beside each member's own limits: at most
    `per_minute` of its photos a minute, and `at_once` drawn at a time while the rest wait in the
    group's own line, so however busy one group is, the other model slots stay free for everyone else.

    The minute is kept in memory, per process, like `UserLimits`, unless `minute` keeps it elsewhere (the
    database: replicas share it); the turns and the line are this process's own (its model slots).
    """

    def __init__(
        self, per_minute: int, at_once: int, clock: Callable[[], float] = time.monotonic, *,
        minute: Limits | None = None,
    ) -> None:
        self._minute: Limits = minute or UserLimits(per_minute, clock, one_at_a_time=False)
        self._at_once = at_once
        self._turns: dict[Hashable, asyncio.Semaphore] = {}
        self._waiting: Counter[Hashable] = Counter()  # photos drawing or in line, per chat

    @property
    def per_minute(self) -> int:
        """A chat's photos a minute (the front ends word `Share.refusal` in the member's language with it)."""
        return self._minute.per_minute

    @asynccontextmanager
    async def share(
        self, chat: Hashable, *, before_waiting: Callable[[], Awaitable[object]] | None = None
    ) -> AsyncIterator[Share]:
        """Within `chat`'s minute, hold one of its turns while the block draws: in line for one when
        all are taken (`before_waiting` runs first, e.g. to say "thinking..."). Over the minute:
        `Share.refusal` says so, and the block must not draw."""
        if (await self._minute.admit(chat))[0] is not None:
            yield Share(messages.CHAT_SLOW_DOWN.format(limit=self._minute.per_minute))
            return
        share = Share(None)
        turns = self._turns.setdefault(chat, asyncio.Semaphore(self._at_once))
        self._waiting[chat] += 1
        try:
            if turns.locked() and before_waiting is not None:
                await before_waiting()
            async with turns:
                yield share
        finally:
            self._waiting[chat] -= 1
            if not self._waiting[chat]:  # nobody left: forget the chat
                del self._waiting[chat], self._turns[chat]
            if not share.drew:
                await self._minute.take_back(chat)
