"""The training job queue, shared by bots (who enqueue) and training workers (who claim).

A job goes queued -> running -> done | failed | cancelled. Each transition is
one conditional UPDATE, so two workers can never both own a job: on
PostgreSQL the claim picks its row with `FOR UPDATE SKIP LOCKED` (racing
workers take different jobs instead of queueing behind one lock); SQLite
ignores that clause but runs the whole statement under its single writer lock.
A worker proves it is alive with `heartbeat`; `reclaim_stale` puts the job of
a worker that stopped heartbeating back in the queue.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import case, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import JobStatus, Platform, TrainingJob
from db.types import UTCDateTime, now_utc


async def enqueue(
    session: AsyncSession,
    *,
    pair: str,
    iterations: int,
    requested_by: str,
    notify_platform: Platform,
    notify_chat_id: str,
    from_version: str | None = None,
    deploy_when_done: bool = False,
) -> TrainingJob:
    """Queue a training run of `pair` (e.g. "selfie2anime"); its requester is told the outcome."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    job = TrainingJob(
        pair=pair,
        iterations=iterations,
        requested_by=requested_by,
        notify_platform=notify_platform,
        notify_chat_id=notify_chat_id,
        from_version=from_version,
        deploy_when_done=deploy_when_done,
    )
    session.add(job)
    await session.commit()
    return job


async def get_job(session: AsyncSession, *, job_id: int) -> TrainingJob | None:
    """The job as the database has it now."""
    return await session.get(TrainingJob, job_id, populate_existing=True)


async def list_jobs(
    session: AsyncSession, *, status: JobStatus | None = None, limit: int = 20
) -> list[TrainingJob]:
    """Jobs, latest first, optionally only those with one status."""
    query = select(TrainingJob).order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc()).limit(limit)
    if status is not None:
        query = query.where(TrainingJob.status == status)
    return list(await session.scalars(query.execution_options(populate_existing=True)))


async def unannounced(session: AsyncSession, *, platform: Platform, limit: int = 50) -> list[TrainingJob]:
    """Ended jobs whose requester on `platform` has not been told yet, oldest first
    (among the `limit` latest ended ones)."""
    query = (
        select(TrainingJob)
        .where(TrainingJob.notify_platform == platform, TrainingJob.status.in_(("done", "failed", "cancelled")))
        .order_by(TrainingJob.finished_at.desc(), TrainingJob.id.desc())
        .limit(limit)
    )
    ended = await session.scalars(query)
    return [job for job in reversed(list(ended)) if not (job.result or {}).get("announced")]


async def mark_announced(session: AsyncSession, *, job: TrainingJob) -> None:
    """Record in the job's result that its requester was told, so no front end tells them twice."""
    await session.execute(
        update(TrainingJob).where(TrainingJob.id == job.id).values(result={**(job.result or {}), "announced": True})
    )
    await session.commit()


def describe(job: TrainingJob) -> str:
    """One line per job, the same in chat (/jobs) and on the command line."""
    line = f"#{job.id} {job.pair} {job.status} {job.progress}/{job.iterations}"
    if job.from_version:
        line += f" from {job.from_version}"
    if job.result and job.result.get("versions"):
        line += " -> " + ", ".join(f"{s} {v}" for s, v in job.result["versions"].items())
    if job.error:
        line += f" ({job.error})"
    return line


async def claim(session: AsyncSession, *, worker_id: str) -> TrainingJob | None:
    """Take the oldest queued job for `worker_id`, or None if there is none to take."""
    oldest_queued = (
        select(TrainingJob.id)
        .where(TrainingJob.status == "queued")
        .order_by(TrainingJob.created_at, TrainingJob.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    now = now_utc()
    claimed = await session.scalars(
        update(TrainingJob)
        .where(TrainingJob.id == oldest_queued, TrainingJob.status == "queued")
        .values(status="running", worker_id=worker_id, started_at=now, heartbeat_at=now)
        .returning(TrainingJob)
        .execution_options(populate_existing=True)
    )
    job = claimed.one_or_none()
    await session.commit()
    return job


async def heartbeat(
    session: AsyncSession, *, job_id: int, worker_id: str, progress: int | None = None
) -> bool:
    """Report that the worker is alive (and how many iterations are done).

    Returns False when the worker must stop: the job was cancelled (it is
    now marked so), or it is no longer this worker's (reclaimed, finished).
    """
    now = now_utc()
    values: dict[str, Any] = {
        "heartbeat_at": now,
        "status": case((TrainingJob.cancel_requested, "cancelled"), else_="running"),
        "finished_at": case(
            (TrainingJob.cancel_requested, literal(now, UTCDateTime())), else_=TrainingJob.finished_at
        ),
    }
    if progress is not None:
        values["progress"] = progress
    status = await session.scalar(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.worker_id == worker_id, TrainingJob.status == "running")
        .values(values)
        .returning(TrainingJob.status)
    )
    await session.commit()
    return status == "running"


async def _end(session: AsyncSession, job_id: int, worker_id: str, **values: Any) -> bool:
    """Move the worker's running job to a final state; False if it is not its running job."""
    ended = await session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.worker_id == worker_id, TrainingJob.status == "running")
        .values(finished_at=now_utc(), **values)
        .returning(TrainingJob.id)
    )
    ours = ended.first() is not None
    await session.commit()
    return ours


async def finish(session: AsyncSession, *, job_id: int, worker_id: str, result: dict[str, Any]) -> bool:
    """Mark the job done with its result (exported versions, sample grid path)."""
    return await _end(session, job_id, worker_id, status="done", result=result)


async def fail(session: AsyncSession, *, job_id: int, worker_id: str, error: str) -> bool:
    """Mark the job failed, saying why."""
    return await _end(session, job_id, worker_id, status="failed", error=error)


async def cancel(
    session: AsyncSession, *, job_id: int, reason: str = "cancelled by an admin"
) -> TrainingJob | None:
    """Cancel a job: a queued one at once; a running one is flagged, and its worker
    stops (and marks it cancelled) at its next heartbeat. Finished jobs are left as
    they are. Returns the job as it is now, or None if there is no such job.
    """
    now = now_utc()
    await session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now, error=reason)
    )
    await session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == "running")
        .values(cancel_requested=True, error=reason)
    )
    await session.commit()
    return await get_job(session, job_id=job_id)


async def reclaim_stale(session: AsyncSession, *, older_than: timedelta) -> list[int]:
    """Requeue running jobs whose worker has not heartbeaten for `older_than`
    (a cancelled one is closed instead). Returns the ids of the jobs touched.
    """
    now = now_utc()
    reclaimed = await session.scalars(
        update(TrainingJob)
        .where(TrainingJob.status == "running", TrainingJob.heartbeat_at < now - older_than)
        .values(
            status=case((TrainingJob.cancel_requested, "cancelled"), else_="queued"),
            finished_at=case((TrainingJob.cancel_requested, literal(now, UTCDateTime())), else_=None),
            worker_id=None,
            heartbeat_at=None,
        )
        .returning(TrainingJob.id)
    )
    ids = list(reclaimed)
    await session.commit()
    return ids
