"""The evaluator on tiny archives and data, and deploys guarded by what it wrote: a version worse
than the live one by more than the spread is refused, `force` overrides, a better one deploys,
and every decision is in the deployment log. Real archives (exported), so the full lane only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_quality import quality
from torchserve_fixture import export_tiny_styles

from db.models import Deployment
from ops.deploy import Deployer
from ops.management import EmbeddedManagement
from serving.engine import EmbeddedEngine
from styles.archive import find
from styles.quality import read_quality, write_quality
from training.evaluate import evaluate_archive
from training.judge import train_judge
from training.judge_net import judge_path, save_judge

torch.set_num_threads(1)
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def tiny_pair(tiny_dataset: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(datasets root with cat2dog/ = the tiny dataset, a judge folder with its judge, a store with cat2dog 1.0)."""
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "cat2dog").symlink_to(tiny_dataset)
    judges = tmp_path / "judges"
    net, meta = train_judge(datasets / "cat2dog", steps=20, per_domain=4, seed=0, lr=2e-3)
    save_judge(net, meta, judge_path("cat2dog", judges))
    store = tmp_path / "model_store"
    export_tiny_styles(store, "cat2dog")
    return datasets, judges, store


def test_the_evaluator_is_stable_within_its_spread(tiny_pair: tuple[Path, Path, Path]) -> None:
    datasets, judges, store = tiny_pair
    archive = store / "cat2dog.mar"
    first = evaluate_archive(archive, datasets, judges=judges)
    assert read_quality(archive) == first
    assert (first.pair, first.split, first.offered, first.drawn.value) == ("cat2dog", "testA", 5, 1.0)
    second = evaluate_archive(archive, datasets, judges=judges)
    assert second.split_id == first.split_id
    for name in ("judged", "kid", "sharpness"):
        a, b = getattr(first, name), getattr(second, name)
        assert abs(a.value - b.value) <= max(a.spread, 1e-9), name
    zebra = evaluate_archive(store / "dog2cat.mar", datasets, judges=judges)
    assert zebra.split == "testB"  # the other direction draws the other test split


@pytest.fixture
def versions(tiny_store: Path) -> Path:
    """selfie2anime 1.0 (live, measured), 2.0 broken, 3.0 better, 4.0 never measured."""
    for seed, version in enumerate(("2.0", "3.0", "4.0"), start=1):
        export_tiny_styles(tiny_store, "selfie2anime", "--version", version, seed=seed)
    figures = {"1.0": quality(), "2.0": quality(judged=0.1, kid100=150.0), "3.0": quality(judged=0.95)}
    for version, measured in figures.items():
        write_quality(find(tiny_store, "selfie2anime", version).path, replace(measured, pair="selfie2anime"))
    return tiny_store


async def test_deploys_are_guarded_by_quality(versions: Path, db_sessions: Sessions, tmp_path: Path) -> None:
    engine = EmbeddedEngine(versions, cache_dir=tmp_path / "cache")
    deployer = Deployer(EmbeddedManagement(engine), db_sessions, versions)
    try:
        refused = await deployer.deploy("selfie2anime", "2.0", by="telegram:1")
        assert not refused.ok
        assert "measures worse than the live 1.0" in refused.message
        assert "judged 0.10 vs 0.90 (worse by 0.80" in refused.message
        assert "force" in refused.message
        assert {s.name: s.version for s in await engine.styles()}["selfie2anime"] == "1.0"

        forced = await deployer.deploy("selfie2anime", "2.0", by="telegram:1", force=True)
        assert forced.ok and "Deployed although it measures worse than 1.0" in forced.message

        better = await deployer.deploy("selfie2anime", "3.0", by="telegram:1")  # against 2.0, the live one now
        assert better.ok and better.message == "selfie2anime 3.0 is the default now (was 2.0)."

        unmeasured = await deployer.deploy("selfie2anime", "4.0", by="telegram:1")
        assert unmeasured.ok and "was never measured" in unmeasured.message
    finally:
        await engine.close()
    async with db_sessions() as session:
        rows = (await session.scalars(select(Deployment).order_by(Deployment.id))).all()
    logged = [(r.version, r.ok, r.guard) for r in rows if r.deployed_by != "toonbot"]
    assert logged == [("2.0", False, "refused"), ("2.0", True, "forced"), ("3.0", True, "passed"),
                      ("4.0", True, "unmeasured")]
    forced_row = next(r for r in rows if r.guard == "forced")
    assert forced_row.figures["worse"] and forced_row.figures["live"]["judged"]["value"] == 0.9
