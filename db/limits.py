"""Rate limits that every replica shares: a minute's requests per key, and one turn at a time per key.

Each call is one short transaction the caller commits. Counting is atomic per
key: PostgreSQL takes a transaction-scoped advisory lock on the key first (so
two replicas cannot both take the last place), SQLite serialises writers anyway.
Times are Unix seconds from the replicas' clocks (keep them in sync, e.g. NTP).
"""

from __future__ import annotations

from sqlalchemy import delete, func, literal, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import LimitHit, LimitTurn

HITS, TURNS = LimitHit.__table__, LimitTurn.__table__


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def relax(session: AsyncSession) -> None:
    """Start a limits transaction: on PostgreSQL its commit does not wait for the disk (a count lost in a
    crash costs nothing; each photo would otherwise wait for an fsync, twice)."""
    if _postgres(session):
        await session.execute(text("SET LOCAL synchronous_commit TO OFF"))


async def take_turn(session: AsyncSession, *, key: str, holder: str, now: float, stale_before: float) -> bool:
    """Hold `key`'s one turn for `holder`; False while another holds it (unless held since before
    `stale_before`: its holder died, and the turn is taken over)."""
    insert = postgresql.insert if _postgres(session) else sqlite.insert
    statement = insert(LimitTurn).values(key=key, holder=holder, since=now).on_conflict_do_update(
        index_elements=[TURNS.c.key], set_={"holder": holder, "since": now}, where=TURNS.c.since < stale_before
    )
    return (await session.execute(statement)).rowcount == 1


async def end_turn(session: AsyncSession, *, key: str, holder: str) -> None:
    """Give `key`'s turn back, if `holder` still holds it."""
    await session.execute(delete(LimitTurn).where(TURNS.c.key == key, TURNS.c.holder == holder))


async def count_hit(session: AsyncSession, *, key: str, now: float, since: float, limit: int) -> bool:
    """Count one request for `key` at `now` if fewer than `limit` were counted after `since`; False when full."""
    if _postgres(session):  # held until commit: the count and the insert below cannot interleave with another's
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))
    await session.execute(delete(LimitHit).where(HITS.c.key == key, HITS.c.at <= since))
    recent = select(func.count()).select_from(HITS).where(HITS.c.key == key, HITS.c.at > since).scalar_subquery()
    counted = select(literal(key), literal(now)).where(recent < limit)
    return (await session.execute(HITS.insert().from_select(["key", "at"], counted))).rowcount == 1


async def oldest_hit(session: AsyncSession, *, key: str, since: float) -> float | None:
    """When the oldest request of `key` counted after `since` came (None: none was)."""
    return await session.scalar(select(func.min(HITS.c.at)).where(HITS.c.key == key, HITS.c.at > since))


async def take_back_hit(session: AsyncSession, *, key: str) -> None:
    """Uncount `key`'s latest request (it drew nothing)."""
    latest = select(func.max(HITS.c.id)).where(HITS.c.key == key).scalar_subquery()
    await session.execute(delete(LimitHit).where(HITS.c.id == latest))


async def sweep(session: AsyncSession, *, before: float) -> int:
    """Delete every request counted before `before` (keys nobody used since); how many."""
    return (await session.execute(delete(LimitHit).where(HITS.c.at < before))).rowcount
