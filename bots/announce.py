"""Tell admins when their training jobs end: each front end polls for its platform's finished jobs.

A job is announced once: its `result` gets `"announced": true` after the
message went out. A finished job that asked for it (`/retrain ... deploy`)
is deployed here, by the bots, since they hold the runtime (the embedded
engine lives in this process, not in the training worker's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from bots import messages
from bots.admin import Admin
from bots.core import Reply
from db import jobs
from db.models import Platform, TrainingJob

logger = logging.getLogger(__name__)

POLL_S = 5.0
Send = Callable[[str, Reply], Awaitable[None]]  # (chat id, reply)


class JobAnnouncer:
    """Polls for finished jobs to announce on one platform."""

    def __init__(self, admin: Admin, platform: Platform, send: Send, *, poll_s: float = POLL_S) -> None:
        self._admin = admin
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
        """Message every finished, unannounced job's requester; how many were announced."""
        async with self._admin.sessions() as session:
            pending = await jobs.unannounced(session, platform=self._platform)
        for job in pending:
            await self._send(job.notify_chat_id, await self._reply(job))
            async with self._admin.sessions() as session:
                await jobs.mark_announced(session, job=job)
        return len(pending)

    async def _reply(self, job: TrainingJob) -> Reply:
        """The outcome in words, with the final sample grid when the job trained to the end."""
        if job.status != "done" or job.result is None:
            error = job.error or "no reason recorded"
            return Reply(messages.JOB_FAILED.format(id=job.id, pair=job.pair, status=job.status, error=error))
        exported: dict[str, str] = job.result.get("versions", {})
        versions = ", ".join(f"{style} {version}" for style, version in exported.items())
        if job.deploy_when_done:
            outcomes = [await self._admin.deployer.deploy(s, v, by=job.requested_by) for s, v in exported.items()]
            deployed = "\n".join(
                (messages.DEPLOYED if o.ok else messages.DEPLOY_FAILED).format(message=o.message) for o in outcomes
            )
            text = messages.JOB_DONE_DEPLOYED.format(id=job.id, pair=job.pair, versions=versions, deployments=deployed)
        else:
            text = messages.JOB_DONE.format(id=job.id, pair=job.pair, versions=versions)
        samples = Path(job.result.get("samples", ""))
        image = await asyncio.to_thread(samples.read_bytes) if samples.is_file() else None
        return Reply(text, image=image, content_type="image/png" if image else None)
