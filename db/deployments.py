"""The deployment log: every deploy and rollback, successful or not, per style."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import DeployAction, Deployment, GuardDecision, ServingRuntime


async def record_deployment(
    session: AsyncSession,
    *,
    style: str,
    version: str,
    action: DeployAction,
    deployed_by: str,
    runtime: ServingRuntime,
    ok: bool,
    message: str = "",
    guard: GuardDecision | None = None,
    figures: dict[str, Any] | None = None,
) -> Deployment:
    """Log one deploy or rollback attempt; `ok` says whether it became the default, `guard` how the
    quality check went and `figures` what it compared."""
    deployment = Deployment(
        style=style,
        version=version,
        action=action,
        deployed_by=deployed_by,
        runtime=runtime,
        ok=ok,
        message=message,
        guard=guard,
        figures=figures,
    )
    session.add(deployment)
    await session.commit()
    return deployment


async def list_deployments(session: AsyncSession, *, style: str, limit: int = 20) -> list[Deployment]:
    """The style's deployment log, latest first."""
    found = await session.scalars(
        select(Deployment)
        .where(Deployment.style == style)
        .order_by(Deployment.created_at.desc(), Deployment.id.desc())
        .limit(limit)
    )
    return list(found)


async def previous_version(session: AsyncSession, *, style: str) -> str | None:
    """The version a rollback should return to, or None if there is none.

    Successful deploys stack up; a successful rollback to a version pops the
    stack back to it, so repeated rollbacks keep walking back in time instead
    of flipping between two versions. Failed attempts never changed the
    default and are skipped.
    """
    rows = await session.execute(
        select(Deployment.action, Deployment.version)
        .where(Deployment.style == style, Deployment.ok)
        .order_by(Deployment.created_at, Deployment.id)
    )
    history: list[str] = []
    for action, version in rows:
        if action == "rollback" and version in history:
            last = len(history) - 1 - history[::-1].index(version)
            del history[last + 1 :]
        elif not history or history[-1] != version:
            history.append(version)
    return history[-2] if len(history) > 1 else None


async def live_version(session: AsyncSession, *, style: str) -> str | None:
    """The version the log says serves: its latest successful deploy or rollback (None: never deployed)."""
    return await session.scalar(
        select(Deployment.version)
        .where(Deployment.style == style, Deployment.ok)
        .order_by(Deployment.created_at.desc(), Deployment.id.desc())
        .limit(1)
    )
