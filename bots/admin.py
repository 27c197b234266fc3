"""Admin commands (/stats, /models, /deploy, /rollback, /retrain, /jobs, /cancel) and everyone's
/privacy and /forget, registered into the core so every front end gets them.

This is their chat side: parsing a command's text and wording the reply. What
they do is `ops`'s (deploys through `ops.deploy`, usage and jobs through `ops.admin`).

Admins are the platform user ids in `ADMIN_IDS`. Anyone else asking for an
admin command gets exactly the answer to an unknown command (so the commands
stay unadvertised), and the attempt is logged.

A hung database must not freeze these during an incident: every database call
a command waits for has a deadline (`db.deadline`, under 1 s). Then a read
(/stats, /models, /jobs) or a deploy or rollback that changed nothing yet says
"the database is not answering, try again shortly"; a write asked for
(/retrain, /cancel, /forget) is done when the database answers, and the reply
says so: asking again reports how it went and never does it twice. A /forget
is never reported done before its rows are gone (nor before the usage records
and style saves this process still holds for the user have landed, so that
none of them lands after the delete). /privacy never touches the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Hashable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bots import charts, messages
from bots.core import Command, Core, Reply, Request, words_for
from bots.i18n import Words
from config import Settings
from db import users
from db.deadline import Deadlines, NotAnswering, until_done
from db.jobs import describe
from db.models import Platform
from db.types import now_utc
from ops import admin
from ops.deploy import Deployer, Outcome, describe_models, open_deployer
from ops.management import Management

logger = logging.getLogger(__name__)

ADMIN_PLATFORMS: tuple[Platform, ...] = ("telegram", "discord")  # the web page has no accounts
MAX_STATS_DAYS = 366
DEFAULT_ITERATIONS = 10_000


async def open_admin(
    settings: Settings, management: Management, sessions: async_sessionmaker[AsyncSession], core: Core
) -> Admin:
    """The admin commands over the runtime the core draws with (its logged defaults restored),
    installed into the core."""
    deadlines = Deadlines()
    deployer = await open_deployer(
        management, sessions, settings.model_store, on_change=core.refresh_styles, deadlines=deadlines
    )
    commands = Admin(deployer=deployer, sessions=sessions, admin_ids=settings.admin_ids, deadlines=deadlines)
    commands.install(core)
    return commands


def requester(request: Request) -> str:
    """"platform:user id", as the deployments and training_jobs tables record people."""
    return f"{request.platform}:{request.user_id}"


class Admin:
    """The admin side of the bots: deployments through `deployer`, records in the database."""

    def __init__(
        self, *, deployer: Deployer, sessions: async_sessionmaker[AsyncSession], admin_ids: Collection[int],
        deadlines: Deadlines | None = None,
    ) -> None:
        self.deployer = deployer
        self.sessions = sessions
        self.deadlines = deadlines or Deadlines()
        self._admin_ids = frozenset(admin_ids)
        # The core's, once installed: its memory of a user's style, and its database work on a user.
        self._forget_style: Callable[[Hashable], None] = lambda user: None
        self._quiet: Callable[[Platform, str], Awaitable[None]] = _nothing_pending
        self._deleted: dict[tuple[Platform, str], int] = {}  # rows a /forget deleted, not yet reported

    async def close(self) -> None:
        """Close the runtime's management session."""
        await self.deployer.management.close()

    def install(self, core: Core) -> None:
        """Add the commands to the core (admin ones behind the ADMIN_IDS check)."""
        self._forget_style = core.forget_choices
        self._quiet = core.quiet
        core.commands["privacy"] = lambda request, arg: self.privacy(request)
        core.commands["forget"] = lambda request, arg: self.forget(request)
        admin_only = {
            "stats": self._stats, "models": self._models, "deploy": self._deploy, "rollback": self._rollback,
            "retrain": self._retrain, "jobs": self._jobs, "cancel": self._cancel,
        }
        for name, command in admin_only.items():
            core.commands[name] = self._guard(name, command)

    def is_admin(self, request: Request) -> bool:
        """True for a Telegram or Discord user listed in ADMIN_IDS."""
        return (
            request.platform in ADMIN_PLATFORMS
            and request.user_id.isdigit()
            and int(request.user_id) in self._admin_ids
        )

    def _guard(self, name: str, command: Command) -> Command:
        """`command` for admins; anyone else is refused before its text is parsed, so a usage line
        never shows a non-admin that the command exists."""

        async def guarded(request: Request, arg: str) -> Reply:
            return self._refused(request, name) or await command(request, arg)

        return guarded

    # Everyone ----------------------------------------------------------------

    async def privacy(self, request: Request) -> Reply:
        """What is stored, and that photos never are."""
        return Reply(words_for(request)(messages.PRIVACY))

    async def forget(self, request: Request) -> Reply:
        """Delete the user's row and usage records; when the database does not answer in time, say
        that it is done as soon as it answers (asking again then reports what was deleted)."""
        user = (request.platform, request.user_id)
        self._forget_style(user)  # this process stops using the style at once
        try:
            await self.deadlines.run(("forget", *user), lambda: self._forget_now(*user))
        except NotAnswering:
            return Reply(words_for(request)(messages.FORGET_LATER))
        return Reply(words_for(request)(messages.FORGOTTEN, count=self._deleted.pop(user, 0)))

    async def _forget_now(self, platform: Platform, user_id: str) -> None:
        """Delete once what this process still writes about the user has landed, retrying while the
        database is away; the rows deleted wait in `_deleted` for the reply."""
        await self._quiet(platform, user_id)

        async def delete() -> users.Forgotten:
            async with self.sessions() as session:
                return await users.forget_user(session, platform=platform, platform_user_id=user_id)

        gone = await until_done(delete, what=f"/forget of {platform}:{user_id}")
        self._forget_style((platform, user_id))  # a style read while this waited is gone too
        self._deleted[(platform, user_id)] = self._deleted.get((platform, user_id), 0) + gone.users + gone.usage
        logger.info("forgot %s:%s (%d usage records)", platform, user_id, gone.usage)

    # Typed commands: what a front end with typed options (Discord's slash commands) calls; the
    # text commands below parse a chat line into the same calls. Each checks ADMIN_IDS itself.

    def _refused(self, request: Request, name: str) -> Reply | None:
        """None for an admin; else the answer to an unknown command, and a log line."""
        if self.is_admin(request):
            return None
        logger.warning("refused /%s from %s (not in ADMIN_IDS)", name, requester(request))
        return Reply(words_for(request)(messages.HELP))

    async def stats(self, request: Request, days: int = 7) -> Reply:
        """The chart of requests per style per day, with success rates, latencies and top errors."""
        if refused := self._refused(request, "stats"):
            return refused
        if not 1 <= days <= MAX_STATS_DAYS:
            return Reply(words_for(request)(messages.ADMIN_USAGE["stats"]))
        try:
            report = await self.deadlines.run(("stats", days), lambda: admin.usage_report(self.sessions, days=days))
        except NotAnswering:
            return Reply(words_for(request)(messages.DB_NOT_ANSWERING))
        if not report.styles:
            return Reply(words_for(request)(messages.STATS_EMPTY, days=days))
        words = words_for(request)
        lines = [words(messages.STATS_TOTAL, days=days, requests=report.requests, rate=report.success_rate)]
        lines += [
            words_for(request)(messages.STATS_STYLE, 
                style=s.style, requests=s.requests, rate=s.success_rate, p50=_ms(s.p50_ms), p95=_ms(s.p95_ms)
            )
            for s in report.styles
        ]
        if report.errors:
            lines.append(words(messages.STATS_ERRORS, errors=", ".join(f"{kind} {n}" for kind, n in report.errors)))
        chart = await asyncio.to_thread(charts.requests_chart, report.daily, days=days, today=now_utc().date())
        return Reply("\n".join(lines), image=chart, content_type="image/png")

    async def models(self, request: Request) -> Reply:
        """Each style's versions, the default marked, with who deployed them when."""
        if refused := self._refused(request, "models"):
            return refused
        try:
            reports = await self.deployer.models()
        except NotAnswering:
            return Reply(words_for(request)(messages.DB_NOT_ANSWERING))
        return Reply("\n".join(describe_models(reports)) if reports else words_for(request)(messages.MODELS_EMPTY))

    async def deploy(self, request: Request, style: str, version: str, *, force: bool = False) -> Reply:
        """Compare with the live version, load, check on a sample image, then make default; the old one
        stays on any failure, and when the new one measures worse (unless `force`)."""
        if refused := self._refused(request, "deploy"):
            return refused
        try:
            outcome = await self.deployer.deploy(style, version, by=requester(request), force=force)
        except NotAnswering:  # before anything changed
            return Reply(words_for(request)(messages.DB_NOT_ANSWERING))
        return _outcome(outcome, messages.DEPLOYED, messages.DEPLOY_FAILED, words_for(request))

    async def rollback(self, request: Request, style: str) -> Reply:
        """Back to the version deployed before the current one."""
        if refused := self._refused(request, "rollback"):
            return refused
        try:
            outcome = await self.deployer.rollback(style, by=requester(request))
        except NotAnswering:  # before anything changed
            return Reply(words_for(request)(messages.DB_NOT_ANSWERING))
        return _outcome(outcome, messages.ROLLED_BACK, messages.ROLLBACK_FAILED, words_for(request))

    async def retrain(
        self, request: Request, pair: str, iterations: int = DEFAULT_ITERATIONS, *,
        from_version: str | None = None, deploy: bool = False,
    ) -> Reply:
        """Queue a job for the training worker."""
        if refused := self._refused(request, "retrain"):
            return refused
        if iterations <= 0:
            return Reply(words_for(request)(messages.ADMIN_USAGE["retrain"]))
        asked = ("retrain", requester(request), request.chat_id, pair, iterations, from_version, deploy)
        try:
            job = await self.deadlines.run(asked, lambda: until_done(
                lambda: admin.queue_retrain(
                    self.sessions, pair=pair, iterations=iterations, from_version=from_version, deploy=deploy,
                    by=requester(request), notify_platform=request.platform, notify_chat_id=request.chat_id,
                ),
                what=f"/retrain {pair}",
            ), keep=True)
        except ValueError as error:
            return Reply(f"{error}\n{words_for(request)(messages.ADMIN_USAGE['retrain'])}")
        except NotAnswering:
            return Reply(words_for(request)(messages.DB_LATER))
        start = words_for(request)(messages.JOB_FROM, version=from_version) if from_version else ""
        queued = {"id": job.id, "pair": job.pair, "iterations": iterations, "start": start}
        return Reply(words_for(request)(messages.JOB_QUEUED, **queued))

    async def jobs(self, request: Request) -> Reply:
        """The latest jobs with their progress."""
        if refused := self._refused(request, "jobs"):
            return refused
        try:
            found = await self.deadlines.run("jobs", lambda: admin.latest_jobs(self.sessions, limit=10))
        except NotAnswering:
            return Reply(words_for(request)(messages.DB_NOT_ANSWERING))
        return Reply("\n".join(describe(j) for j in found) if found else words_for(request)(messages.JOBS_EMPTY))

    async def cancel(self, request: Request, job_id: int) -> Reply:
        """Cancel a queued job at once, a running one at its next heartbeat."""
        if refused := self._refused(request, "cancel"):
            return refused
        try:
            job = await self.deadlines.run(("cancel", job_id), lambda: until_done(
                lambda: admin.cancel_job(self.sessions, job_id=job_id, by=requester(request)),
                what=f"/cancel {job_id}",
            ), keep=True)
        except NotAnswering:
            return Reply(words_for(request)(messages.DB_LATER))
        if job is None:
            return Reply(words_for(request)(messages.NO_SUCH_JOB, id=job_id))
        return Reply(words_for(request)(messages.JOB_CANCELLED, job=describe(job)))

    # Text commands: a chat line parsed into the typed calls above --------------

    async def _stats(self, request: Request, arg: str) -> Reply:
        if arg and not arg.isdigit():
            return Reply(words_for(request)(messages.ADMIN_USAGE["stats"]))
        return await self.stats(request, int(arg or 7))

    async def _models(self, request: Request, arg: str) -> Reply:
        return await self.models(request)

    async def _deploy(self, request: Request, arg: str) -> Reply:
        parts = arg.split()
        force = len(parts) == 3 and parts[2] == "force"
        if len(parts) != 2 and not force:
            return Reply(words_for(request)(messages.ADMIN_USAGE["deploy"]))
        return await self.deploy(request, parts[0], parts[1], force=force)

    async def _rollback(self, request: Request, arg: str) -> Reply:
        if len(arg.split()) != 1:
            return Reply(words_for(request)(messages.ADMIN_USAGE["rollback"]))
        return await self.rollback(request, arg)

    async def _retrain(self, request: Request, arg: str) -> Reply:
        """PAIR [iterations] [from VERSION] [deploy]."""
        parts = arg.split()
        deploy = bool(parts) and parts[-1] == "deploy"
        parts = parts[:-1] if deploy else parts
        from_version = None
        if len(parts) >= 2 and parts[-2] == "from":
            from_version, parts = parts[-1], parts[:-2]
        if len(parts) not in (1, 2) or (len(parts) == 2 and not (parts[1].isdigit() and int(parts[1]) > 0)):
            return Reply(words_for(request)(messages.ADMIN_USAGE["retrain"]))
        iterations = int(parts[1]) if len(parts) == 2 else DEFAULT_ITERATIONS
        return await self.retrain(request, parts[0], iterations, from_version=from_version, deploy=deploy)

    async def _jobs(self, request: Request, arg: str) -> Reply:
        return await self.jobs(request)

    async def _cancel(self, request: Request, arg: str) -> Reply:
        if not arg.isdigit():
            return Reply(words_for(request)(messages.ADMIN_USAGE["cancel"]))
        return await self.cancel(request, int(arg))


def _outcome(outcome: Outcome, done: str, failed: str, words: Words) -> Reply:
    """A deploy's or rollback's reply in the admin's language (ops' own detail stays English),
    saying so when its log entry waits for the database."""
    text = words(done if outcome.ok else failed, message=outcome.message)
    return Reply(text if outcome.logged else f"{text} {words(messages.NOT_LOGGED_YET)}")


async def _nothing_pending(platform: Platform, user_id: str) -> None:
    """Before `install`: no core, so no database work of its to wait for."""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
