"""`python -m training enqueue | jobs | cancel`: the training queue (`db.jobs`) for admins without chat access."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from config import get_settings
from db import jobs
from db.engine import create_engine, session_factory
from db.jobs import describe
from styles import catalog


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    """--database-url, overriding the settings' DATABASE_URL (else the SQLite file the bots use)."""
    parser.add_argument("--database-url", default=None, help="default: $DATABASE_URL, else the bots' SQLite file")


def database_url(args: argparse.Namespace) -> str:
    """`--database-url`, else the configured one."""
    return args.database_url or get_settings().database_url


async def _with_session(args: argparse.Namespace, work: Callable[[AsyncSession], Awaitable[int]]) -> int:
    engine = create_engine(database_url(args))
    try:
        async with session_factory(engine)() as session:
            return await work(session)
    finally:
        await engine.dispose()


async def _enqueue(args: argparse.Namespace, session: AsyncSession) -> int:
    try:
        catalog.check_job(args.pair, args.from_version)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    job = await jobs.enqueue(
        session, pair=args.pair, iterations=args.iterations, from_version=args.from_version,
        requested_by=f"cli:{getpass.getuser()}", notify_platform="web", notify_chat_id="cli",
        deploy_when_done=False,
    )
    print(f"queued {describe(job)}")
    return 0


async def _list(args: argparse.Namespace, session: AsyncSession) -> int:
    for job in await jobs.list_jobs(session, status=args.status, limit=args.limit):
        print(describe(job))
    return 0


async def _cancel(args: argparse.Namespace, session: AsyncSession) -> int:
    job = await jobs.cancel(session, job_id=args.job, reason=f"cancelled by cli:{getpass.getuser()}")
    if job is None:
        print(f"no job #{args.job}")
        return 1
    print(describe(job) + (" (stops at its next heartbeat)" if job.status == "running" else ""))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `enqueue`, `jobs` and `cancel`."""
    def command(name: str, help_text: str, action: Callable[[argparse.Namespace, AsyncSession], Awaitable[int]]):
        p = sub.add_parser(name, help=help_text)
        add_database_argument(p)
        p.set_defaults(func=lambda args: asyncio.run(_with_session(args, lambda s: action(args, s))))
        return p

    p = command("enqueue", "queue a retraining job for `python -m training worker`", _enqueue)
    p.add_argument("pair", help="dataset and run name, e.g. selfie2anime")
    p.add_argument("--iterations", type=int, default=10_000)
    p.add_argument("--from", dest="from_version", metavar="VERSION", help="start from this version's generators")
    p = command("jobs", "list training jobs, latest first", _list)
    p.add_argument("--status", choices=["queued", "running", "done", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=20)
    p = command("cancel", "cancel a queued or running job", _cancel)
    p.add_argument("job", type=int)
