"""After every start, each style serves the deployment log's live version (the shipped one when the log
is empty), never whichever archive the runtime happened to list first: on TorchServe and on the engine."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from torchserve_fixture import START_TIMEOUT_S, export_tiny_styles, management, running_torchserve

from db.deployments import record_deployment
from ops.deploy import Deployer, live_versions
from ops.management import EmbeddedManagement
from serving.engine import EmbeddedEngine
from serving.torchserve import LocalTorchServe, load_order

torch.set_num_threads(1)
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def three_versions(tiny_store: Path) -> Path:
    """selfie2anime/anime2selfie 1.0 (shipped), 2.0 (listed first by name) and 3.0."""
    export_tiny_styles(tiny_store, "selfie2anime", "--version", "2.0", seed=1)
    export_tiny_styles(tiny_store, "selfie2anime", "--version", "3.0", seed=2)
    return tiny_store


async def deployed(sessions: Sessions, style: str, version: str) -> None:
    async with sessions() as session:
        await record_deployment(session, style=style, version=version, action="deploy", deployed_by="telegram:1",
                                runtime="torchserve", ok=True)


def test_load_order_puts_each_default_first(three_versions: Path) -> None:
    order = load_order(three_versions, {"selfie2anime": "3.0"})
    assert order[:2] == ["anime2selfie.mar", "selfie2anime-3.0.mar"]  # the defaults, then the rest
    assert sorted(order) == sorted(p.name for p in three_versions.glob("*.mar"))
    assert load_order(three_versions, {"selfie2anime": "9.9"})[1] == "selfie2anime.mar"  # gone: the shipped one


def defaults(ts: LocalTorchServe) -> dict[str, str]:
    return {style: management(ts, "GET", f"/models/{style}")[1][0]["modelVersion"]
            for style in ("selfie2anime", "anime2selfie")}


async def test_torchserve_starts_with_the_logged_versions(
    three_versions: Path, db_sessions: Sessions, tmp_path: Path
) -> None:
    for logged, expected in ((None, {"selfie2anime": "1.0", "anime2selfie": "1.0"}),
                             ("3.0", {"selfie2anime": "3.0", "anime2selfie": "1.0"})):
        if logged:
            await deployed(db_sessions, "selfie2anime", logged)
        live = await live_versions(db_sessions, three_versions)
        start = partial(LocalTorchServe.start, timeout=START_TIMEOUT_S, defaults=live)
        with running_torchserve(three_versions, tmp_path / "ts", start=start) as ts:
            assert defaults(ts) == expected
            versions = management(ts, "GET", "/models/selfie2anime/all")[1]
            assert sorted(m["modelVersion"] for m in versions) == ["1.0", "2.0", "3.0"]  # all there for rollbacks


async def test_the_engine_starts_with_the_logged_versions(
    three_versions: Path, db_sessions: Sessions, tmp_path: Path
) -> None:
    await deployed(db_sessions, "selfie2anime", "3.0")
    engine = EmbeddedEngine(three_versions, cache_dir=tmp_path / "cache")
    try:
        await Deployer(EmbeddedManagement(engine), db_sessions, three_versions).restore()
        assert {s.name: s.version for s in await engine.styles()} == {"selfie2anime": "3.0", "anime2selfie": "1.0"}
    finally:
        await engine.close()
