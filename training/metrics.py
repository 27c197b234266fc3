"""The training worker's Prometheus metrics and probes (METRICS_PORT): jobs by outcome, iterations, the job running.

Ready means the database answers: the queue lives there, so a worker that cannot
reach it can take no job.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from db.engine import answers
from telemetry import probes

JOBS = Counter("toonbot_training_jobs", "Training jobs this worker ended, by outcome (done, failed, stopped)",
               ["outcome"])
ITERATIONS = Counter("toonbot_training_iterations", "Training iterations this worker ran")
RUNNING = Gauge("toonbot_training_job_running", "1 while this worker runs a job")
DATABASE_DEADLINE_S = 1.0


async def serve_probes(settings: Settings, sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event) -> None:
    """/metrics, /healthz and /readyz on METRICS_HOST:METRICS_PORT until `stop` (nothing when the port is unset)."""
    if settings.metrics_port is None:
        return
    database = probes.Patient(lambda: answers(sessions), DATABASE_DEADLINE_S)

    async def ready() -> dict[str, bool]:
        return {"database": await database()}

    await probes.serve(settings.metrics_host, settings.metrics_port, ready, stop)
