"""Finished training jobs, each handed once to the front end of its platform.

A job is announced once: its `result` gets `"announced": true` after the
front end's `send` returned. A finished job that asked for it (`/retrain ...
deploy`) is deployed here, by the process that holds the runtime (the
embedded engine lives in the bots' process, not in the training worker's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import jobs
from db.models import Platform, TrainingJob
from ops.deploy import Deployer, Outcome, scores
from ops.strip import strip
from styles.archive import find
from styles.quality import read_quality

logger = logging.getLogger(__name__)

POLL_S = 5.0


@dataclass(frozen=True)
class Finished:
    """A job that ended, as its requester is told: what it exported, what was deployed, its last samples."""

    job: TrainingJob
    versions: dict[str, str]  # style -> version exported; empty unless it trained to the end
    deployments: list[Outcome]  # one per version, when the job asked to be deployed
    samples: bytes | None  # the final sample grid (PNG)
    scores: list[str] = field(default_factory=list)  # per style: its figures against the live version's
    strip: bytes | None = None  # per style, its preview picture: before | live version | new version (JPEG)

    @property
    def done(self) -> bool:
        return self.job.status == "done" and self.job.result is not None


Send = Callable[[str, Finished], Awaitable[None]]  # (chat id, the finished job)


class JobAnnouncer:
    """Polls for finished jobs to announce on one platform."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], deployer: Deployer, platform: Platform, send: Send,
        *, poll_s: float = POLL_S,
    ) -> None:
        self._sessions = sessions
        self._deployer = deployer
        self._platform = platform
        self._send = send
        self._poll_s = poll_s

    async def run(self) -> None:
        """Announce until cancelled; a failed round is logged and retried."""
        while True:
            try:
                await self.announce_once()
            except Exception:  # the database or the platform is down: try again next round
                logger.exception("announcing finished jobs failed")
            await asyncio.sleep(self._poll_s)

    async def announce_once(self) -> int:
        """Send every finished, unannounced job to its requester's chat; how many were announced."""
        async with self._sessions() as session:
            pending = await jobs.unannounced(session, platform=self._platform)
        for job in pending:
            await self._send(job.notify_chat_id, await self._finished(job))
            async with self._sessions() as session:
                await jobs.mark_announced(session, job=job)
        return len(pending)

    async def _finished(self, job: TrainingJob) -> Finished:
        """The job's outcome, deployed first when it asked to be."""
        if job.status != "done" or job.result is None:
            return Finished(job, {}, [], None)
        exported: dict[str, str] = job.result.get("versions", {})
        scores, strip = await self._against_live(exported)  # before a deploy changes what is live
        deployments = []
        if job.deploy_when_done:
            deployments = [await self._deployer.deploy(s, v, by=job.requested_by) for s, v in exported.items()]
        samples = Path(job.result.get("samples", ""))
        image = await asyncio.to_thread(samples.read_bytes) if samples.is_file() else None
        return Finished(job, exported, deployments, image, scores, strip)

    async def _against_live(self, exported: dict[str, str]) -> tuple[list[str], bytes | None]:
        """Each exported version's scores beside the live version's, and the preview strip of both."""
        found = await self._deployer.management.versions()
        live = {s.style: s.default for s in found if s.default is not None}  # replicas that differ: none to compare
        store = self._deployer.model_store
        lines, rows = [], []
        for style, version in exported.items():
            new = await asyncio.to_thread(find, store, style, version)
            old = await asyncio.to_thread(find, store, style, live[style]) if style in live else None
            if new is None:
                continue
            old_quality = read_quality(old.path) if old is not None else None
            lines.append(f"{style} {version}: {scores(read_quality(new.path), old_quality, style)}")
            if old is not None and old_quality is not None:
                lines.append(f"{style} {old.version} (live): {scores(old_quality, None, style)}")
            if (picture := new.preview()) is not None:
                label = f"{style}: before | {old.version} (live) | {version}" if old else f"{style}: before | {version}"
                rows.append((label, old.preview() if old else None, picture))
        return lines, (await asyncio.to_thread(strip, rows) if rows else None)
