"""Job announcements in chat: `ops.announce` finds and deploys finished jobs, this words them.

Each front end runs one `JobAnnouncer` for its platform and sends the reply
to the chat the job was asked from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bots import messages
from bots.admin import Admin
from bots.core import Reply
from db.models import Platform
from ops import announce

Send = Callable[[str, Reply], Awaitable[None]]  # (chat id, reply)


def reply(finished: announce.Finished) -> Reply:
    """The outcome in words, with the final sample grid when the job trained to the end."""
    job = finished.job
    if not finished.done:
        error = job.error or messages.JOB_NO_REASON
        return Reply(messages.JOB_FAILED.format(id=job.id, pair=job.pair, status=job.status, error=error))
    versions = ", ".join(f"{style} {version}" for style, version in finished.versions.items())
    if job.deploy_when_done:
        deployed = "\n".join(
            (messages.DEPLOYED if o.ok else messages.DEPLOY_FAILED).format(message=o.message)
            for o in finished.deployments
        )
        text = messages.JOB_DONE_DEPLOYED.format(id=job.id, pair=job.pair, versions=versions, deployments=deployed)
    else:
        text = messages.JOB_DONE.format(id=job.id, pair=job.pair, versions=versions)
    if finished.scores:
        text += "\n" + messages.JOB_SCORES + "\n" + "\n".join(finished.scores)
    if finished.strip is not None:  # the style's picture in the live and the new version
        return Reply(text, image=finished.strip, content_type="image/jpeg")
    image = finished.samples
    return Reply(text, image=image, content_type="image/png" if image else None)


class JobAnnouncer(announce.JobAnnouncer):
    """Announces one platform's finished jobs in words, through the admin commands' deployer."""

    def __init__(self, admin: Admin, platform: Platform, send: Send, *, poll_s: float = announce.POLL_S) -> None:
        async def send_reply(chat_id: str, finished: announce.Finished) -> None:
            await send(chat_id, reply(finished))

        super().__init__(admin.sessions, admin.deployer, platform, send_reply, poll_s=poll_s)
