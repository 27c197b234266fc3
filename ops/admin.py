"""What admins can do besides deploys, typed: usage reports and the retraining queue.

The bots' admin commands (their chat side: parsing a command, wording the
reply) and the command lines call these; deploys and rollbacks go through
`ops.deploy.Deployer`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import jobs, stats
from db.models import Platform, TrainingJob
from styles import catalog

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class UsageReport:
    """Requests of the last days: per day and style, per style, and the commonest errors."""

    daily: list[stats.DailyCount]
    styles: list[stats.StyleSummary]
    errors: list[tuple[str, int]]

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.styles)

    @property
    def success_rate(self) -> float:
        return sum(s.ok for s in self.styles) / self.requests if self.requests else 0.0


async def usage_report(sessions: Sessions, *, days: int) -> UsageReport:
    """The usage of the last `days` days."""
    async with sessions() as session:
        return UsageReport(
            await stats.requests_per_day(session, days=days),
            await stats.style_summary(session, days=days),
            await stats.top_errors(session, days=days),
        )


async def queue_retrain(
    sessions: Sessions, *, pair: str, iterations: int, from_version: str | None, deploy: bool, by: str,
    notify_platform: Platform, notify_chat_id: str,
) -> TrainingJob:
    """Queue a job for the training worker; ValueError (worded for the admin) for a bad pair or version."""
    catalog.check_job(pair, from_version)
    async with sessions() as session:
        return await jobs.enqueue(
            session, pair=pair, iterations=iterations, from_version=from_version, requested_by=by,
            notify_platform=notify_platform, notify_chat_id=notify_chat_id, deploy_when_done=deploy,
        )


async def latest_jobs(sessions: Sessions, *, limit: int = 10) -> list[TrainingJob]:
    """The latest jobs, newest first."""
    async with sessions() as session:
        return await jobs.list_jobs(session, limit=limit)


async def cancel_job(sessions: Sessions, *, job_id: int, by: str) -> TrainingJob | None:
    """Cancel a queued job at once, a running one at its next heartbeat; None when there is no such job."""
    async with sessions() as session:
        return await jobs.cancel(session, job_id=job_id, reason=f"cancelled by {by}")
