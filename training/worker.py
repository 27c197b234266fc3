"""`python -m training worker`: claim queued training jobs and run them, one at a time.

A job trains in chunks of `--heartbeat-every` iterations; after each the
worker saves a checkpoint and heartbeats its progress into the job's row.
A heartbeat that comes back False means the job was cancelled (or handed to
another worker after this one looked dead): the worker stops there. A job
reclaimed from a dead worker resumes from the last chunk's checkpoint, since
the run folder is named after the job. Deployment is left to `/deploy`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import get_settings
from db import jobs
from db.engine import create_engine, session_factory
from db.models import TrainingJob
from styles.archive import find
from training import distributed, evaluate, metrics, retrain
from training.judge_net import JUDGES
from training.queue_cli import add_database_argument, database_url
from training.trainer import Trainer

log = logging.getLogger(__name__)

SAMPLES = "samples_latest.png"  # the final sample grid, in the run folder


@dataclass(frozen=True)
class WorkerConfig:
    """Where a worker finds data and puts runs and archives."""

    datasets: Path
    model_store: Path
    runs_dir: Path = Path("runs")
    heartbeat_every: int = 25  # iterations between heartbeats (and checkpoints)
    stale_after_s: float = 600.0  # a running job silent this long lost its worker; keep above a chunk's time
    threads: int = 0
    judges: Path = JUDGES  # each pair's judge, for the evaluation of what a job exports
    train_missing_judges: bool = False  # the command line's worker trains a pair's judge when it has none
    worker_id: str = f"{socket.gethostname()}:{os.getpid()}"


class TrainingWorker:
    """Claims jobs from the queue and runs them with the trainer."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], config: WorkerConfig) -> None:
        self._sessions = sessions
        self.config = config

    async def run_once(self) -> int | None:
        """Claim the oldest queued job and run it to its end; its id, or None if the queue was empty."""
        async with self._sessions() as session:
            stale = timedelta(seconds=self.config.stale_after_s)
            if reclaimed := await jobs.reclaim_stale(session, older_than=stale):
                log.warning("requeued jobs %s: their workers stopped heartbeating", reclaimed)
            job = await jobs.claim(session, worker_id=self.config.worker_id)
        if job is None:
            return None
        log.info("job %d: training %s for %d iterations", job.id, job.pair, job.iterations)
        metrics.RUNNING.set(1)
        try:
            metrics.JOBS.labels(await self._run(job)).inc()
        except retrain.JobError as error:
            await self._fail(job, str(error))
        except Exception as error:  # the job fails, the worker lives on for the next one
            log.exception("job %d failed", job.id)
            await self._fail(job, f"{type(error).__name__}: {error}"[:500])
        finally:
            metrics.RUNNING.set(0)
        return job.id

    async def serve(self, *, poll_s: float = 5.0, exit_when_idle: bool = False) -> None:
        """Run jobs as they come; with `exit_when_idle`, return once the queue is empty."""
        while True:
            if await self.run_once() is None:
                if exit_when_idle:
                    return
                await asyncio.sleep(poll_s)

    async def _run(self, job: TrainingJob) -> str:
        """Train, export and evaluate `job`: "done", or "stopped" when it was cancelled or reclaimed."""
        cfg = self.config
        plan = retrain.plan(
            pair=job.pair, iterations=job.iterations, from_version=job.from_version, datasets=cfg.datasets,
            model_store=cfg.model_store, runs_dir=cfg.runs_dir, run_name=f"job-{job.id}", chunk=cfg.heartbeat_every,
        )
        trainer = await asyncio.to_thread(self._trainer, plan)
        while trainer.step < job.iterations:
            before = trainer.step
            await asyncio.to_thread(trainer.fit, stop_after=cfg.heartbeat_every)
            metrics.ITERATIONS.inc(trainer.step - before)
            async with self._sessions() as session:
                alive = await jobs.heartbeat(
                    session, job_id=job.id, worker_id=cfg.worker_id, progress=trainer.step
                )
            if not alive:
                log.info("job %d: stopped at iteration %d (cancelled or reclaimed)", job.id, trainer.step)
                return "stopped"
        versions = await asyncio.to_thread(retrain.export_versions, trainer, plan, cfg.model_store)
        result = {
            "versions": versions,
            "quality": await asyncio.to_thread(self._evaluate, versions),
            "samples": str((trainer.run_dir / SAMPLES).resolve()),
            "run_dir": str(trainer.run_dir.resolve()),
        }
        async with self._sessions() as session:
            await jobs.finish(session, job_id=job.id, worker_id=cfg.worker_id, result=result)
        log.info("job %d: done, exported %s", job.id, versions)
        return "done"

    def _trainer(self, plan: retrain.Plan) -> Trainer:
        """A new trainer, resumed from the job's own checkpoint if an earlier worker left one."""
        trainer = Trainer(plan.options, distributed.setup(self.config.threads))
        if trainer.checkpoint_path.exists():
            trainer.load(trainer.checkpoint_path)
            log.info("resuming %s at iteration %d", trainer.run_dir, trainer.step)
        elif plan.init:
            retrain.start_from_archives(trainer, plan)
        return trainer

    def _evaluate(self, versions: dict[str, str]) -> dict[str, str]:
        """Measure each exported archive on its pair's test split (quality.json; a pair without a judge gets
        one trained first), so the deploy can compare it with the live version; {style: summary or why not}."""
        said = {}
        for style, version in versions.items():
            archive = find(self.config.model_store, style, version)
            try:
                if self.config.train_missing_judges:
                    evaluate.ensure_judge(style, self.config.datasets, self.config.judges)
                quality = evaluate.evaluate_archive(archive.path, self.config.datasets, judges=self.config.judges)
                said[style] = quality.summary()
            except (AttributeError, OSError, ValueError) as error:  # AttributeError: no such archive
                log.warning("%s %s not measured: %s", style, version, error)
                said[style] = f"not measured: {error}"
        return said

    async def _fail(self, job: TrainingJob, reason: str) -> None:
        log.warning("job %d failed: %s", job.id, reason)
        metrics.JOBS.labels("failed").inc()
        async with self._sessions() as session:
            await jobs.fail(session, job_id=job.id, worker_id=self.config.worker_id, error=reason)


async def _serve(args: argparse.Namespace) -> int:
    engine = create_engine(database_url(args))
    config = WorkerConfig(
        datasets=args.datasets, model_store=args.model_store or get_settings().model_store, runs_dir=args.runs_dir,
        heartbeat_every=args.heartbeat_every, stale_after_s=args.stale_after, threads=args.threads,
        train_missing_judges=True, judges=args.judges,
        **({"worker_id": args.worker_id} if args.worker_id else {}),
    )
    sessions, stop = session_factory(engine), asyncio.Event()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(metrics.serve_probes(get_settings(), sessions, stop), name="probes")
            try:
                await TrainingWorker(sessions, config).serve(poll_s=args.poll, exit_when_idle=args.exit_when_idle)
            finally:
                stop.set()
    finally:
        await engine.dispose()
    return 0


def run(args: argparse.Namespace) -> int:
    """Serve the queue until interrupted (or idle, with --exit-when-idle)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args.datasets = args.datasets or get_settings().datasets_dir
    if args.datasets is None:
        raise SystemExit("the worker needs --datasets DIR or DATASETS_DIR (folders DIR/<pair>/trainA ...)")
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:  # a running job stays "running" until reclaim_stale requeues it
        return 130


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `worker`."""
    p = sub.add_parser("worker", help="run queued training jobs (/retrain)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_database_argument(p)
    p.add_argument("--datasets", type=Path, default=None,
                   help="dataset root holding <pair>/trainA ... (default: $DATASETS_DIR)")
    p.add_argument("--model-store", type=Path, default=None,
                   help="default: $MODEL_STORE, else model_store/ in the repository")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--judges", type=Path, default=JUDGES,
                   help="the pairs' domain judges; one missing is trained into this folder (default %(default)s)")
    p.add_argument("--heartbeat-every", type=int, default=WorkerConfig.heartbeat_every,
                   help="iterations between heartbeats and checkpoints (default %(default)s)")
    p.add_argument("--stale-after", type=float, default=WorkerConfig.stale_after_s,
                   help="requeue running jobs whose worker is silent this many seconds (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core)")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between looks at an empty queue")
    p.add_argument("--exit-when-idle", action="store_true", help="stop once the queue is empty")
    p.add_argument("--worker-id", default=None, help="default: HOST:PID")
    p.set_defaults(func=run)
