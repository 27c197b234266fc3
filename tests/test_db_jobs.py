"""The training job queue: racing workers, a worker that dies, cancellation.

Each worker has its own engine, so workers race on separate connections as
separate processes would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import create_engine, session_factory
from db.jobs import (
    cancel, claim, enqueue, fail, finish, get_job, heartbeat, list_jobs, mark_announced, reclaim_stale, unannounced,
)
from db.models import TrainingJob

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def worker_sessions(db_url: str) -> AsyncIterator[Callable[[], Sessions]]:
    """Makes sessions on a new engine per call: one per worker."""
    engines = []

    def make() -> Sessions:
        engines.append(create_engine(db_url))
        return session_factory(engines[-1])

    yield make
    for engine in engines:
        await engine.dispose()


async def add_job(sessions: Sessions, pair: str = "selfie2anime") -> TrainingJob:
    async with sessions() as session:
        return await enqueue(
            session, pair=pair, iterations=1000, requested_by="telegram:42",
            notify_platform="telegram", notify_chat_id="42", deploy_when_done=True,
        )


async def claim_as(sessions: Sessions, worker_id: str) -> TrainingJob | None:
    async with sessions() as session:
        return await claim(session, worker_id=worker_id)


async def test_two_workers_race_for_one_job(
    db_sessions: Sessions, worker_sessions: Callable[[], Sessions]
) -> None:
    workers = [worker_sessions(), worker_sessions()]
    for round_ in range(5):
        job = await add_job(db_sessions)
        won = await asyncio.gather(*(claim_as(w, f"w{i}") for i, w in enumerate(workers)))
        winners = [j for j in won if j is not None]
        assert len(winners) == 1, f"round {round_}: {won}"
        assert winners[0].id == job.id
        assert winners[0].status == "running" and winners[0].started_at is not None


async def test_racing_workers_share_a_queue_without_double_claims(
    db_sessions: Sessions, worker_sessions: Callable[[], Sessions]
) -> None:
    ids = {(await add_job(db_sessions, pair=f"pair{i}")).id for i in range(8)}

    async def drain(sessions: Sessions, name: str) -> list[int]:
        got = []
        while (job := await claim_as(sessions, name)) is not None:
            got.append(job.id)
        return got

    claimed = await asyncio.gather(*(drain(worker_sessions(), f"w{i}") for i in range(3)))
    flat = [job_id for got in claimed for job_id in got]
    assert sorted(flat) == sorted(ids)  # every job once, none twice
    for got in claimed:
        assert got == sorted(got)  # oldest first


async def test_claim_skips_a_job_locked_by_another_transaction(postgres_db_url: str) -> None:
    engine = create_engine(postgres_db_url)
    sessions = session_factory(engine)
    try:
        first, second = await add_job(sessions), await add_job(sessions)
        async with engine.connect() as other:  # e.g. a worker mid-claim
            lock = text("SELECT id FROM training_jobs WHERE id = :id FOR UPDATE")
            await other.execute(lock, {"id": first.id})
            job = await asyncio.wait_for(claim_as(sessions, "w1"), 5)  # does not wait for the lock
            assert job is not None and job.id == second.id
            assert await asyncio.wait_for(claim_as(sessions, "w2"), 5) is None
            await other.rollback()
        job = await claim_as(sessions, "w2")
        assert job is not None and job.id == first.id
    finally:
        await engine.dispose()


async def test_a_dead_workers_job_is_reclaimed_by_another(
    db_sessions: Sessions, worker_sessions: Callable[[], Sessions]
) -> None:
    job = await add_job(db_sessions)
    dead, alive = worker_sessions(), worker_sessions()
    assert (await claim_as(dead, "dead")).id == job.id
    async with dead() as session:
        assert await heartbeat(session, job_id=job.id, worker_id="dead", progress=300)
    # "dead" stops heartbeating: a fresh heartbeat is not stale, an old one is
    async with db_sessions() as session:
        assert await reclaim_stale(session, older_than=timedelta(hours=1)) == []
    await asyncio.sleep(0.3)
    async with db_sessions() as session:
        assert await reclaim_stale(session, older_than=timedelta(milliseconds=200)) == [job.id]
        requeued = await get_job(session, job_id=job.id)
    assert (requeued.status, requeued.worker_id, requeued.progress) == ("queued", None, 300)

    taken = await claim_as(alive, "alive")
    assert taken is not None and taken.id == job.id and taken.worker_id == "alive"
    async with dead() as session:  # the old worker wakes up: the job is no longer its own
        assert not await heartbeat(session, job_id=job.id, worker_id="dead", progress=301)
        assert not await finish(session, job_id=job.id, worker_id="dead", result={})
    async with alive() as session:
        assert await heartbeat(session, job_id=job.id, worker_id="alive", progress=1000)
        result = {"versions": {"selfie2anime": "2.0", "anime2selfie": "2.0"}, "grid": "runs/x/grid.png"}
        assert await finish(session, job_id=job.id, worker_id="alive", result=result)
    async with db_sessions() as session:
        done = await get_job(session, job_id=job.id)
    assert (done.status, done.progress, done.result) == ("done", 1000, result)
    assert done.finished_at is not None and done.finished_at >= done.started_at


async def test_cancel_queued_running_and_finished_jobs(db_sessions: Sessions) -> None:
    queued, running, failed = [await add_job(db_sessions) for _ in range(3)]
    async with db_sessions() as session:
        cancelled = await cancel(session, job_id=queued.id, reason="wrong pair")
        assert (cancelled.status, cancelled.error) == ("cancelled", "wrong pair")
        assert (await claim(session, worker_id="w")).id == running.id  # the cancelled one is skipped
        assert (await claim(session, worker_id="w2")).id == failed.id
        assert await fail(session, job_id=failed.id, worker_id="w2", error="CUDA out of memory")

        flagged = await cancel(session, job_id=running.id)
        assert (flagged.status, flagged.cancel_requested) == ("running", True)
        # the worker learns at its next report, and the job is closed
        assert not await heartbeat(session, job_id=running.id, worker_id="w", progress=10)
        closed = await get_job(session, job_id=running.id)
        assert closed.status == "cancelled" and closed.finished_at is not None

        assert (await cancel(session, job_id=failed.id)).status == "failed"
        assert (await get_job(session, job_id=failed.id)).error == "CUDA out of memory"
        assert await cancel(session, job_id=10_000) is None
        assert await claim(session, worker_id="w3") is None

        assert [j.id for j in await list_jobs(session)] == [failed.id, running.id, queued.id]
        assert [j.id for j in await list_jobs(session, status="cancelled")] == [running.id, queued.id]


async def test_a_dead_worker_with_a_cancelled_job_closes_it(db_sessions: Sessions) -> None:
    job = await add_job(db_sessions)
    async with db_sessions() as session:
        await claim(session, worker_id="dead")
        await cancel(session, job_id=job.id)
    await asyncio.sleep(0.05)
    async with db_sessions() as session:
        assert await reclaim_stale(session, older_than=timedelta(milliseconds=10)) == [job.id]
        assert (await get_job(session, job_id=job.id)).status == "cancelled"
        assert await session.scalar(select(TrainingJob.worker_id)) is None


async def test_ended_jobs_are_announced_once_oldest_first(db_sessions: Sessions) -> None:
    done, failed, other = [await add_job(db_sessions) for _ in range(3)]
    for job in (done, failed, other):
        claimed = await claim_as(db_sessions, "w")
        assert claimed is not None and claimed.id == job.id
        async with db_sessions() as session:
            if job is failed:
                assert await fail(session, job_id=job.id, worker_id="w", error="out of memory")
            else:
                assert await finish(session, job_id=job.id, worker_id="w", result={"versions": {}})
    await add_job(db_sessions)  # still queued: nothing to announce
    async with db_sessions() as session:
        await session.execute(text("UPDATE training_jobs SET notify_platform = 'discord' WHERE id = :id"),
                              {"id": other.id})
        await session.commit()
        pending = await unannounced(session, platform="telegram")
    assert [job.id for job in pending] == [done.id, failed.id]  # not the queued one, nor another platform's
    async with db_sessions() as session:
        await mark_announced(session, job=pending[0])
        assert [job.id for job in await unannounced(session, platform="telegram")] == [failed.id]
        refreshed = await get_job(session, job_id=done.id)
    assert refreshed is not None and refreshed.result == {"versions": {}, "announced": True}
