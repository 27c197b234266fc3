"""End to end: the real discord.py client, the real embedded engine, a real database,
and a fake Discord (REST API, gateway, attachment CDN) on 127.0.0.1 standing in for Discord."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord as discord_py
import pytest
import torch
from PIL import Image

from bots import discord, i18n, messages, resources
from bots.discord import answers as discord_answers
from bots.core import Core, Request
from bots.resources import SharedCore
from config import Settings
from fakes.discord import (
    ANSWER_WITHIN_S,
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    MESSAGE_COMMAND,
    MESSAGE_CONTENT,
    Call,
    FakeDiscord,
    Interaction,
)
from fakes.stylizer import MemoryStylizer
from fakes.telegram import FakeTelegram
from media import gif_frames, make_gif, make_mp4, probe
from styles.payload.framing import NO_FACE
from waiting import HANG_S, until

if TYPE_CHECKING:
    from conftest import ReadUsage

FIXTURES = Path(__file__).with_name("fixtures")
PDF = b"%PDF-1.4\n%%EOF\n"
# Gateway intents (Discord's bit numbers): what the bot asks for, and the privileged one it needs not.
GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES = 1 << 0, 1 << 9, 1 << 12

torch.set_num_threads(1)


def jpeg_size(call: Call) -> tuple[int, int]:
    """The size of the one file the bot uploaded; fails unless it is a JPEG."""
    [upload] = call.files
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.format == "JPEG"
        return image.size


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeDiscord]:
    """The fake Discord, its 3 s for an interaction's first answer widened unless that deadline is the
    test's subject (`@pytest.mark.deadline`): on a loaded machine a bot that defers at once can miss it."""
    within = ANSWER_WITHIN_S if request.node.get_closest_marker("deadline") else HANG_S
    async with FakeDiscord(answer_within_s=within) as fake:
        yield fake
    assert fake.unknown == [], f"the bot called routes the fake lacks: {fake.unknown}"
    assert fake.refused == [], f"Discord would have refused: {fake.refused}"


@asynccontextmanager
async def running_bot(
    fake: FakeDiscord, model_store: Path, database_url: str, **extra: Any
) -> AsyncIterator[None]:
    """The bot as `python -m bots discord` runs it, pointed at the fake by DISCORD_API_URL/GATEWAY_URL."""
    settings = Settings(
        _env_file=None,
        discord_token=fake.token,
        discord_api_url=fake.api_url,
        discord_gateway_url=fake.gateway_url,
        model_store=model_store,
        database_url=database_url,
        output_size=64,
        **extra,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(discord.serve(settings, SharedCore(settings), stop))
    ready = asyncio.create_task(fake.ready())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():  # it stopped before identifying: show why
        ready.cancel()
        await task
    await ready  # raises if the bot never identified
    try:
        yield
    finally:
        stop.set()
        await task  # leaves the gateway, flushes the usage log, closes the engine
    assert discord_py.http.Route.BASE == "https://discord.com/api/v10"  # put back after the run


async def answers(
    fake: FakeDiscord, interaction: Interaction, route: str = "interaction_callback"
) -> list[Call]:
    """What the bot has sent in answer to `interaction` by `route`, once it has sent something."""
    return await fake.wait_for(route, token=interaction.token)


def jpeg(fake: FakeDiscord, data: bytes) -> dict[str, Any]:
    """A photo the user uploads."""
    return fake.attachment(data, "me.jpg", "image/jpeg")


async def test_slash_style_defers_then_sends_the_picture(
    read_usage: ReadUsage, fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    async with running_bot(  # a server's share big enough that no refusal waits for its turn
        fake, bots_model_store, sqlite_db_url, discord_dev_guild=fake.guild_id, max_upload_bytes=2**20,
        chat_max_in_flight=8,
    ):
        typing = await fake.autocomplete(11, "style", "style", "to anime")
        everything = await fake.autocomplete(11, "mystyle", "name", "")
        face = await fake.slash_command(11, "style", attachment=jpeg(fake, face_jpeg))
        pdf_file = fake.attachment(PDF, "cv.pdf", "application/pdf")
        pdf = await fake.slash_command(12, "style", attachment=pdf_file)
        huge_file = fake.attachment(face_jpeg, "huge.png", "image/png", size=5 * 2**20)
        huge = await fake.slash_command(13, "style", attachment=huge_file)
        unknown = await fake.slash_command(14, "style", attachment=jpeg(fake, face_jpeg), style="van_gogh")
        compared = await fake.slash_command(15, "style", attachment=jpeg(fake, face_jpeg), compare=True)
        [typed_choices] = await answers(fake, typing)
        [all_choices] = await answers(fake, everything)
        [deferral] = await answers(fake, face)
        [picture] = await answers(fake, face, "followup")
        [pdf_refusal] = await answers(fake, pdf)
        [huge_refusal] = await answers(fake, huge)
        [unknown_refusal] = await answers(fake, unknown)
        [before_and_after] = await answers(fake, compared, "followup")

    [sync] = fake.calls_to("sync", guild_id=str(fake.guild_id))  # development: one server, at once
    commands = {c["name"]: c for c in sync.json}
    assert sorted(commands) == ["Restyle", "forget", "help", "language", "mystyle", "privacy", "style", "styles"]
    assert commands["Restyle"]["type"] == MESSAGE_COMMAND  # in a message's Apps menu
    # Names stay English; descriptions come in every Discord language we speak.
    assert "name_localizations" not in commands["style"] or not commands["style"]["name_localizations"]
    described = commands["style"]["description_localizations"]
    assert described["ja"] == "写真・GIF・短い MP4 を描き直す" and described["pt-BR"] and described["zh-CN"]
    assert set(described) >= {"ru", "es-ES", "es-419", "pt-BR", "ja", "zh-CN"} and "en-US" not in described
    image_described = commands["style"]["options"][0]["description_localizations"]
    assert image_described["ru"] == "Фото, GIF или MP4, которое нужно перерисовать"
    image, style, compare = commands["style"]["options"]
    assert (image["name"], image["type"], image["required"]) == ("image", 11, True)
    assert (style["name"], style["type"], style["required"]) == ("style", 3, False)
    assert (compare["name"], compare["type"], compare["required"]) == ("compare", 5, False)
    assert style["autocomplete"]
    assert fake.identify is not None and fake.identify["token"] == fake.token
    intents = fake.identify["intents"]
    assert intents & (GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES) and not intents & MESSAGE_CONTENT

    assert typed_choices.json["type"] == AUTOCOMPLETE_RESULT
    assert typed_choices.json["data"]["choices"] == [{"name": "Selfie to anime", "value": "selfie2anime"}]
    assert [c["value"] for c in all_choices.json["data"]["choices"]] == ["anime2selfie", "selfie2anime"]

    assert deferral.json["type"] == DEFERRED_CHANNEL_MESSAGE and not deferral.ephemeral
    assert jpeg_size(picture) == (64, 64)
    assert picture.files[0].filename == "toonbot.jpg"
    assert picture.json["content"] == "Selfie to anime" and not picture.ephemeral
    assert jpeg_size(before_and_after) == (128, 64)  # the original beside the result

    for refusal, words in [
        (pdf_refusal, messages.NOT_AN_IMAGE),
        (huge_refusal, messages.TOO_BIG.format(limit_mb=1)),
        (unknown_refusal, messages.UNKNOWN_STYLE.format(name="van_gogh")),
    ]:
        assert refusal.json["type"] == CHANNEL_MESSAGE and refusal.ephemeral
        assert refusal.json["data"]["content"].startswith(words)
    assert pdf_file["id"] not in fake.downloads and huge_file["id"] not in fake.downloads  # refused unseen
    assert fake.calls_to("followup", token=pdf.token) == []  # never deferred

    rows = await read_usage(sqlite_db_url)
    assert sorted((r.platform_user_id, r.status) for r in rows) == [
        ("11", "ok"), ("12", "bad_input"), ("13", "bad_input"), ("14", "bad_input"), ("15", "ok")
    ]
    assert {(r.platform, r.chat_id) for r in rows} == {("discord", str(fake.channel_id))}


async def test_errors_after_deferring_are_private_and_survived(
    read_usage: ReadUsage, fake: FakeDiscord, engine_model_store: Path, sqlite_db_url: str, face_jpeg: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cat_jpeg = (FIXTURES / "chelsea_256.jpg").read_bytes()  # public domain; no face to find
    async with running_bot(fake, engine_model_store, sqlite_db_url):
        cat = await fake.slash_command(21, "style", attachment=jpeg(fake, cat_jpeg))
        [no_face] = await answers(fake, cat, "followup")
        gone_file = jpeg(fake, face_jpeg)
        fake.forget_attachments()  # the download will 404, as an expired CDN link does
        gone = await fake.slash_command(22, "style", attachment=gone_file)
        [apology] = await answers(fake, gone, "followup")
        await fake.send_message(23, attachments=[gone_file])
        [dm_apology] = await fake.wait_for("channel_message", channel_id="23")
        again = await fake.slash_command(22, "style", attachment=jpeg(fake, face_jpeg))
        [picture] = await answers(fake, again, "followup")  # still serving

    for interaction, followup, words in [(cat, no_face, NO_FACE), (gone, apology, messages.ERROR)]:
        [deferral] = fake.calls_to("interaction_callback", token=interaction.token)
        assert deferral.json["type"] == DEFERRED_CHANNEL_MESSAGE and not deferral.ephemeral
        # Only the user sees the words: the fake applies Discord's rule that the first follow-up
        # takes the place (and visibility) of a pending public "thinking...", so the bot removes that first.
        assert followup.json["content"] == words and followup.ephemeral and followup.files == []
        assert fake.calls_to("delete_original", token=interaction.token)
    assert dm_apology.json["content"] == messages.ERROR
    assert jpeg_size(picture) == (64, 64)
    failures = [r.getMessage() for r in caplog.records if r.exc_info and r.name == "bots.discord"]
    assert failures == ["/style failed", "on_message failed"]
    assert [r.status for r in await read_usage(sqlite_db_url)] == ["no_face", "error", "error", "ok"]


async def test_dms_and_mentions_with_an_image(
    read_usage: ReadUsage, fake: FakeDiscord, bots_model_store: Path, db_url: str, face_jpeg: bytes
) -> None:
    async with running_bot(fake, bots_model_store, db_url):
        chatter = await fake.send_message(
            31, "nice pic", attachments=[fake.attachment(face_jpeg, "a.jpg", "image/jpeg")], dm=False
        )
        dm = await fake.send_message(
            31, attachments=[fake.attachment(face_jpeg, "selfie.jpg", "image/jpeg")]
        )
        [dm_reply] = await fake.wait_for("channel_message", channel_id="31")
        mention = await fake.send_message(
            32, "/style anime2selfie", dm=False, mention_bot=True,
            attachments=[fake.attachment(PDF, "notes.txt", "text/plain"),  # the image is picked
                         fake.attachment(face_jpeg, "selfie.jpg", "image/jpeg")],
        )
        [mention_reply] = await fake.wait_for("channel_message", channel_id=str(fake.channel_id))
        await fake.send_message(33, "hello")
        pdf_file = fake.attachment(PDF, "cv.pdf", None)  # Discord could not tell the type
        await fake.send_message(34, attachments=[pdf_file])
        [text_reply] = await fake.wait_for("channel_message", channel_id="33")
        [pdf_reply] = await fake.wait_for("channel_message", channel_id="34")

    [sync] = fake.calls_to("sync")
    assert "guild_id" not in sync.params  # no DISCORD_DEV_GUILD: global commands
    assert jpeg_size(dm_reply) == (64, 64)
    assert dm_reply.json["content"] == "Selfie to anime"
    assert dm_reply.json["message_reference"]["message_id"] == int(dm["id"])
    assert fake.calls_to("typing", channel_id="31")  # "toonbot is typing..." while it draws
    assert jpeg_size(mention_reply) == (64, 64)
    assert mention_reply.json["content"] == "Anime to selfie"  # the mention's text picked the style
    assert mention_reply.json["message_reference"]["message_id"] == int(mention["id"])
    replied_to = {c.json["message_reference"]["message_id"] for c in fake.calls_to("channel_message")}
    assert int(chatter["id"]) not in replied_to  # a guild message without a mention is not for us
    assert text_reply.json["content"] == messages.NOT_A_COMMAND
    assert pdf_reply.json["content"] == messages.NOT_AN_IMAGE  # the decoder judged the bytes
    rows = await read_usage(db_url)
    assert sorted((r.platform, r.platform_user_id, r.style, r.status) for r in rows) == [
        ("discord", "31", "selfie2anime", "ok"),
        ("discord", "32", "anime2selfie", "ok"),
        ("discord", "34", "selfie2anime", "bad_input"),
    ]


async def test_mystyle_styles_and_help(
    fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    async with running_bot(fake, bots_model_store, sqlite_db_url):
        [chosen] = await answers(fake, await fake.slash_command(41, "mystyle", name="anime2selfie"))
        [listing] = await answers(fake, await fake.slash_command(41, "styles"))
        [help_text] = await answers(fake, await fake.slash_command(41, "help", dm=True))
        face = await fake.slash_command(41, "style", dm=True, attachment=jpeg(fake, face_jpeg))
        [picture] = await answers(fake, face, "followup")

    assert all(c.ephemeral for c in (chosen, listing, help_text))
    assert chosen.json["data"]["content"] == messages.STYLE_SET.format(title="Anime to selfie")
    [embed] = listing.json["data"]["embeds"]  # the list around the picture of what each style does
    assert embed["title"] == messages.STYLES_TITLE
    assert embed["description"].startswith(messages.STYLES_HEADER.format(style="anime2selfie"))
    assert embed["image"]["url"] == "attachment://styles.jpg"
    [picture_file] = listing.files
    assert picture_file.filename == "styles.jpg" and picture_file.data.startswith(b"\xff\xd8")
    assert help_text.json["data"]["content"] == messages.DISCORD_HELP
    assert picture.json["content"] == "Anime to selfie" and jpeg_size(picture) == (64, 64)


async def test_a_burst_of_users_all_get_their_pictures(
    read_usage: ReadUsage, fake: FakeDiscord, bots_model_store: Path, db_url: str, face_jpeg: bytes
) -> None:
    users = range(60, 72)
    faces = [face_jpeg, (FIXTURES / "obama_256.jpg").read_bytes()]  # both public domain
    async with running_bot(fake, bots_model_store, db_url, max_in_flight=2):
        interactions = [
            await fake.slash_command(user, "style", attachment=jpeg(fake, faces[user % 2])) for user in users
        ]
        pictures = [(await answers(fake, i, "followup"))[0] for i in interactions]
    # Each was deferred in time (the fake refuses a late first answer), then waited its turn.
    assert all(jpeg_size(p) == (64, 64) and not p.ephemeral for p in pictures)
    rows = await read_usage(db_url)
    assert sorted(int(r.platform_user_id) for r in rows) == list(users)
    assert {(r.platform, r.status) for r in rows} == {("discord", "ok")}


async def test_make_run_serves_both_bots_when_both_tokens_are_set(
    read_usage: ReadUsage, fake: FakeDiscord, engine_model_store: Path, tmp_path: Path, face_jpeg: bytes
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"  # the runner migrates it
    async with FakeTelegram() as telegram:
        env = {
            **os.environ,
            "DISCORD_TOKEN": fake.token,
            "DISCORD_API_URL": fake.api_url,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "DISCORD_DEV_GUILD": "",  # empty counts as unset: sync globally
            "TELEGRAM_TOKEN": telegram.token,
            "TELEGRAM_API_URL": telegram.url,
            "MODEL_STORE": str(engine_model_store),
            "DATABASE_URL": database_url,
            "WEB_PORT": "0",
            "OMP_NUM_THREADS": "1",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots", cwd=tmp_path, env=env,  # tmp_path: no .env to read
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await fake.ready(timeout=120)
            await fake.send_message(51, attachments=[jpeg(fake, face_jpeg)])
            telegram.send_photo(52, face_jpeg)
            await fake.wait_for("channel_message", channel_id="51", timeout=120)
            await telegram.wait_for("sendPhoto", chat_id=52, timeout=120)
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(process.communicate(), 60)
    log = output.decode()
    assert process.returncode == 0, log
    assert "Discord bot @toonbot: 8 slash commands synced globally" in log
    assert "Telegram bot @toonbot_test_bot" in log
    assert fake.token not in log and telegram.token not in log  # secrets never reach the log
    rows = await read_usage(database_url)
    assert sorted((r.platform, r.platform_user_id, r.status) for r in rows) == [
        ("discord", "51", "ok"), ("telegram", "52", "ok")
    ]


async def test_a_mention_replying_to_an_image_draws_it_with_the_message_content_intent(
    read_usage: ReadUsage, fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    channel = str(fake.channel_id)
    async with running_bot(fake, bots_model_store, sqlite_db_url, discord_message_content=True):
        photo = await fake.send_message(80, "look at me", dm=False, attachments=[jpeg(fake, face_jpeg)])
        words = await fake.send_message(80, "no picture here", dm=False)
        named = await fake.send_message(81, "anime2selfie", dm=False, mention_bot=True, reply_to=photo)
        await fake.wait_for("channel_message", channel_id=channel)
        command = await fake.send_message(82, "/style", dm=False, mention_bot=True, reply_to=photo)
        await fake.wait_for("channel_message", count=2, channel_id=channel)
        earlier = await fake.send_message(80, dm=False, attachments=[jpeg(fake, face_jpeg)], unseen=True)
        fetched = await fake.send_message(83, dm=False, mention_bot=True, reply_to=earlier, resolved=False)
        await fake.wait_for("channel_message", count=3, channel_id=channel)
        no_picture = await fake.send_message(84, dm=False, mention_bot=True, reply_to=words)
        await fake.wait_for("channel_message", count=4, channel_id=channel)
        chatter = await fake.send_message(85, "so cool", dm=False, mention_bot=True, reply_to=photo)
        replies = await fake.wait_for("channel_message", count=5, channel_id=channel)

    assert fake.identify is not None and fake.identify["intents"] & MESSAGE_CONTENT
    answered = {c.json["message_reference"]["message_id"]: c for c in replies}
    assert set(answered) == {int(m["id"]) for m in (named, command, fetched, no_picture, chatter)}
    for asked, caption in [
        (named, "Anime to selfie"), (command, "Selfie to anime"), (fetched, "Selfie to anime"),
        (chatter, "Selfie to anime"),  # words that name no style are just chatter
    ]:
        assert answered[int(asked["id"])].json["content"] == caption
        assert jpeg_size(answered[int(asked["id"])]) == (64, 64)
    assert answered[int(no_picture["id"])].json["content"] == messages.DISCORD_NO_PICTURE_IN_REPLY
    [fetch] = fake.calls_to("fetch_message")  # not in the bot's cache, not in the event
    assert fetch.params["message_id"] == earlier["id"]
    assert fake.downloads.count(photo["attachments"][0]["id"]) == 3
    rows = await read_usage(sqlite_db_url)
    assert sorted((r.platform_user_id, r.style, r.status) for r in rows) == [
        ("81", "anime2selfie", "ok"), ("82", "selfie2anime", "ok"), ("83", "selfie2anime", "ok"),
        ("85", "selfie2anime", "ok"),
    ]


async def test_without_the_intent_a_mention_reply_draws_the_bots_own_pictures_and_servers_get_a_share(
    read_usage: ReadUsage, fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    channel = str(fake.channel_id)
    async with running_bot(fake, bots_model_store, sqlite_db_url, chat_requests_per_minute=2):
        photo = await fake.send_message(90, "look at me", dm=False, attachments=[jpeg(fake, face_jpeg)])
        first = await fake.send_message(
            91, dm=False, mention_bot=True, attachments=[jpeg(fake, face_jpeg)]
        )
        [drawn] = await fake.wait_for("channel_message", channel_id=channel)
        again = await fake.send_message(92, "anime2selfie", dm=False, mention_bot=True, reply_to=drawn.result)
        await fake.wait_for("channel_message", count=2, channel_id=channel)
        hidden = await fake.send_message(93, dm=False, mention_bot=True, reply_to=photo)
        await fake.wait_for("channel_message", count=3, channel_id=channel)
        over = await fake.send_message(94, dm=False, mention_bot=True, attachments=[jpeg(fake, face_jpeg)])
        replies = await fake.wait_for("channel_message", count=4, channel_id=channel)
        await fake.send_message(95, attachments=[jpeg(fake, face_jpeg)])  # a DM: not the server's share
        [dm_reply] = await fake.wait_for("channel_message", channel_id="95")

    assert fake.identify is not None and not fake.identify["intents"] & MESSAGE_CONTENT
    answered = {c.json["message_reference"]["message_id"]: c.json["content"] for c in replies}
    assert answered == {
        int(first["id"]): "Selfie to anime",
        int(again["id"]): "Anime to selfie",  # the bot's own picture, redrawn
        int(hidden["id"]): messages.DISCORD_NO_PICTURE_IN_REPLY,  # Discord showed no attachment
        int(over["id"]): messages.CHAT_SLOW_DOWN.format(limit=2),
    }
    assert dm_reply.json["content"] == "Selfie to anime"
    assert photo["attachments"][0]["id"] not in fake.downloads
    rows = await read_usage(sqlite_db_url)
    assert sorted((r.platform_user_id, r.style) for r in rows) == [
        ("91", "selfie2anime"), ("92", "anime2selfie"), ("95", "selfie2anime")
    ]


async def test_apps_menu_restyle_draws_any_message_image_without_the_intent(
    read_usage: ReadUsage, fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    async with running_bot(fake, bots_model_store, sqlite_db_url):
        photo = await fake.send_message(96, "look at me", dm=False, attachments=[jpeg(fake, face_jpeg)])
        words = await fake.send_message(96, "no picture here", dm=False)
        menu = await fake.message_command(97, "Restyle", photo)
        [menu_picture] = await answers(fake, menu, "followup")
        [menu_refusal] = await answers(fake, await fake.message_command(97, "Restyle", words))

    assert menu_picture.json["content"] == "Selfie to anime" and jpeg_size(menu_picture) == (64, 64)
    assert not menu_picture.ephemeral
    assert menu_refusal.ephemeral and menu_refusal.json["data"]["content"] == messages.DISCORD_NO_IMAGE_IN_MESSAGE
    assert [(r.platform_user_id, r.status) for r in await read_usage(sqlite_db_url)] == [("97", "ok")]


# --- animated GIFs and short videos (the in-memory stylizer: these are about the front end) ------

MEMORY_ONLY = pytest.mark.parametrize("bots_model_store", ["memory"], indirect=True)


@MEMORY_ONLY
async def test_gifs_and_videos_come_back_as_files_of_their_kind(
    read_usage: ReadUsage, fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str
) -> None:
    gif, video = make_gif([100, 200, 300, 100]), make_mp4(3.0, 30)
    async with running_bot(fake, bots_model_store, sqlite_db_url, chat_max_in_flight=8):
        as_gif = await fake.slash_command(111, "style", attachment=fake.attachment(gif, "dance.gif", "image/gif"))
        as_video = await fake.slash_command(
            112, "style", attachment=fake.attachment(video, "me.mp4", "video/mp4"), style="anime2selfie"
        )
        posted = await fake.send_message(
            113, "look", dm=False, attachments=[fake.attachment(video, "v.mp4", "video/mp4")]
        )
        menu = await fake.message_command(114, "Restyle", posted)
        long_file = fake.attachment(make_mp4(11.0, 2, audio=False), "long.mp4", "video/mp4")
        too_long = await fake.slash_command(115, "style", attachment=long_file)
        await fake.send_message(116, attachments=[fake.attachment(gif, "dm.gif", "image/gif")])  # a DM
        # Past any progress edit: drawing a clip can take over the progress interval on a loaded machine.
        gif_answer = await fake.wait_for_file("edit_original", token=as_gif.token)
        video_answer = await fake.wait_for_file("edit_original", token=as_video.token)
        menu_answer = await fake.wait_for_file("edit_original", token=menu.token)
        [refusal] = await answers(fake, too_long, "followup")
        [dm_answer] = await fake.wait_for("channel_message", channel_id="116")
        fake.attachment_size_limit = 2000  # e.g. a long GIF, over what Discord takes from bots
        over = await fake.slash_command(117, "style", attachment=fake.attachment(gif, "big.gif", "image/gif"))
        [over_refusal] = await answers(fake, over, "followup")

    [upload] = gif_answer.files
    assert upload.filename == "toonbot.gif" and gif_frames(upload.data) == [100, 200, 300, 100]
    assert gif_answer.json["content"] == "Selfie to anime" and not gif_answer.ephemeral
    [upload] = video_answer.files
    before, after = probe(video), probe(upload.data)  # a 3-second face video, with sound
    assert upload.filename == "toonbot.mp4" and after["frames"] == before["frames"] == 90
    assert after["seconds"] == pytest.approx(before["seconds"], abs=1 / 30)
    assert after["audio_seconds"] == pytest.approx(before["audio_seconds"], abs=0.05)
    assert video_answer.json["content"] == "Anime to selfie"
    assert menu_answer.files[0].filename == "toonbot.mp4" and probe(menu_answer.files[0].data)["frames"] == 90
    assert refusal.ephemeral and refusal.files == []
    assert "at most 10 s and 300 frames" in refusal.json["content"]
    assert fake.calls_to("delete_original", token=too_long.token)  # no public "thinking..." left behind
    [upload] = dm_answer.files
    assert upload.filename == "toonbot.gif" and gif_frames(upload.data) == [100, 200, 300, 100]
    assert over_refusal.ephemeral and over_refusal.files == []
    assert re.match(r"The result is \d+\.\d MB, more than the [\d.]+ MB Discord lets me upload here\.",
                    over_refusal.json["content"])
    rows = await read_usage(sqlite_db_url)
    assert sorted((r.platform_user_id, r.status) for r in rows) == [
        ("111", "ok"), ("112", "ok"), ("114", "ok"), ("115", "bad_input"), ("116", "ok"), ("117", "ok"),
    ]


@MEMORY_ONLY
async def test_progress_edits_the_deferred_answer_every_few_seconds(
    fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_s = 0.25  # 3 s in production
    monkeypatch.setattr(discord_answers, "PROGRESS_EVERY_S", every_s)
    monkeypatch.setattr(resources, "open_stylizer", lambda settings: MemoryStylizer(delay_s=0.02))
    clip = make_mp4(6.0, 10, audio=False)  # 60 frames: 1.2 s or more
    async with running_bot(fake, bots_model_store, sqlite_db_url):
        drawing = await fake.slash_command(121, "style", attachment=fake.attachment(clip, "c.mp4", "video/mp4"))
        sent = await fake.send_message(122, attachments=[fake.attachment(clip, "c.mp4", "video/mp4")])  # a DM
        await fake.wait_for("edit_original", token=drawing.token, count=3)
        edits = await answers(fake, drawing, "edit_original")
        async with asyncio.timeout(60):  # both results arrive, or the test fails here
            while not edits[-1].files or not any(c.files for c in fake.calls_to("edit_message")):
                await asyncio.sleep(0.05)
                edits = fake.calls_to("edit_original", token=drawing.token)

    *progress, result = edits
    [deferral] = fake.calls_to("interaction_callback", token=drawing.token)
    assert deferral.json["type"] == DEFERRED_CHANNEL_MESSAGE
    assert len(progress) >= 2 and all(not c.files for c in progress)
    assert all(re.fullmatch(r"Drawing frame \d+ of 60…", c.json["content"]) for c in progress)
    assert all(b.at - a.at >= every_s * 0.9 for a, b in zip(progress, progress[1:]))  # never more often
    assert result.json["content"] == "Selfie to anime" and result.files[0].filename == "toonbot.mp4"
    assert fake.calls_to("followup", token=drawing.token) == []  # one message, edited into the result
    # A DM (or a mention): a reply that shows the progress, then becomes the answer.
    [started] = fake.calls_to("channel_message", channel_id="122")
    assert started.json["content"].startswith("Drawing frame ")
    assert started.json["message_reference"]["message_id"] == int(sent["id"])
    *dm_progress, dm_result = fake.calls_to("edit_message", channel_id="122")
    assert {c.params["message_id"] for c in [*dm_progress, dm_result]} == {started.result["id"]}
    shown = [started, *dm_progress]
    assert all(b.at - a.at >= every_s * 0.9 for a, b in zip(shown, shown[1:]))
    assert dm_result.json["content"] == "Selfie to anime" and dm_result.files[0].filename == "toonbot.mp4"


async def test_a_japanese_user_is_answered_in_japanese(
    fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    ja = i18n.words("ja")
    fake.locales[61] = "ja"  # the interaction's locale: their Discord app's language
    async with running_bot(fake, bots_model_store, sqlite_db_url):
        [help_text] = await answers(fake, await fake.slash_command(61, "help"))
        pdf = await fake.slash_command(61, "style", attachment=fake.attachment(PDF, "cv.pdf", "application/pdf"))
        [refusal] = await answers(fake, pdf)
        face = await fake.slash_command(61, "style", attachment=jpeg(fake, face_jpeg))
        [selfie] = await answers(fake, face, "followup")
        [listing] = await answers(fake, await fake.slash_command(61, "styles"))
        [chosen] = await answers(fake, await fake.slash_command(61, "language", language="pt_BR"))
        [portuguese] = await answers(fake, await fake.slash_command(61, "help"))  # the choice beats the app
        [automatic] = await answers(fake, await fake.slash_command(61, "language", language="auto"))
    assert help_text.json["data"]["content"] == ja(messages.DISCORD_HELP) != messages.DISCORD_HELP
    assert refusal.json["data"]["content"] == ja(messages.NOT_AN_IMAGE)
    assert selfie.json["content"] == "セルフィーをアニメに" and jpeg_size(selfie) == (64, 64)
    [embed] = listing.json["data"]["embeds"]
    assert embed["title"] == ja(messages.STYLES_TITLE)
    assert embed["description"].startswith(ja(messages.STYLES_HEADER, style="selfie2anime"))
    assert "アニメ風の似顔絵" in embed["description"]  # the styles' descriptions too
    assert chosen.json["data"]["content"] == i18n.words("pt_BR")(messages.LANGUAGE_SET, language="Português (Brasil)")
    assert portuguese.json["data"]["content"] == i18n.words("pt_BR")(messages.DISCORD_HELP)
    assert automatic.json["data"]["content"] == ja(messages.LANGUAGE_AUTO, language="日本語")


ENGINE_ONLY = pytest.mark.parametrize(
    "bots_model_store", [pytest.param("engine", marks=pytest.mark.full)], indirect=True
)


@ENGINE_ONLY
async def test_a_gif_drawn_by_the_real_engine(
    read_usage: ReadUsage, fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str
) -> None:
    """The clip tests above draw in memory; this one goes frame by frame through the embedded engine."""
    gif = make_gif([100, 200, 300])
    async with running_bot(fake, bots_model_store, sqlite_db_url):
        asked = await fake.slash_command(118, "style", attachment=fake.attachment(gif, "dance.gif", "image/gif"))
        [answer] = await fake.wait_for("edit_original", token=asked.token, timeout=120)
    [upload] = answer.files
    assert upload.filename == "toonbot.gif" and gif_frames(upload.data) == [100, 200, 300]
    with Image.open(io.BytesIO(upload.data)) as drawn:
        assert drawn.width == 64
    assert answer.json["content"] == "Selfie to anime"
    [row] = await read_usage(sqlite_db_url)
    assert (row.status, row.model_version, row.frames) == ("ok", "1.0", 3)


@MEMORY_ONLY
@pytest.mark.deadline
async def test_an_answer_after_discords_three_seconds_is_refused(
    bots_model_store: Path, sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The fake's 3 s (Discord's), which the other tests widen, held on a bot that genuinely answers
    late: its /help waits 3 s before it starts, so the answer comes after the interaction has lapsed,
    and Discord's refusal (10062, Unknown interaction) is what it gets, then the bot logs it."""
    localise = Core.localise

    async def late(self: Core, asked: Request) -> Request:
        await asyncio.sleep(ANSWER_WITHIN_S)  # begun once the interaction came: its answer is later still
        return await localise(self, asked)

    monkeypatch.setattr(Core, "localise", late)
    async with FakeDiscord() as fake, running_bot(fake, bots_model_store, sqlite_db_url):
        asked = await fake.slash_command(41, "help")
        await until(lambda: "could not tell the user /help failed" in caplog.text, "the bot giving up")
    assert fake.answer_within_s == ANSWER_WITHIN_S
    refused = [(c.route, c.params["token"], c.result.code) for c in fake.refused]
    assert refused and set(refused) == {("interaction_callback", asked.token, 10062)}
    assert fake.calls_to("interaction_callback", token=asked.token) == []
