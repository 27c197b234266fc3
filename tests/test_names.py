"""Names from users and admins (styles, pairs, versions): checked once, never echoed or stored unbounded,
never turned into paths. Over the real core, admin commands, CLI, worker planning and deployer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from sqlalchemy import select

from bots import messages
from bots.core import Attachment, Request
from bots.resources import SharedCore
from config import Settings
from db.engine import create_engine, session_factory
from db.models import TrainingJob, User
from styles import catalog
from ops.deploy import Deployer
from serving.engine import EmbeddedEngine
from ops.management import EmbeddedManagement
from training import cli, retrain

if TYPE_CHECKING:
    from conftest import ReadUsage

torch.set_num_threads(1)
ADMIN = 42
HUGE = "m" * 2**20
BAD_PAIRS = ["../../evil2x", "/etc/evil2x", "a2b/../../x", "evil2x\x00", "é2x" * 30, "", "x" * 65 + "2y"]
BAD_VERSIONS = ["../1.0", "1.0/..", "1..0", "", "1" * 33, "1.0\n"]


@pytest.mark.parametrize("name", BAD_PAIRS)
def test_bad_pairs_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a pair name"):
        catalog.split_pair(name)


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_bad_versions_are_refused(version: str) -> None:
    with pytest.raises(ValueError, match="not a version"):
        catalog.check_job("selfie2anime", version)


def test_good_names_pass() -> None:
    assert catalog.check_job("line_art2photo-hd", "2.1-rc1") == ("line_art2photo-hd", "photo-hd2line_art")
    assert catalog.check_version("10.0") == "10.0"
    assert catalog.shown("a\x00b" + "c" * 100) == "ab" + "c" * 37 + "…"


@pytest.fixture
def admin_settings(bots_model_store: Path, sqlite_db_url: str) -> Settings:
    return Settings(
        _env_file=None, model_store=bots_model_store, database_url=sqlite_db_url,
        output_size=64, admin_ids=[ADMIN],
    )


def ask(text: str, user: int = ADMIN, attachment: Attachment | None = None) -> Request:
    return Request(platform="telegram", user_id=str(user), chat_id="c", text=text, attachment=attachment)


async def test_unknown_style_names_are_cut_when_echoed_and_stored(
    admin_settings: Settings, read_usage: ReadUsage, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    shared = SharedCore(admin_settings)
    core = await shared.open()

    async def read() -> bytes:
        return face_jpeg

    try:
        switched = await core.handle(ask(f"/style {HUGE}", user=7))
        photo = await core.handle(ask(f"/style {HUGE}", user=7, attachment=Attachment("image/jpeg", None, read)))
    finally:
        await shared.close()
    cut = catalog.shown(HUGE)
    for reply in (switched, photo):
        assert reply.text.startswith(messages.UNKNOWN_STYLE.format(name=cut))
        assert len(reply.text) < 1000 and reply.image is None
    engine = create_engine(sqlite_db_url)
    async with session_factory(engine)() as session:
        assert list(await session.scalars(select(User.current_style))) == []
    await engine.dispose()
    rows = await read_usage(sqlite_db_url)
    assert [(r.style, r.status) for r in rows] == [("m" * 64, "bad_input")]


async def test_retrain_refuses_paths_in_chat(admin_settings: Settings, sqlite_db_url: str) -> None:
    shared = SharedCore(admin_settings)
    core = await shared.open()
    try:
        for pair in ("../../evil2x", "/tmp/evil2x"):
            reply = await core.handle(ask(f"/retrain {pair}"))
            assert reply.text.startswith(f"'{pair}' is not a pair name"), reply.text
        reply = await core.handle(ask("/retrain selfie2anime 5 from ../1.0"))
        assert reply.text.startswith("'../1.0' is not a version")
    finally:
        await shared.close()
    assert await queued_jobs(sqlite_db_url) == []


def test_retrain_refuses_paths_on_the_command_line(sqlite_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["../../evil2x"], ["/tmp/evil2x"], ["selfie2anime", "--from", "../1.0"]):
        assert cli.main(["enqueue", *args, "--database-url", sqlite_db_url]) == 2
        assert capsys.readouterr().err.startswith("error: '")
    assert asyncio.run(queued_jobs(sqlite_db_url)) == []


async def queued_jobs(url: str) -> list[TrainingJob]:
    engine = create_engine(url)
    async with session_factory(engine)() as session:
        found = list(await session.scalars(select(TrainingJob)))
    await engine.dispose()
    return found


def test_the_worker_refuses_a_bad_pair_already_queued(tmp_path: Path) -> None:
    """A job written before this check, or by another tool: the worker plans nothing outside its folders."""
    (tmp_path / "evil2x" / "trainA").mkdir(parents=True)  # what ../../evil2x would have reached
    (tmp_path / "evil2x" / "trainB").mkdir()
    datasets = tmp_path / "datasets" / "inner"
    datasets.mkdir(parents=True)
    for pair in ("../../evil2x", str(tmp_path / "evil2x")):
        with pytest.raises(retrain.JobError, match="not a pair name"):
            retrain.plan(pair=pair, iterations=1, from_version=None, datasets=datasets,
                         model_store=tmp_path / "store", runs_dir=tmp_path / "runs", run_name="job-1", chunk=1)


async def test_deployer_refuses_bad_names_without_logging_them(
    tiny_store: Path, sqlite_db_url: str, tmp_path: Path
) -> None:
    engine = create_engine(sqlite_db_url)
    stylizer = EmbeddedEngine(tiny_store, cache_dir=tmp_path / "cache")
    deployer = Deployer(EmbeddedManagement(stylizer), session_factory(engine), tiny_store)
    try:
        for style, version in [("../selfie2anime", "1.0"), ("selfie2anime", "../../1.0"), (HUGE, "1.0")]:
            outcome = await deployer.deploy(style, version, by="cli:test")
            assert not outcome.ok and len(outcome.message) < 200
        assert not (await deployer.rollback("x/../y", by="cli:test")).ok
        assert (await deployer.models())[0].default == "1.0"
    finally:
        await stylizer.close()
        await engine.dispose()
