"""The bundled archives carry what the evaluator found, and an untrained generator of a bundled style
is refused on deploy with the reason, then deployed with `force`. The second needs the datasets
(DATASETS_DIR, research use only: never in the repository) and skips without them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config import get_settings
from ops.deploy import Deployer
from ops.management import EmbeddedManagement
from serving.engine import EmbeddedEngine
from styles.archive import model_config, read_archive, write_archive
from styles.payload.networks import ResnetGenerator
from styles.quality import read_quality
from training.evaluate import evaluate_archive
from training.judge_net import JUDGES

torch.set_num_threads(1)
BUNDLED = Path(__file__).resolve().parents[1] / "model_store"


@pytest.mark.parametrize("archive", sorted(BUNDLED.glob("*.mar")), ids=lambda p: p.stem)
def test_every_bundled_archive_was_measured(archive: Path) -> None:
    quality = read_quality(archive)
    assert quality is not None, f"python -m training evaluate {archive.relative_to(BUNDLED.parent)} --datasets DIR"
    assert (JUDGES / f"{quality.pair}.pt").is_file() and quality.drawn.value > 0.9


def untrained_copy(shipped: Path, store: Path, version: str) -> Path:
    """The same style and network, random weights: what a failed retrain could export."""
    archive = read_archive(shipped)
    h = archive.handler
    torch.manual_seed(0)
    generator = ResnetGenerator(**h["arch"])
    config = model_config(h["arch"], h["img_size"], archive.entry, workers=1, batch_size=1, max_batch_delay=50,
                          response_timeout=120, inference="eager", draw_size=h.get("draw_size"))
    return write_archive(store, archive.name, version, generator.state_dict(), config)


async def test_an_untrained_cat2dog_is_refused_then_forced(
    tmp_path: Path, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    datasets = get_settings().datasets_dir
    if datasets is None or not (datasets / "cat2dog").is_dir():
        pytest.skip("DATASETS_DIR with cat2dog/ is not set")
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(BUNDLED / "cat2dog.mar", store)
    broken = untrained_copy(store / "cat2dog.mar", store, "2.0")
    measured = evaluate_archive(broken, datasets)
    assert measured.split_id == read_quality(store / "cat2dog.mar").split_id  # the same pictures, the same judge

    engine = EmbeddedEngine(store, cache_dir=tmp_path / "cache")
    deployer = Deployer(EmbeddedManagement(engine), db_sessions, store)
    try:
        refused = await deployer.deploy("cat2dog", "2.0", by="cli:test")
        assert not refused.ok and "measures worse than the live 1.0" in refused.message, refused.message
        assert "worse by" in refused.message
        forced = await deployer.deploy("cat2dog", "2.0", by="cli:test", force=True)
        assert forced.ok and "Deployed although it measures worse than 1.0" in forced.message
    finally:
        await engine.close()
