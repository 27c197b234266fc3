"""Deploy, roll back and a broken archive, on the real TorchServe and on the embedded engine."""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from torchserve_fixture import export_tiny_styles, management, running_torchserve, wait_for_workers

from db.engine import create_engine, session_factory
from db.models import Deployment
from serving.api import Stylizer
from serving.client import TorchServeClient
from ops.deploy import BASELINE_BY, Deployer
from serving.engine import EmbeddedEngine
from ops.management import Management, EmbeddedManagement, TorchServeManagement
from styles.archive import MANIFEST
from serving.torchserve import LocalTorchServe

torch.set_num_threads(1)
FACE = (Path(__file__).with_name("fixtures") / "obama_256.jpg").read_bytes()


def broken_copy(good: Path, version: str) -> Path:
    """The same style at a new version whose weights are garbage: its handler cannot initialise."""
    target = good.with_name(f"{good.stem}-{version}-broken.mar")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == MANIFEST:
                manifest = json.loads(data)
                manifest["model"]["modelVersion"] = version
                data = json.dumps(manifest).encode()
            elif item.filename == "generator.pt":
                data = b"not a state dict"
            dst.writestr(item, data)
    return target


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """selfie2anime 1.0 only, as the runtime first loads it; 2.0 and a broken 3.0 come later.

    One store per test: each runtime must start from what was shipped, not from
    the versions another runtime's test added.
    """
    store = tmp_path / "model_store"
    export_tiny_styles(store, "selfie2anime")
    return store


def add_versions(store: Path) -> None:
    """What a training job would add to the model store while the runtime serves 1.0."""
    export_tiny_styles(store, "selfie2anime", "--version", "2.0", seed=1)
    broken_copy(store / "selfie2anime.mar", "3.0")


@pytest.fixture
def torchserve(store: Path, tmp_path: Path) -> Iterator[LocalTorchServe]:
    with running_torchserve(store, tmp_path / "torchserve") as ts:
        wait_for_workers(ts, "selfie2anime", 1)
        yield ts


@pytest.fixture
async def sessions(sqlite_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The deployment log (both database backends are tested in test_db_deployments)."""
    engine = create_engine(sqlite_db_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def runtime(
    request: pytest.FixtureRequest, store: Path, tmp_path: Path
) -> AsyncIterator[tuple[Stylizer, Management]]:
    """(what the bots draw with, what the admin deploys with) over the same runtime."""
    if request.param == "embedded":
        engine = EmbeddedEngine(store, cache_dir=tmp_path / "cache")
        yield engine, EmbeddedManagement(engine)
        await engine.close()
    else:
        ts: LocalTorchServe = request.getfixturevalue("torchserve")
        client = TorchServeClient(ts.inference_url, management_urls=[ts.management_url])
        manager = TorchServeManagement(ts.inference_url, ts.management_url)
        yield client, manager
        await manager.close()
        await client.close()


def registered_versions(request: pytest.FixtureRequest, manager: Management) -> set[str] | None:
    """The versions TorchServe has registered for selfie2anime (None on the embedded engine, which registers none)."""
    if not isinstance(manager, TorchServeManagement):
        return None
    status, body = management(request.getfixturevalue("torchserve"), "GET", "/models/selfie2anime/all")
    assert status == 200, body
    return {m["modelVersion"] for m in body}


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["embedded", "torchserve"], indirect=True)
async def test_deploy_a_broken_archive_and_roll_back(
    runtime: tuple[Stylizer, Management], store: Path, sessions: async_sessionmaker[AsyncSession],
    request: pytest.FixtureRequest,
) -> None:
    stylizer, manager = runtime
    assert {s.name: s.version for s in await stylizer.styles()} == {"selfie2anime": "1.0", "anime2selfie": "1.0"}
    assert (await stylizer.stylize("selfie2anime", FACE, size=32)).version == "1.0"
    add_versions(store)
    changes: list[str] = []
    deployer = Deployer(manager, sessions, store, on_change=lambda: changes.append("refresh"))
    assert (await stylizer.stylize("selfie2anime", FACE, size=32)).version == "1.0"  # not deployed yet

    deployed = await deployer.deploy("selfie2anime", "2.0", by="telegram:1")
    assert deployed.ok, deployed.message
    assert (await stylizer.stylize("selfie2anime", FACE, size=32)).version == "2.0"
    assert {s.name: s.version for s in await stylizer.styles()}["selfie2anime"] == "2.0"

    broken = await deployer.deploy("selfie2anime", "3.0", by="telegram:1")
    assert not broken.ok and "3.0" in broken.message
    assert registered_versions(request, manager) in (None, {"1.0", "2.0"})  # the failed version was unregistered
    assert (await stylizer.stylize("selfie2anime", FACE, size=32)).version == "2.0"  # still serving

    missing = await deployer.deploy("selfie2anime", "9.0", by="telegram:1")
    assert not missing.ok and "no selfie2anime 9.0" in missing.message

    rolled = await deployer.rollback("selfie2anime", by="discord:2")
    assert rolled.ok, rolled.message
    assert (await stylizer.stylize("selfie2anime", FACE, size=32)).version == "1.0"
    assert not (await deployer.rollback("selfie2anime", by="discord:2")).ok  # nothing before 1.0

    report = {r.style: r for r in await deployer.models()}["selfie2anime"]
    assert report.default == "1.0"
    by_version = {v.version: v.deployed_by for v in report.versions}
    assert by_version["1.0"] == "discord:2" and by_version["2.0"] == "telegram:1"
    async with sessions() as session:
        rows = list(await session.scalars(select(Deployment).order_by(Deployment.id)))
    assert [(r.version, r.action, r.ok, r.deployed_by) for r in rows] == [
        ("1.0", "deploy", True, BASELINE_BY),
        ("2.0", "deploy", True, "telegram:1"),
        ("3.0", "deploy", False, "telegram:1"),
        ("9.0", "deploy", False, "telegram:1"),
        ("1.0", "rollback", True, "discord:2"),
    ]
    assert {r.runtime for r in rows} == {manager.runtime}
    assert changes == ["refresh", "refresh"]
