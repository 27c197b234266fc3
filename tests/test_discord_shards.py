"""Discord sharded: the bot identifies as the shards Discord recommends, or as its share of a fixed count, and
answers on every shard it runs (one gateway connection each)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from test_discord import answers, fake, jpeg, jpeg_size, running_bot  # noqa: F401  (the fixture)

from config import Settings
from fakes.discord import FakeDiscord


async def test_the_bot_runs_the_shards_discord_recommends(
    fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str  # noqa: F811
) -> None:
    async with running_bot(fake, bots_model_store, sqlite_db_url):
        assert fake.identify is not None and fake.identify["shard"] == [0, 1]  # shard 0 of the 1 recommended
    assert [c.route for c in fake.calls].count("gateway_bot") == 1


async def test_one_process_answers_on_each_of_its_shards(
    fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes  # noqa: F811
) -> None:
    fake.shards = 2  # Discord recommends two: the guild's events come on shard 1, DMs on shard 0
    async with running_bot(fake, bots_model_store, sqlite_db_url, chat_max_in_flight=4):
        await fake.ready(shards=2)
        in_guild = await fake.slash_command(71, "style", attachment=jpeg(fake, face_jpeg))
        in_dm = await fake.slash_command(72, "style", attachment=jpeg(fake, face_jpeg), dm=True)
        pictures = [(await answers(fake, i, "followup"))[0] for i in (in_guild, in_dm)]

    assert sorted(payload["shard"] for payload in fake.identified.values()) == [[0, 2], [1, 2]]
    sent = [(shard, event) for shard, event, _ in fake.dispatched]
    assert sent == [(1, "INTERACTION_CREATE"), (0, "INTERACTION_CREATE")]
    assert [jpeg_size(p) for p in pictures] == [(64, 64)] * 2  # each a drawn picture
    for interaction in (in_guild, in_dm):  # one deferral, one picture: answered once, by the shard that got it
        assert len(fake.calls_to("interaction_callback", token=interaction.token)) == 1
        assert len(fake.calls_to("followup", token=interaction.token)) == 1


async def test_a_process_runs_its_shards_of_a_fixed_count(
    fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str  # noqa: F811
) -> None:
    async with running_bot(fake, bots_model_store, sqlite_db_url, discord_shard_count=4, discord_shard_ids=[3]):
        assert fake.identify is not None and fake.identify["shard"] == [3, 4]
    assert "gateway_bot" not in [c.route for c in fake.calls]  # the count is given: Discord is not asked


def test_shard_ids_need_their_count() -> None:
    assert Settings(_env_file=None, discord_shard_count=4, discord_shard_ids="2,3").discord_shard_ids == [2, 3]
    for bad in ({"discord_shard_ids": "0"}, {"discord_shard_count": 2, "discord_shard_ids": "2"}):
        with pytest.raises(ValidationError, match="DISCORD_SHARD_IDS"):
            Settings(_env_file=None, **bad)
