"""The deployment log: record, list latest first, and where a rollback goes."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.deployments import list_deployments, previous_version, record_deployment

Sessions = async_sessionmaker[AsyncSession]


async def log(session: AsyncSession, version: str, action: str = "deploy", ok: bool = True) -> None:
    await record_deployment(
        session, style="selfie2anime", version=version, action=action,  # type: ignore[arg-type]
        deployed_by="telegram:42", runtime="torchserve", ok=ok, message="" if ok else "sample failed",
    )


async def test_record_and_list_latest_first(db_sessions: Sessions) -> None:
    async with db_sessions() as session:
        for version in ["1.0", "2.0", "3.0"]:
            await log(session, version)
        await record_deployment(
            session, style="cat2dog", version="1.0", action="deploy",
            deployed_by="discord:7", runtime="embedded", ok=True,
        )
    async with db_sessions() as session:
        listed = await list_deployments(session, style="selfie2anime")
        assert [d.version for d in listed] == ["3.0", "2.0", "1.0"]
        assert (listed[0].deployed_by, listed[0].runtime, listed[0].ok) == ("telegram:42", "torchserve", True)
        assert listed[0].created_at.utcoffset() is not None
        assert [d.version for d in await list_deployments(session, style="selfie2anime", limit=1)] == ["3.0"]
        assert [d.runtime for d in await list_deployments(session, style="cat2dog")] == ["embedded"]


async def test_previous_version_walks_back_and_skips_failures(db_sessions: Sessions) -> None:
    async with db_sessions() as session:
        assert await previous_version(session, style="selfie2anime") is None
        await log(session, "1.0")
        assert await previous_version(session, style="selfie2anime") is None
        await log(session, "2.0")
        await log(session, "3.0")
        await log(session, "4.0", ok=False)  # never became the default
        assert await previous_version(session, style="selfie2anime") == "2.0"
        await log(session, "2.0", action="rollback")
        assert await previous_version(session, style="selfie2anime") == "1.0"
        await log(session, "1.0", action="rollback")
        assert await previous_version(session, style="selfie2anime") is None
        await log(session, "5.0")
        assert await previous_version(session, style="selfie2anime") == "1.0"
        assert await previous_version(session, style="cat2dog") is None
