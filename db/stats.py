"""Usage statistics for admins, over the last N days.

Latency percentiles are over successful requests only (a rejected upload
answers in microseconds and would flatter them). PostgreSQL computes them
with `percentile_cont`; SQLite has no percentile function, so the same
linear-interpolation definition is applied in Python.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Usage
from db.types import now_utc, utc_day


@dataclass(frozen=True)
class DailyCount:
    """Requests for one style on one UTC day."""

    day: date
    style: str
    requests: int


@dataclass(frozen=True)
class StyleSummary:
    """How one style did over the period; latencies in ms, None without a success."""

    style: str
    requests: int
    ok: int
    success_rate: float
    p50_ms: float | None
    p95_ms: float | None


def _since(days: int) -> datetime:
    if days < 1:
        raise ValueError("days must be >= 1")
    return now_utc() - timedelta(days=days)


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-quantile with linear interpolation, as PostgreSQL's percentile_cont computes it."""
    position = p * (len(sorted_values) - 1)
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (position - low) * (sorted_values[high] - sorted_values[low])


async def requests_per_day(session: AsyncSession, *, days: int = 7) -> list[DailyCount]:
    """Requests per style per UTC day, oldest day first."""
    day = utc_day(Usage.created_at)
    rows = await session.execute(
        select(day, Usage.style, func.count())
        .where(Usage.created_at >= _since(days))
        .group_by(day, Usage.style)
        .order_by(day, Usage.style)
    )
    return [DailyCount(date.fromisoformat(d), style, n) for d, style, n in rows]


async def _ok_latency_percentiles(
    session: AsyncSession, since: datetime
) -> dict[str, tuple[float, float]]:
    """(p50, p95) of successful requests' latency, per style."""
    ok = (Usage.status == "ok") & (Usage.created_at >= since)
    if session.get_bind().dialect.name == "postgresql":
        rows = await session.execute(
            select(
                Usage.style,
                func.percentile_cont(0.5).within_group(Usage.latency_ms),
                func.percentile_cont(0.95).within_group(Usage.latency_ms),
            )
            .where(ok)
            .group_by(Usage.style)
        )
        return {style: (p50, p95) for style, p50, p95 in rows}
    latencies: dict[str, list[float]] = defaultdict(list)
    for style, ms in await session.execute(
        select(Usage.style, Usage.latency_ms).where(ok).order_by(Usage.style, Usage.latency_ms)
    ):
        latencies[style].append(ms)
    return {style: (percentile(v, 0.5), percentile(v, 0.95)) for style, v in latencies.items()}


async def style_summary(session: AsyncSession, *, days: int = 7) -> list[StyleSummary]:
    """Requests, success rate and latency percentiles per style, busiest first."""
    since = _since(days)
    counts = await session.execute(
        select(Usage.style, func.count(), func.count().filter(Usage.status == "ok"))
        .where(Usage.created_at >= since)
        .group_by(Usage.style)
        .order_by(func.count().desc(), Usage.style)
    )
    percentiles = await _ok_latency_percentiles(session, since)
    return [
        StyleSummary(style, n, ok, ok / n, *percentiles.get(style, (None, None)))
        for style, n, ok in counts
    ]


async def top_errors(session: AsyncSession, *, days: int = 7, limit: int = 5) -> list[tuple[str, int]]:
    """The most frequent non-ok statuses as (status, count), most frequent first."""
    n = func.count()
    rows = await session.execute(
        select(Usage.status, n)
        .where(Usage.status != "ok", Usage.created_at >= _since(days))
        .group_by(Usage.status)
        .order_by(n.desc(), Usage.status)
        .limit(limit)
    )
    return [(status, count) for status, count in rows]
