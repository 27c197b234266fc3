"""A new version in the model store (a retrain's export) does not serve until an admin deploys it,
and the first rollback returns to the version that shipped. Embedded engine, real archives,
deployments logged in SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from torchserve_fixture import export_tiny_styles

from ops import guard
from ops.deploy import Deployer
from serving.engine import EmbeddedEngine
from ops.management import EmbeddedManagement

torch.set_num_threads(1)
UNMEASURED = " " + guard.UNMEASURED.format(style="selfie2anime", version="2.0")  # tiny archives carry no quality.json
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def store_with_a_retrain(tiny_store: Path) -> Path:
    """selfie2anime/anime2selfie 1.0 (shipped) and 2.0 (as `/retrain` exports it), never deployed."""
    export_tiny_styles(tiny_store, "selfie2anime", "--version", "2.0", seed=1)
    return tiny_store


async def serving_versions(store: Path, cache: Path, sessions: Sessions) -> tuple[dict[str, str], Deployer, EmbeddedEngine]:
    """A fresh process: a new engine, the logged defaults restored, then what each style serves."""
    engine = EmbeddedEngine(store, cache_dir=cache)
    deployer = Deployer(EmbeddedManagement(engine), sessions, store)
    await deployer.restore()
    return {s.name: s.version for s in await engine.styles()}, deployer, engine


async def test_a_new_version_waits_for_a_deploy(
    store_with_a_retrain: Path, db_sessions: Sessions, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    served, deployer, engine = await serving_versions(store_with_a_retrain, cache, db_sessions)
    try:
        assert served == {"selfie2anime": "1.0", "anime2selfie": "1.0"}  # 2.0 is in the store, not live
        deployed = await deployer.deploy("selfie2anime", "2.0", by="telegram:1")
        assert deployed.ok and deployed.message == "selfie2anime 2.0 is the default now (was 1.0)." + UNMEASURED
    finally:
        await engine.close()

    served, deployer, engine = await serving_versions(store_with_a_retrain, cache, db_sessions)  # a restart
    try:
        assert served == {"selfie2anime": "2.0", "anime2selfie": "1.0"}  # as deployed, and only that
        back = await deployer.rollback("selfie2anime", by="telegram:1")
        assert back.ok and back.message == "selfie2anime 1.0 is the default now (was 2.0)."
        assert {s.name: s.version for s in await engine.styles()}["selfie2anime"] == "1.0"
    finally:
        await engine.close()
