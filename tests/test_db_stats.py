"""Admin statistics from known usage rows, identical on both backends."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.stats import DailyCount, StyleSummary, percentile, requests_per_day, style_summary, top_errors
from db.usage import UsageRecord, UsageRecorder

NOW = datetime.now(UTC)
# (style, status, latency ms, age)
ROWS = [
    *[("selfie2anime", "ok", ms, timedelta(hours=1)) for ms in (100, 200, 300, 400, 1000)],
    ("selfie2anime", "bad_input", 3, timedelta(days=1, hours=1)),
    ("selfie2anime", "bad_input", 4, timedelta(days=2, hours=1)),
    ("selfie2anime", "no_face", 90, timedelta(hours=2)),
    ("cat2dog", "ok", 50, timedelta(days=1, hours=1)),
    ("cat2dog", "ok", 150, timedelta(hours=3)),
    ("cat2dog", "error", 7, timedelta(hours=3)),
    ("dog2cat", "overloaded", 1, timedelta(hours=4)),  # a style with no success at all
    ("cat2dog", "error", 9999, timedelta(days=9)),  # outside the window
    ("selfie2anime", "ok", 9999, timedelta(days=9)),
]


@pytest.fixture
async def sessions(db_sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    recorder = UsageRecorder(db_sessions)
    for i, (style, status, ms, age) in enumerate(ROWS):
        recorder.record(UsageRecord("discord", f"u{i}", "c", style, status, ms, created_at=NOW - age))
    await recorder.close()
    return db_sessions


async def test_style_summary(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        summary = await style_summary(session, days=7)
    assert summary == [
        # p95 of 100..400,1000: position 0.95 * 4 = 3.8 -> 400 + 0.8 * 600
        StyleSummary("selfie2anime", 8, 5, 5 / 8, 300.0, pytest.approx(880.0)),
        StyleSummary("cat2dog", 3, 2, 2 / 3, 100.0, pytest.approx(145.0)),
        StyleSummary("dog2cat", 1, 0, 0.0, None, None),
    ]


async def test_requests_per_day(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        daily = await requests_per_day(session, days=7)
    expected = Counter(
        ((NOW - age).date(), style) for style, _, _, age in ROWS if age < timedelta(days=7)
    )
    assert daily == [DailyCount(day, style, n) for (day, style), n in sorted(expected.items())]


async def test_top_errors(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        assert await top_errors(session, days=7) == [
            ("bad_input", 2), ("error", 1), ("no_face", 1), ("overloaded", 1)
        ]
        assert await top_errors(session, days=7, limit=1) == [("bad_input", 2)]
        assert await top_errors(session, days=1) == [("error", 1), ("no_face", 1), ("overloaded", 1)]


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([1.0, 2.0], 0.5) == 1.5
    assert percentile([10.0, 20.0, 30.0, 40.0], 0.95) == pytest.approx(38.5)
