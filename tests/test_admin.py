"""Admin commands end to end: the real python-telegram-bot stack against the fake Bot API, the
embedded engine over real `.mar` files, a real database and, for /retrain, the real training worker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from fakes.telegram import FakeTelegram
from test_telegram import api, bot_settings, running_bot  # noqa: F401  (api: the fake Bot API fixture)
from torchserve_fixture import export_tiny_styles
from waiting import until

from bots import i18n, messages
from db.engine import create_engine, session_factory
from ops import announce, guard
from training.worker import TrainingWorker, WorkerConfig

if TYPE_CHECKING:
    from conftest import ReadUsage

torch.set_num_threads(1)
UNMEASURED = " " + guard.UNMEASURED.format(style="selfie2anime", version="2.0")  # tiny archives carry no quality.json
# What the admin commands say, not their 1 s deadline (tests/test_admin_deadlines.py): a slow database is waited for.
ADMIN, USER = 1, 5
PNG = b"\x89PNG\r\n\x1a\n"


@asynccontextmanager
async def admin_bot(api: FakeTelegram, store: Path, database_url: str) -> AsyncIterator[None]:
    """`python -m bots telegram` with user 1 as the only admin."""
    async with running_bot(api, bot_settings(api, store, database_url, admin_ids=[ADMIN], jobs_poll_s=0.2)):
        yield


async def ask(api: FakeTelegram, chat: int, text: str, method: str = "sendMessage") -> dict[str, str]:
    """Send a command and return the fields of the bot's next answer of that kind."""
    before = len(api.calls_to(method, chat))
    api.send_text(chat, text)
    calls = await api.wait_for(method, chat_id=chat, count=before + 1, timeout=120)
    return calls[before].fields


async def test_stats_refusal_privacy_and_forget(
    api: FakeTelegram, tiny_store: Path, db_url: str, face_jpeg: bytes, read_usage: ReadUsage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with admin_bot(api, tiny_store, db_url):
        await ask(api, USER, "/style selfie2anime")  # the user's row
        api.send_photo(USER, face_jpeg)
        await api.wait_for("sendPhoto", chat_id=USER)
        api.send_document(USER, b"%PDF-1.4\n", "cv.pdf", "application/pdf")  # after: one at a time
        await api.wait_for("sendMessage", chat_id=USER, count=2)  # after /style's answer
        async def logged() -> bool:  # the usage log is written in the background
            return len(await read_usage(db_url)) >= 2

        await until(logged, "two usage rows")
        assert [r.status for r in await read_usage(db_url)] == ["ok", "bad_input"]

        before = len(api.calls_to("sendPhoto", ADMIN))
        api.send_text(ADMIN, "/stats 7")
        [chart] = (await api.wait_for("sendPhoto", chat_id=ADMIN, count=before + 1))[before:]
        assert chart.files["photo"].data.startswith(PNG)
        caption = chart.fields["caption"]
        assert messages.STATS_TOTAL.format(days=7, requests=2, rate=0.5) in caption
        assert "selfie2anime: 2 requests, 50% ok, p50" in caption and "Top errors: bad_input 1" in caption
        assert (await ask(api, ADMIN, "/stats soon"))["text"] == messages.ADMIN_USAGE["stats"]

        with caplog.at_level(logging.WARNING, logger="bots.admin"):
            refused = await ask(api, USER, "/deploy selfie2anime 1.0")
            unknown = await ask(api, USER, "/frobnicate")
        assert refused["text"] == unknown["text"] == messages.HELP
        assert "refused /deploy from telegram:5" in caplog.text

        assert (await ask(api, USER, "/privacy"))["text"] == messages.PRIVACY
        forgotten = await ask(api, USER, "/forget")
        assert forgotten["text"] == messages.FORGOTTEN.format(count=3)  # the user's row and two requests
    assert [r for r in await read_usage(db_url) if r.platform_user_id == str(USER)] == []


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_models_deploy_rollback_and_a_retrain_announced(
    api: FakeTelegram, tiny_store: Path, db_url: str, face_jpeg: bytes, tiny_dataset: Path, tmp_path: Path,
    read_usage: ReadUsage, monkeypatch: pytest.MonkeyPatch,
) -> None:
    announce_once, rounds = announce.JobAnnouncer.announce_once, 0  # the announcer's polls for finished jobs, done

    async def counted(self: announce.JobAnnouncer) -> int:
        nonlocal rounds
        try:
            return await announce_once(self)
        finally:
            rounds += 1

    monkeypatch.setattr(announce.JobAnnouncer, "announce_once", counted)
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "selfie2anime").symlink_to(tiny_dataset)
    async with admin_bot(api, tiny_store, db_url):
        models = (await ask(api, ADMIN, "/models"))["text"]
        assert "selfie2anime (default 1.0)" in models and "1.0 * - never deployed" in models

        export_tiny_styles(tiny_store, "selfie2anime", "--version", "2.0", seed=1)
        deployed = (await ask(api, ADMIN, "/deploy selfie2anime 2.0"))["text"]
        assert deployed == messages.DEPLOYED.format(message="selfie2anime 2.0 is the default now (was 1.0)." + UNMEASURED)
        missing = (await ask(api, ADMIN, "/deploy selfie2anime 8.0"))["text"]
        assert missing.startswith("Not deployed, the old default keeps serving: There is no selfie2anime 8.0")
        models = (await ask(api, ADMIN, "/models"))["text"]
        assert "selfie2anime (default 2.0)" in models and "2.0 * - " in models and "by telegram:1" in models
        assert (await ask(api, ADMIN, "/rollback selfie2anime"))["text"].startswith("Rolled back: selfie2anime 1.0")

        queued = (await ask(api, ADMIN, "/retrain selfie2anime 2 from 1.0 deploy"))["text"]
        assert queued.startswith("Queued job #1: selfie2anime, 2 iterations, from 1.0.")
        assert (await ask(api, ADMIN, "/retrain selfie 2"))["text"].startswith("cannot split 'selfie'")
        assert (await ask(api, ADMIN, "/jobs"))["text"] == "#1 selfie2anime queued 0/2 from 1.0"

        engine = create_engine(db_url)
        try:
            config = WorkerConfig(datasets=datasets, model_store=tiny_store, runs_dir=tmp_path / "runs",
                                  heartbeat_every=1, threads=1, worker_id="test-worker")
            assert await TrainingWorker(session_factory(engine), config).run_once() == 1
        finally:
            await engine.dispose()
        before = len(api.calls_to("sendPhoto", ADMIN))
        [announced] = (await api.wait_for("sendPhoto", chat_id=ADMIN, count=before + 1))[before:]
        assert announced.files["photo"].data.startswith(b"\xff\xd8")  # the preview picture: before | 1.0 | 3.0
        assert "selfie2anime 3.0: not measured" in announced.fields["caption"]  # tiny data has no face to draw
        assert "anime2selfie 3.0: " in announced.fields["caption"]  # its scores against the live 1.0's
        assert announced.fields["caption"].startswith("Job #1 (selfie2anime) is done: selfie2anime 3.0, anime2selfie 3.0.")
        assert "Deployed: selfie2anime 3.0 is the default now (was 1.0)." in announced.fields["caption"]

        api.send_photo(USER, face_jpeg)
        await api.wait_for("sendPhoto", chat_id=USER)
        assert (await ask(api, ADMIN, "/cancel 1"))["text"].startswith(messages.JOB_CANCELLED.format(job="#1 selfie2anime done"))
        polled = rounds
        await until(lambda: rounds >= polled + 2, "a whole poll round after the cancel")  # none announces it again
        assert len(api.calls_to("sendPhoto", ADMIN)) == before + 1
    [served] = [r for r in await read_usage(db_url) if r.platform_user_id == str(USER)]
    assert served.model_version == "3.0"


async def test_an_admin_and_a_user_in_russian(api: FakeTelegram, tiny_store: Path, sqlite_db_url: str) -> None:
    ru = i18n.words("ru")
    api.languages[ADMIN] = api.languages[USER] = "ru"
    async with admin_bot(api, tiny_store, sqlite_db_url):
        usage = await ask(api, ADMIN, "/deploy")
        empty = await ask(api, ADMIN, "/stats 3")
        refused = await ask(api, USER, "/stats")
        privacy = await ask(api, USER, "/privacy")
        forgotten = await ask(api, USER, "/forget")
    assert usage["text"] == ru(messages.ADMIN_USAGE["deploy"]) != messages.ADMIN_USAGE["deploy"]
    assert empty["text"] == ru(messages.STATS_EMPTY, days=3) == "За последние 3 дн. запросов не было."
    assert refused["text"] == ru(messages.HELP)  # the answer to an unknown command, in their language
    assert privacy["text"] == ru(messages.PRIVACY) and forgotten["text"].startswith("Готово: я удалил всё")
