"""Waiting for a state, not for a time: what tests do instead of sleeping and hoping.

A test that sleeps "long enough" for something to happen fails on a loaded machine, and one that
checks a duration measures the machine. These wait until the thing itself has happened, for as
long as it takes; `HANG_S` only ends a wait for code that will never get there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

HANG_S = 60.0  # far past any answer on a loaded 2-core machine: only a state never reached waits this long


async def until(reached: Callable[[], bool], what: str = "the state waited for") -> None:
    """Return once `reached()` is true (polled between turns of the event loop); fail if it never is."""
    try:
        async with asyncio.timeout(HANG_S):
            while not reached():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"{what} never came ({HANG_S:.0f} s)") from None
