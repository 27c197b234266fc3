"""Deploy, roll back and list style versions; every attempt is a row in `deployments`.

The runtime (`ops.management`) does the switching; this module adds the
audit trail, works out what a rollback returns to, and, at start-up, puts the
logged defaults back in place (the embedded engine forgets them on restart).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import deployments
from db.deadline import Deadlines, NotAnswering, until_done
from db.models import DeployAction, Deployment
from ops import guard
from ops.management import DeployError, Management, find_archive
from styles import catalog
from styles.archive import Archive, find, scan, store_versions
from styles.quality import Quality, below_bar, comparable, read_quality, worse_than

logger = logging.getLogger(__name__)

BASELINE_BY = "toonbot"  # who "deployed" the version serving before the first logged deploy
BASELINE_NOTE = "the default before the first recorded deployment"
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What came of a deploy or rollback; `message` is for the admin."""

    ok: bool
    message: str
    logged: bool = True  # False: the database did not answer in time; the entry is written when it does


@dataclass(frozen=True)
class VersionInfo:
    """One version of a style and its latest successful deployment, if any."""

    version: str
    deployed_at: datetime | None
    deployed_by: str | None
    quality: Quality | None = None  # its quality.json: what its evaluation found


@dataclass(frozen=True)
class StyleReport:
    """A style's versions and its default, for `/models`."""

    style: str
    default: str | None  # None: TorchServe replicas that serve different defaults
    versions: tuple[VersionInfo, ...]


def describe_models(reports: list[StyleReport]) -> list[str]:
    """/models and `python -m ops models`: a style per line, its versions indented, the default starred."""
    lines = []
    for report in reports:
        lines.append(f"{report.style} (default {report.default or 'differs between the replicas'})")
        live = next((v.quality for v in report.versions if v.version == report.default), None)
        for v in report.versions:
            when = f"{v.deployed_at:%Y-%m-%d %H:%M} UTC by {v.deployed_by}" if v.deployed_at else "never deployed"
            lines.append(f"  {v.version}{' *' if v.version == report.default else ''} - {when}")
            lines.append(f"    {scores(v.quality, None if v.version == report.default else live, report.style)}")
    return lines


def scores(quality: Quality | None, live: Quality | None, style: str) -> str:
    """A version's figures; beside the live version's when `live` is given; the live one's bar when not."""
    if quality is None:
        return "not measured (no quality.json)"
    said = quality.summary()
    if live is None:
        short = below_bar(quality, catalog.bar(style))
        return said + (f"; experimental: {short.figure} {short.value:.2f}, bar {short.bar:.2f}" if short else "")
    if not comparable(quality, live):
        return said + "; measured on other test pictures than the live version"
    worse = worse_than(quality, live)
    if worse:
        return said + "; worse than live: " + "; ".join(worse)
    return said + f"; live: judged {live.judged.value:.2f}, KID {live.kid.value:.1f}, sharpness {live.sharpness.value:.2f}"


class Deployer:
    """Deploys through one runtime, one change at a time, and logs each attempt.

    With `deadlines` (the bots: an admin waits in a chat) every database call of
    a deploy, rollback or listing answers within them: `NotAnswering` before
    anything changed, or an `Outcome` with `logged=False` when only the log
    entry waits (it is written when the database answers, in order). Without
    (the command line), it waits for the database as long as that takes.
    """

    def __init__(
        self, management: Management, sessions: async_sessionmaker[AsyncSession], model_store: Path,
        on_change: Callable[[], None] = lambda: None, deadlines: Deadlines | None = None,
    ) -> None:
        self.management = management
        self._sessions = sessions
        self._store = Path(model_store)
        self._on_change = on_change  # e.g. the bots' style list refreshes at once
        self._lock = asyncio.Lock()
        self.deadlines = deadlines
        self._unlogged: dict[str, set[asyncio.Task[None]]] = {}  # log entries still being written, per style

    @property
    def model_store(self) -> Path:
        """The model store it deploys from."""
        return self._store

    async def deploy(
        self, style: str, version: str, *, by: str, action: DeployAction = "deploy", force: bool = False
    ) -> Outcome:
        """Make `version` the style's default once it loaded and drew the sample; else keep the old one.
        A deploy (not a rollback) is refused when the version measures worse than the live one, unless `force`."""
        try:  # checked before anything is looked up or logged under these names
            catalog.check_name(style)
            catalog.check_version(version)
        except ValueError as error:
            return Outcome(False, str(error))
        async with self._lock:
            try:
                current = {s.style: s.default for s in await self.management.versions()}
                archive = await asyncio.to_thread(find_archive, self._store, style, version)
                measure = action == "deploy" and current.get(style) != version  # a rollback returns to a known version
                check = await self._check(archive, current.get(style), force=force) if measure else None
                if check is not None and check.refused:
                    logger.warning("deploy of %s %s by %s refused: %s", style, version, by, check.note)
                    logged = await self._record(style, version, action, by, ok=False, message=check.note, check=check)
                    return Outcome(False, check.note, logged)
                if (serving := current.get(style)) is not None:  # replicas that differ have no one version to log
                    await self._log_baseline(style, serving)
                await self.management.make_default(archive)
            except DeployError as error:
                logger.warning("%s of %s %s by %s failed: %s", action, style, version, by, error.message)
                logged = await self._record(style, version, action, by, ok=False, message=error.message)
                return Outcome(False, error.message, logged)
            before = current.get(style)
            message = f"{style} {version} is the default now" + (f" (was {before})." if before else ".")
            message += f" {check.note}" if check is not None and check.note else ""
            logged = await self._record(style, version, action, by, ok=True, message=message, check=check)
        logger.info("%s by %s: %s", action, by, message)
        self._on_change()
        return Outcome(True, message, logged)

    async def rollback(self, style: str, *, by: str) -> Outcome:
        """Make the version deployed before the current one the default again."""
        try:
            catalog.check_name(style)
        except ValueError as error:
            return Outcome(False, str(error))
        async def read() -> str | None:
            await self._written(style)
            async with self._sessions() as session:
                return await deployments.previous_version(session, style=style)

        previous = await self._db(("previous", style), read)
        if previous is None:
            return Outcome(False, f"{style} has no earlier deployed version to go back to.")
        return await self.deploy(style, previous, by=by, action="rollback")

    async def models(self) -> list[StyleReport]:
        """Each style's versions with who deployed them when, and the default."""
        reports = []
        for found in await self.management.versions():
            log = await self._log_of(found.style)
            latest = {}
            for row in log:  # latest first: keep each version's most recent success
                if row.ok:
                    latest.setdefault(row.version, row)
            measured = await asyncio.to_thread(_qualities, self._store, found.style)
            reports.append(StyleReport(found.style, found.default, tuple(
                VersionInfo(v, getattr(latest.get(v), "created_at", None), getattr(latest.get(v), "deployed_by", None),
                            measured.get(v))
                for v in found.versions
            )))
        return reports

    async def restore(self) -> None:
        """Serve each style's last logged default again (after a restart of the runtime or the bots);
        a style never deployed serves the version that shipped, as the embedded engine starts with."""
        shipped = await asyncio.to_thread(scan, self._store)
        async with self._lock:
            for found in await self.management.versions():
                async with self._sessions() as session:
                    log = await deployments.list_deployments(session, style=found.style, limit=100)
                first = shipped[found.style].version if found.style in shipped else None
                wanted = next((row.version for row in log if row.ok), first)
                if wanted is None or wanted == found.default:
                    continue
                try:
                    archive = await asyncio.to_thread(find_archive, self._store, found.style, wanted)
                    await self.management.make_default(archive)
                    logger.info("restored %s %s as the default", found.style, wanted)
                except DeployError as error:
                    logger.warning("could not restore %s %s: %s", found.style, wanted, error.message)
        self._on_change()

    async def _log_baseline(self, style: str, default: str) -> None:
        """Log the version serving before the first deploy, so the first rollback can return to it;
        `NotAnswering` (nothing deployed yet) when the database is too slow for that."""
        if any(row.ok for row in await self._log_of(style)):
            return
        if not await self._record(style, default, "deploy", BASELINE_BY, ok=True, message=BASELINE_NOTE):
            raise NotAnswering

    async def _db(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        """`work()`, within the deadlines when there are some."""
        return await work() if self.deadlines is None else await self.deadlines.run(key, work)

    async def _written(self, style: str) -> None:
        """Wait for this process's log entries of `style` that are still being written."""
        if pending := self._unlogged.get(style):
            await asyncio.wait(list(pending))

    async def _log_of(self, style: str) -> list[Deployment]:
        """The style's log, latest first, with this process's own entries in it."""
        async def read() -> list[Deployment]:
            await self._written(style)
            async with self._sessions() as session:
                return await deployments.list_deployments(session, style=style, limit=100)

        return await self._db(("log", style), read)

    async def _check(self, archive: Archive, live_version: str | None, *, force: bool) -> guard.Check:
        """The quality check of `archive` against the live version's archive (if the store still has it)."""
        live = await asyncio.to_thread(find, self._store, archive.name, live_version) if live_version else None
        return await asyncio.to_thread(guard.check, archive, live, force=force)

    async def _record(
        self, style: str, version: str, action: DeployAction, by: str, *, ok: bool, message: str,
        check: guard.Check | None = None,
    ) -> bool:
        """Log one attempt; False when the database did not answer within the deadline: the entry is
        then written when it does, after the style's earlier entries, so the log keeps its order."""
        earlier = list(self._unlogged.get(style, ()))

        async def write() -> None:
            if earlier:
                await asyncio.wait(earlier)
            async with self._sessions() as session:
                await deployments.record_deployment(
                    session, style=style, version=version, action=action, deployed_by=by,
                    runtime=self.management.runtime, ok=ok, message=message,
                    guard=check.decision if check else None, figures=check.figures if check else None,
                )

        if self.deadlines is None:
            await write()
            return True
        task = asyncio.ensure_future(until_done(write, what=f"deployment log entry {style} {version}"))
        pending = self._unlogged.setdefault(style, set())
        pending.add(task)
        task.add_done_callback(pending.discard)
        done, _ = await asyncio.wait({task}, timeout=self.deadlines.seconds)
        if done:
            task.result()
            return True
        logger.warning("deployment log entry %s %s waits for the database", style, version)
        return False


def _qualities(store: Path, style: str) -> dict[str, Quality | None]:
    """Each version's quality.json in the model store."""
    return {v: read_quality(a.path) for v, a in store_versions(store).get(style, {}).items()}


async def live_versions(sessions: async_sessionmaker[AsyncSession], model_store: Path) -> dict[str, str]:
    """Each style of the model store with the version that should serve it: the deployment log's
    latest successful deploy or rollback, else the version that shipped. What a runtime starts with."""
    live = {style: archive.version for style, archive in (await asyncio.to_thread(scan, model_store)).items()}
    async with sessions() as session:
        for style in live:
            live[style] = await deployments.live_version(session, style=style) or live[style]
    return live


async def open_deployer(
    management: Management, sessions: async_sessionmaker[AsyncSession], model_store: Path,
    on_change: Callable[[], None] = lambda: None, deadlines: Deadlines | None = None,
) -> Deployer:
    """A deployer over `management`, with the last logged defaults put back in place first: the
    embedded engine forgets them when its process restarts, TorchServe when it does."""
    deployer = Deployer(management, sessions, model_store, on_change=on_change, deadlines=deadlines)
    try:
        await deployer.restore()
    except DeployError as error:  # TorchServe down: the bots still start, and say so when asked
        logger.warning("could not restore the deployed versions: %s", error.message)
    return deployer
