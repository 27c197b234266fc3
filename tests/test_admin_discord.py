"""Admin and privacy slash commands on the real discord.py stack against the fake Discord,
and a finished training job announced in the channel it was asked from."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from fakes.discord import FakeDiscord
from PIL import Image
from test_discord import fake, running_bot  # noqa: F401  (fake: the fake Discord fixture)
from waiting import until

from bots import messages
from db import jobs
from db.engine import create_engine, session_factory

if TYPE_CHECKING:
    from conftest import ReadUsage

torch.set_num_threads(1)
# What the admin commands say, not their 1 s deadline (tests/test_admin_deadlines.py): a slow database is waited for.
ADMIN, USER = 7, 8
PNG = b"\x89PNG\r\n\x1a\n"
ADMINISTRATOR = 1 << 3  # Discord's permission bit


async def test_admin_commands_refusals_and_an_announcement(
    fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str, tmp_path: Path, face_jpeg: bytes,
    read_usage: ReadUsage, caplog: pytest.LogCaptureFixture,
) -> None:
    grid = tmp_path / "grid.png"  # what a training job leaves as its final sample grid
    Image.new("RGB", (8, 8)).save(grid)
    async with running_bot(fake, bots_model_store, sqlite_db_url, admin_ids=[ADMIN], jobs_poll_s=0.2):
        photo = await fake.slash_command(USER, "style", attachment=fake.attachment(face_jpeg, "me.jpg", "image/jpeg"))
        await fake.wait_for("followup", token=photo.token)
        async def logged() -> bool:  # the usage log is written in the background
            return bool(await read_usage(sqlite_db_url))

        await until(logged, "a usage row")
        assert [r.status for r in await read_usage(sqlite_db_url)] == ["ok"]

        stats = await fake.slash_command(ADMIN, "stats", days=7)
        [chart] = await fake.wait_for("followup", token=stats.token)
        assert chart.ephemeral and chart.files[0].data.startswith(PNG)
        assert "selfie2anime: 1 requests, 100% ok" in chart.json["content"]

        with caplog.at_level(logging.WARNING, logger="bots.admin"):
            refused = await fake.slash_command(USER, "deploy", style="selfie2anime", version="1.0")
            [answer] = await fake.wait_for("followup", token=refused.token)
        assert answer.ephemeral and answer.json["content"] == messages.HELP
        assert f"refused /deploy from discord:{USER}" in caplog.text

        privacy = await fake.slash_command(USER, "privacy")
        [told] = await fake.wait_for("interaction_callback", token=privacy.token)
        assert told.ephemeral and told.json["data"]["content"] == messages.PRIVACY
        forget = await fake.slash_command(USER, "forget")
        [forgotten] = await fake.wait_for("interaction_callback", token=forget.token)
        assert forgotten.ephemeral and forgotten.json["data"]["content"] == messages.FORGOTTEN.format(count=1)

        engine = create_engine(sqlite_db_url)
        try:
            async with session_factory(engine)() as session:
                job = await jobs.enqueue(
                    session, pair="selfie2anime", iterations=2, requested_by=f"discord:{ADMIN}",
                    notify_platform="discord", notify_chat_id=str(fake.channel_id),
                )
                await jobs.claim(session, worker_id="w")
                await jobs.finish(session, job_id=job.id, worker_id="w", result={
                    "versions": {"selfie2anime": "2.0", "anime2selfie": "2.0"}, "samples": str(grid),
                })
        finally:
            await engine.dispose()
        [post] = await fake.wait_for("channel_message", channel_id=str(fake.channel_id))
    assert post.json["content"] == messages.JOB_DONE.format(
        id=job.id, pair="selfie2anime", versions="selfie2anime 2.0, anime2selfie 2.0"
    )
    assert post.files[0].data == grid.read_bytes()
    [sync] = fake.calls_to("sync")
    hidden = {c["name"]: c.get("default_member_permissions") for c in sync.json}
    assert hidden["stats"] == hidden["deploy"] == hidden["cancel"] == ADMINISTRATOR  # only admins see them
    assert hidden["privacy"] is None and hidden["style"] is None
