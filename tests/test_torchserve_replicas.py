"""Deploys on two real TorchServe replicas listed in TORCHSERVE_MANAGEMENT_URL: a deploy reaches both, one
that the second refuses (its model store lacks the archive) leaves both as they were, and a replica restarted
on its own gets the deployed version back from the restore the bots run at start."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import Settings
from db.engine import create_engine, session_factory
from ops.deploy import Deployer
from ops.management import ReplicatedManagement, open_management
from serving.client import TorchServeClient
from serving.torchserve import LocalTorchServe
from torchserve_fixture import (
    START_TIMEOUT_S,
    export_tiny_styles,
    management,
    running_torchserve,
    wait_for_workers,
)

STYLE = "selfie2anime"
FACE = (Path(__file__).with_name("fixtures") / "grace_hopper_256.jpg").read_bytes()


@pytest.fixture
def stores(tmp_path: Path) -> list[Path]:
    """Each replica's own model store, holding selfie2anime 1.0 only (one worker per replica)."""
    first, second = tmp_path / "store0", tmp_path / "store1"
    export_tiny_styles(first, STYLE)
    (first / "anime2selfie.mar").unlink()
    shutil.copytree(first, second)
    return [first, second]


@pytest.fixture
def new_version(tmp_path: Path) -> Path:
    """selfie2anime 2.0, as a training job exports it; a test puts it into the stores once TorchServe runs
    (TorchServe loads every archive of its store at start)."""
    export_tiny_styles(tmp_path / "exported", STYLE, "--version", "2.0", seed=1)
    return tmp_path / "exported" / f"{STYLE}-2.0.mar"


@pytest.fixture
def replicas(stores: list[Path], tmp_path: Path) -> Iterator[list[LocalTorchServe]]:
    """Two TorchServes, each on TorchServe's own port layout (management one above inference)."""
    with ExitStack() as stack:
        started = [stack.enter_context(running_torchserve(store, tmp_path / f"ts{i}", consecutive=True))
                   for i, store in enumerate(stores)]
        for ts in started:
            wait_for_workers(ts, STYLE, 1, timeout=START_TIMEOUT_S)
        yield started


@pytest.fixture
async def deployer(replicas: list[LocalTorchServe], stores: list[Path], sqlite_db_url: str) -> AsyncIterator[Deployer]:
    """What /deploy runs with TORCHSERVE_MANAGEMENT_URL listing both replicas (TORCHSERVE_URL: a balancer,
    never called here)."""
    settings = Settings(_env_file=None, torchserve_url="http://127.0.0.1:9",
                        torchserve_management_url=",".join(ts.management_url for ts in replicas))
    manager = open_management(settings, stylizer=object())  # type: ignore[arg-type]  (not the embedded engine)
    assert isinstance(manager, ReplicatedManagement)
    engine = create_engine(sqlite_db_url)
    yield Deployer(manager, session_factory(engine), stores[0])
    await manager.close()
    await engine.dispose()


async def served(ts: LocalTorchServe) -> str:
    """The version that answers a prediction without one on this replica's own inference API."""
    client = TorchServeClient(ts.inference_url)
    try:
        return (await client.stylize(STYLE, FACE, size=32)).version
    finally:
        await client.close()


def registered(ts: LocalTorchServe) -> set[str]:
    status, body = management(ts, "GET", f"/models/{STYLE}/all")
    assert status == 200, body
    return {m["modelVersion"] for m in body}


async def test_a_deploy_reaches_both_replicas_or_neither_and_a_restart_gets_it_back(
    replicas: list[LocalTorchServe], stores: list[Path], new_version: Path, deployer: Deployer
) -> None:
    shutil.copy(new_version, stores[0])
    refused = await deployer.deploy(STYLE, "2.0", by="telegram:1")  # the second replica's store lacks it
    assert not refused.ok
    assert replicas[1].management_url in refused.message and "back as it was" in refused.message
    assert [await served(ts) for ts in replicas] == ["1.0", "1.0"]
    assert [registered(ts) for ts in replicas] == [{"1.0"}, {"1.0"}]  # 2.0 dropped where it was registered

    shutil.copy(new_version, stores[1])
    deployed = await deployer.deploy(STYLE, "2.0", by="telegram:1")
    assert deployed.ok, deployed.message
    assert [await served(ts) for ts in replicas] == ["2.0", "2.0"]
    assert [registered(ts) for ts in replicas] == [{"1.0", "2.0"}] * 2  # 1.0 stays for a rollback

    replicas[1].stop()  # restarted on its own, it serves its shipped version again
    replicas[1].start(START_TIMEOUT_S)
    wait_for_workers(replicas[1], STYLE, 1, timeout=START_TIMEOUT_S)
    assert [await served(ts) for ts in replicas] == ["2.0", "1.0"]
    assert [s.default for s in await deployer.management.versions()] == [None]  # they differ
    await deployer.restore()  # what the bots run at start (ops.deploy.open_deployer)
    assert [await served(ts) for ts in replicas] == ["2.0", "2.0"]
