"""End to end: the real python-telegram-bot stack, the real embedded engine, a real database,
and a fake Bot API server on 127.0.0.1 standing in for Telegram."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from PIL import Image

from bots import collage, i18n, messages, resources, telegram
from bots.resources import SharedCore
from config import Settings
from fakes.stylizer import MemoryStylizer
from fakes.telegram import Call, FakeTelegram
from media import gif_frames, make_gif, make_mp4, probe
from torchserve_fixture import running_torchserve

if TYPE_CHECKING:
    from conftest import ReadUsage

FIXTURES = Path(__file__).with_name("fixtures")

torch.set_num_threads(1)

# Every method the bot may call; anything else would be a 404 from the fake.
EXPECTED_METHODS = {
    "getMe", "deleteWebhook", "getFile", "sendPhoto", "sendDocument", "sendMessage",
    "sendChatAction", "answerCallbackQuery", "editMessageText", "editMessageCaption", "sendAnimation", "sendVideo",
    "deleteMessage",
}


def jpeg_size(call: Call, field: str) -> tuple[int, int]:
    """The size of the JPEG the bot uploaded in `field`; fails unless it is one."""
    upload = call.files[field]
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.format == "JPEG"
        return image.size


@pytest.fixture
async def api() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake
    assert set(fake.unknown) == set(), f"the bot called methods the fake lacks: {fake.unknown}"
    assert {c.method for c in fake.calls} <= EXPECTED_METHODS


def bot_settings(api: FakeTelegram, model_store: Path, database_url: str, **more: object) -> Settings:
    """The Telegram bot pointed at the fake by TELEGRAM_API_URL, with small output images."""
    return Settings(
        _env_file=None,
        telegram_token=api.token,
        telegram_api_url=api.url,
        model_store=model_store,
        database_url=database_url,
        output_size=64,
        **more,
    )


@asynccontextmanager
async def running_bot(api: FakeTelegram, settings: Settings) -> AsyncIterator[None]:
    """The bot as `python -m bots telegram` runs it, until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(telegram.serve(settings, SharedCore(settings), stop))
    try:
        yield
    finally:
        stop.set()
        await task  # stops polling, flushes the usage log, closes the engine


LAST_WORD = 999  # the private chat of `fetched_all`'s /help


async def fetched_all(api: FakeTelegram) -> None:
    """A /help from a chat of its own, answered: updates come in order, so the bot has fetched every one
    sent before it, and leaving `running_bot` waits for all their handlers. After the block, what those
    updates made the bot send is all they ever will (instead of giving anything unwanted time to show)."""
    api.send_text(LAST_WORD, "/help")
    await api.wait_for("sendMessage", chat_id=LAST_WORD)


async def test_photos_documents_and_a_pdf(
    read_usage: ReadUsage, api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        api.send_photo(101, face_jpeg)
        api.send_document(102, face_jpeg, "hopper.jpg", "image/jpeg")
        api.send_document(103, b"%PDF-1.4\n%%EOF\n", "cv.pdf", "application/pdf")
        [photo] = await api.wait_for("sendPhoto", chat_id=101)
        [document] = await api.wait_for("sendDocument", chat_id=102)
        [refusal] = await api.wait_for("sendMessage", chat_id=103)

    assert jpeg_size(photo, "photo") == (64, 64)
    assert photo.fields["caption"] == "Selfie to anime"
    assert jpeg_size(document, "document") == (64, 64)
    assert document.files["document"].filename == "toonbot.jpg"
    assert refusal.fields["text"] == messages.NOT_AN_IMAGE
    assert len(api.calls_to("getFile")) == 2  # the PDF was refused without downloading it
    actions = {(c.chat_id, c.fields["action"]) for c in api.calls_to("sendChatAction")}
    assert {(101, "upload_photo"), (102, "upload_document")} <= actions
    assert sorted(r.status for r in await read_usage(sqlite_db_url)) == ["bad_input", "ok", "ok"]


async def test_styles_keyboard_changes_the_style(
    api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        api.send_text(7, "/styles")
        [listing] = await api.wait_for("sendPhoto", chat_id=7)  # what every style does, the list its caption
        assert listing.fields["caption"].startswith(messages.STYLES_HEADER.format(style="selfie2anime"))
        assert jpeg_size(listing, "photo") == (
            collage.COLUMNS * (2 * collage.TILE_HEIGHT + collage.GAP) + collage.GAP,
            collage.TILE_HEIGHT + collage.LABEL_HEIGHT + 2 * collage.GAP,  # two styles: one row
        )
        keyboard = listing.json("reply_markup")["inline_keyboard"]
        assert [[b["callback_data"] for b in row] for row in keyboard] == [["anime2selfie"], ["selfie2anime"]]
        assert keyboard[1][0]["text"] == "✓ Selfie to anime"

        api.press_button(7, listing.result["message_id"], "anime2selfie")
        await api.wait_for("answerCallbackQuery")
        [edit] = await api.wait_for("editMessageCaption", chat_id=7)  # the picture stays, with the answer
        assert edit.fields["caption"] == messages.STYLE_SET.format(title="Anime to selfie")
        assert "reply_markup" not in edit.fields  # the keyboard is gone once used

        api.send_photo(7, face_jpeg)
        [_, photo] = await api.wait_for("sendPhoto", chat_id=7, count=2)
    assert photo.fields["caption"] == "Anime to selfie"


async def test_a_styles_list_too_long_for_a_caption_follows_its_picture(
    api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telegram, "CAPTION_LIMIT", 20)  # as a catalogue of many styles would overflow 1,024
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        api.send_text(7, "/styles")
        [picture] = await api.wait_for("sendPhoto", chat_id=7)
        [listing] = await api.wait_for("sendMessage", chat_id=7)
    assert "caption" not in picture.fields and "reply_markup" not in picture.fields
    assert jpeg_size(picture, "photo")[0] > 0
    assert listing.fields["text"].startswith(messages.STYLES_HEADER.format(style="selfie2anime"))
    keyboard = listing.json("reply_markup")["inline_keyboard"]
    assert [[b["callback_data"] for b in row] for row in keyboard] == [["anime2selfie"], ["selfie2anime"]]
    assert api.calls.index(picture) < api.calls.index(listing)


async def test_commands_and_a_caption_style(
    api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        api.send_text(8, "/start@another_bot")  # in a group, for someone else
        api.send_text(8, "/start@toonbot_test_bot")
        api.send_text(9, "/style van_gogh")
        await api.wait_for("sendMessage", chat_id=8)
        await api.wait_for("sendMessage", chat_id=9)
        api.send_photo(8, face_jpeg, caption="/style anime2selfie")
        [photo] = await api.wait_for("sendPhoto", chat_id=8)
        api.send_photo(8, face_jpeg, caption="/style anime2selfie compare")  # before and after
        _, compared = await api.wait_for("sendPhoto", chat_id=8, count=2)
    [welcome] = api.calls_to("sendMessage", 8)
    assert welcome.fields["text"] == messages.WELCOME.format(style="Selfie to anime")
    unknown = api.calls_to("sendMessage", 9)[0]
    assert unknown.fields["text"].startswith(messages.UNKNOWN_STYLE.format(name="van_gogh"))
    assert "inline_keyboard" in unknown.json("reply_markup")
    assert photo.fields["caption"] == "Anime to selfie"
    sides = [Image.open(io.BytesIO(c.files["photo"].data)).size for c in (photo, compared)]
    assert sides[1] == (2 * sides[0][0], sides[0][1])


async def test_a_failure_is_answered_logged_and_survived(
    read_usage: ReadUsage, api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        api.send_photo(5, face_jpeg)
        api.forget_files()  # getFile will answer 400, as for an expired file_id
        [apology] = await api.wait_for("sendMessage", chat_id=5)
        api.send_photo(5, face_jpeg)  # the bot is still serving
        await api.wait_for("sendPhoto", chat_id=5)
    assert apology.fields["text"] == messages.ERROR
    assert any(r.exc_info and r.name == "bots.telegram" for r in caplog.records)
    assert [r.status for r in await read_usage(sqlite_db_url)] == ["error", "ok"]


async def test_twenty_users_at_once(
    read_usage: ReadUsage, api: FakeTelegram, bots_model_store: Path, db_url: str, face_jpeg: bytes
) -> None:
    users = range(1000, 1020)
    faces = [face_jpeg, (FIXTURES / "obama_256.jpg").read_bytes()]  # both public domain
    async with running_bot(api, bot_settings(api, bots_model_store, db_url)):
        for user in users:
            api.send_photo(user, faces[user % 2])
        await api.wait_for("sendPhoto", count=len(users), timeout=120)
    assert {c.chat_id for c in api.calls_to("sendPhoto")} == set(users)
    assert all(jpeg_size(c, "photo") == (64, 64) for c in api.calls_to("sendPhoto"))
    rows = await read_usage(db_url)
    assert len(rows) == 20
    assert {(r.platform, r.status, r.style) for r in rows} == {("telegram", "ok", "selfie2anime")}
    assert {r.platform_user_id for r in rows} == {str(u) for u in users}


@pytest.mark.slow
async def test_torchserve_answers_when_its_url_is_set(
    read_usage: ReadUsage, api: FakeTelegram, engine_model_store: Path, sqlite_db_url: str,
    face_jpeg: bytes, tmp_path: Path,
) -> None:
    empty_store = tmp_path / "empty_store"  # the embedded engine would have no styles at all
    empty_store.mkdir()
    with running_torchserve(engine_model_store, tmp_path / "torchserve", token_auth=True) as ts:
        keys = ts.keys()
        settings = bot_settings(
            api, empty_store, sqlite_db_url,
            torchserve_url=ts.inference_url,
            torchserve_token=keys["inference"],
            torchserve_management_url=ts.management_url,
            torchserve_management_token=keys["management"],
        )
        async with running_bot(api, settings):
            api.send_text(3, "/styles")
            api.send_photo(4, face_jpeg)
            [listing] = await api.wait_for("sendPhoto", chat_id=3)
            [photo] = await api.wait_for("sendPhoto", chat_id=4, timeout=120)
    assert [b["callback_data"] for [b] in listing.json("reply_markup")["inline_keyboard"]] == [
        "anime2selfie", "selfie2anime",
    ]
    assert jpeg_size(photo, "photo") == (64, 64)
    [row] = await read_usage(sqlite_db_url)
    assert (row.status, row.style, row.model_version) == ("ok", "selfie2anime", "1.0")


async def test_a_download_of_unknown_size_stops_at_the_limit(
    read_usage: ReadUsage, api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str
) -> None:
    settings = bot_settings(api, bots_model_store, sqlite_db_url, max_upload_bytes=2**20)
    async with running_bot(api, settings):
        api.send_document(7, None, "endless.png", "image/png")  # no file_size anywhere, no end
        [refusal] = await asyncio.wait_for(api.wait_for("sendMessage", chat_id=7), 60)
    assert refusal.fields["text"] == messages.TOO_BIG.format(limit_mb=1)
    assert api.endless_bytes_sent < 64 * 2**20  # it hung up soon after the limit
    assert [r.status for r in await read_usage(sqlite_db_url)] == ["bad_input"]


async def test_the_error_log_names_the_update_but_not_what_the_user_wrote(
    api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        sent = api.send_photo(9, face_jpeg, caption="my secret caption")
        api.forget_files()  # the download fails: the error handler logs
        await api.wait_for("sendMessage", chat_id=9)
    [failure] = [r for r in caplog.records if r.name == "bots.telegram" and r.exc_info]
    assert re.fullmatch(r"update \d+ \(message, chat 9, user 9\) failed", failure.getMessage())
    logged = caplog.text
    assert "secret caption" not in logged and sent["from"]["first_name"] not in logged
    assert api.token not in logged


GROUP = -100500  # a supergroup; the fake keeps privacy mode on there


def replying_to(call: Call) -> int:
    """The message a bot's message answers (PTB quotes the asking message in groups)."""
    return call.json("reply_parameters")["message_id"]


async def test_groups_draw_a_captioned_photo_or_the_photo_a_style_command_replies_to(
    read_usage: ReadUsage, api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    settings = bot_settings(api, bots_model_store, sqlite_db_url, chat_max_in_flight=8)
    async with running_bot(api, settings):
        captioned = api.send_photo(201, face_jpeg, caption="/style anime2selfie", chat_id=GROUP)
        bare_caption = api.send_photo(202, face_jpeg, caption="/style@toonbot_test_bot", chat_id=GROUP)
        photo = api.send_photo(203, face_jpeg, chat_id=GROUP)  # privacy mode: the bot never sees it
        file = api.send_document(203, face_jpeg, "me.png", "image/png", chat_id=GROUP)
        chatter = api.send_text(203, "nice!", chat_id=GROUP)
        mine = api.send_text(204, "/style", chat_id=GROUP, reply_to=photo)
        named = api.send_text(205, "/style@toonbot_test_bot anime2selfie", chat_id=GROUP, reply_to=photo)
        as_file = api.send_text(206, "/style", chat_id=GROUP, reply_to=file)
        no_photo = api.send_text(207, "/style anime2selfie", chat_id=GROUP, reply_to=chatter)
        api.send_text(208, "/style@another_bot", chat_id=GROUP, reply_to=photo)  # not for us
        api.send_photo(209, face_jpeg, caption="/style@another_bot", chat_id=GROUP)
        help_text = api.send_text(210, "/help@toonbot_test_bot", chat_id=GROUP)
        topic = api.open_topic(211, GROUP, "Selfies")
        in_topic = api.send_text(211, "/style anime2selfie", chat_id=GROUP, reply_to=topic)  # not a reply
        photos = await api.wait_for("sendPhoto", chat_id=GROUP, count=4)
        [document] = await api.wait_for("sendDocument", chat_id=GROUP)
        answers = await api.wait_for("sendMessage", chat_id=GROUP, count=3)
        await fetched_all(api)

    assert {m["message_id"] for m in api.withheld} >= {photo["message_id"], file["message_id"]}
    assert len(api.calls_to("sendPhoto")) == 4 and len(api.calls_to("sendMessage")) == 3 + 1  # + fetched_all's
    drawn = {replying_to(c): c.fields["caption"] for c in photos}
    assert drawn == {
        captioned["message_id"]: "Anime to selfie",
        bare_caption["message_id"]: "Selfie to anime",  # no name: the user's own style
        mine["message_id"]: "Selfie to anime",
        named["message_id"]: "Anime to selfie",
    }
    assert all(jpeg_size(c, "photo") == (64, 64) for c in photos)
    assert replying_to(document) == as_file["message_id"]  # a file comes back as a file
    said = {replying_to(c): c.fields["text"] for c in answers}
    assert said == {
        no_photo["message_id"]: messages.NO_PICTURE_IN_REPLY,
        help_text["message_id"]: messages.HELP,
        in_topic["message_id"]: messages.STYLE_SET.format(title="Anime to selfie"),  # switched, as outside topics
    }
    assert "In a group" in messages.HELP
    rows = await read_usage(sqlite_db_url)
    assert sorted((r.platform_user_id, r.style, r.status) for r in rows) == [
        ("201", "anime2selfie", "ok"), ("202", "selfie2anime", "ok"), ("204", "selfie2anime", "ok"),
        ("205", "anime2selfie", "ok"), ("206", "selfie2anime", "ok"),
    ]
    assert {r.chat_id for r in rows} == {str(GROUP)}


async def test_a_busy_group_gets_its_share_and_others_are_not_held_up(
    api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    settings = bot_settings(api, bots_model_store, sqlite_db_url, chat_requests_per_minute=2)
    async with running_bot(api, settings):
        for count, user in enumerate((301, 302), start=1):  # one after the other: within the share
            api.send_photo(user, face_jpeg, caption="/style", chat_id=GROUP)
            await api.wait_for("sendPhoto", chat_id=GROUP, count=count)
        over = api.send_photo(303, face_jpeg, caption="/style", chat_id=GROUP)
        [refusal] = await api.wait_for("sendMessage", chat_id=GROUP)
        api.send_photo(304, face_jpeg)  # a private chat, meanwhile
        api.send_photo(305, face_jpeg, caption="/style", chat_id=GROUP - 1)  # another group
        await api.wait_for("sendPhoto", chat_id=304)
        await api.wait_for("sendPhoto", chat_id=GROUP - 1)
    assert refusal.fields["text"] == messages.CHAT_SLOW_DOWN.format(limit=2)
    assert replying_to(refusal) == over["message_id"]
    assert len(api.calls_to("sendPhoto", chat_id=GROUP)) == 2


async def test_without_privacy_mode_a_group_photo_is_still_drawn_only_when_asked(
    api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    api.privacy_mode = False  # e.g. the bot is a group admin: it gets every message
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        api.send_photo(401, face_jpeg, chat_id=GROUP)
        api.send_photo(401, face_jpeg, caption="look!", chat_id=GROUP)
        api.send_photo(401, face_jpeg, caption="/style@another_bot", chat_id=GROUP)
        api.send_text(401, "hello all", chat_id=GROUP)
        asked = api.send_photo(402, face_jpeg, caption="/style", chat_id=GROUP)
        [photo] = await api.wait_for("sendPhoto", chat_id=GROUP)
        await fetched_all(api)
    assert replying_to(photo) == asked["message_id"]
    assert api.withheld == [] and len(api.calls_to("sendPhoto")) == 1
    assert [c.chat_id for c in api.calls_to("sendMessage")] == [LAST_WORD]  # fetched_all's alone
    assert len(api.calls_to("getFile")) == 1


# --- animated GIFs and short videos (the in-memory stylizer: these are about the front end) ------

MEMORY_ONLY = pytest.mark.parametrize("bots_model_store", ["memory"], indirect=True)


@MEMORY_ONLY
async def test_gifs_and_videos_come_back_animated_in_kind(
    read_usage: ReadUsage, api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str
) -> None:
    gif, video, silent = make_gif([100, 200, 300, 100]), make_mp4(3.0, 30), make_mp4(1.0, 10, audio=False)
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        api.send_animation(501, silent)  # a GIF, as Telegram passes it on: a silent MP4
        api.send_video(502, video)
        api.send_document(503, gif, "dance.gif", "image/gif")  # sent as a file: it stays a GIF
        api.send_video_note(504, video)
        api.send_document(505, silent, "clip.mp4", "video/mp4")
        api.send_video(506, make_mp4(11.0, 2, audio=False))  # past ANIMATION_MAX_SECONDS' 10 s
        [animation] = await api.wait_for("sendAnimation", chat_id=501)
        [sounding] = await api.wait_for("sendVideo", chat_id=502)
        [gif_file] = await api.wait_for("sendDocument", chat_id=503)
        [note] = await api.wait_for("sendVideo", chat_id=504)
        [mp4_file] = await api.wait_for("sendDocument", chat_id=505)
        [too_long] = await api.wait_for("sendMessage", chat_id=506)

    upload = animation.files["animation"]
    assert (upload.filename, probe(upload.data)["frames"], probe(upload.data)["audio_seconds"]) == (
        "toonbot.mp4", 10, None
    )
    assert animation.fields["caption"] == "Selfie to anime"
    before, after = probe(video), probe(sounding.files["video"].data)  # a 3-second face video, with sound
    assert after["frames"] == before["frames"] == 90
    assert after["seconds"] == pytest.approx(before["seconds"], abs=1 / 30)
    assert after["audio_seconds"] == pytest.approx(before["audio_seconds"], abs=0.05)
    assert sounding.fields["supports_streaming"] == "true"
    assert gif_file.files["document"].filename == "toonbot.gif"
    assert gif_frames(gif_file.files["document"].data) == [100, 200, 300, 100]
    assert probe(note.files["video"].data)["frames"] == 90
    assert mp4_file.files["document"].filename == "toonbot.mp4"
    assert "at most 10 s and 300 frames" in too_long.fields["text"] and "Trim it" in too_long.fields["text"]
    actions = {(c.chat_id, c.fields["action"]) for c in api.calls_to("sendChatAction")}
    assert {(501, "upload_video"), (502, "upload_video"), (503, "upload_document")} <= actions
    rows = await read_usage(sqlite_db_url)
    assert sorted((r.platform_user_id, r.status) for r in rows) == [
        ("501", "ok"), ("502", "ok"), ("503", "ok"), ("504", "ok"), ("505", "ok"), ("506", "bad_input"),
    ]
    assert {r.input_pixels for r in rows if r.status == "ok"} == {128 * 96}


@MEMORY_ONLY
async def test_progress_is_one_message_edited_every_few_seconds_then_removed(
    api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_s = 0.25  # 3 s in production
    monkeypatch.setattr(telegram, "PROGRESS_EVERY_S", every_s)
    monkeypatch.setattr(resources, "open_stylizer", lambda settings: MemoryStylizer(delay_s=0.02))
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        api.send_animation(601, make_mp4(6.0, 10, audio=False))  # 60 frames: 1.2 s or more
        [animation] = await api.wait_for("sendAnimation", chat_id=601)
        [deleted] = await api.wait_for("deleteMessage", chat_id=601)

    [started] = api.calls_to("sendMessage", chat_id=601)
    edits = api.calls_to("editMessageText", chat_id=601)
    shown = [started, *edits]
    assert len(edits) >= 2
    assert all(re.fullmatch(r"Drawing frame \d+ of 60…", c.fields["text"]) for c in shown)
    frames = [int(c.fields["text"].split()[2]) for c in shown]
    assert frames == sorted(frames) and frames[-1] < 60
    assert all(b.at - a.at >= every_s * 0.9 for a, b in zip(shown, shown[1:]))  # never more often
    assert {int(c.fields["message_id"]) for c in [*edits, deleted]} == {started.result["message_id"]}
    assert deleted.at <= animation.at  # gone before the result comes


@MEMORY_ONLY
async def test_groups_draw_a_captioned_video_or_the_clip_a_style_command_replies_to(
    read_usage: ReadUsage, api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str
) -> None:
    settings = bot_settings(api, bots_model_store, sqlite_db_url, chat_max_in_flight=4)
    silent = make_mp4(1.0, 10, audio=False)
    async with running_bot(api, settings):
        captioned = api.send_video(701, make_mp4(1.0, 10), caption="/style anime2selfie", chat_id=GROUP)
        gif = api.send_animation(702, silent, chat_id=GROUP)  # privacy mode: the bot never sees it
        note = api.send_video_note(702, silent, chat_id=GROUP)
        asked = api.send_text(703, "/style", chat_id=GROUP, reply_to=gif)
        asked_note = api.send_text(704, "/style@toonbot_test_bot anime2selfie", chat_id=GROUP, reply_to=note)
        [video] = await api.wait_for("sendVideo", chat_id=GROUP)
        animations = await api.wait_for("sendAnimation", chat_id=GROUP, count=2)
    assert {m["message_id"] for m in api.withheld} >= {gif["message_id"], note["message_id"]}
    assert replying_to(video) == captioned["message_id"] and video.fields["caption"] == "Anime to selfie"
    assert {replying_to(c): c.fields["caption"] for c in animations} == {
        asked["message_id"]: "Selfie to anime", asked_note["message_id"]: "Anime to selfie",
    }
    assert sorted((r.platform_user_id, r.status) for r in await read_usage(sqlite_db_url)) == [
        ("701", "ok"), ("703", "ok"), ("704", "ok"),
    ]


async def test_a_russian_user_is_answered_in_russian(
    api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    ru = i18n.words("ru")
    api.languages[21] = "ru"  # their Telegram app's language
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        api.send_text(21, "/start")
        await api.wait_for("sendMessage", chat_id=21)
        api.send_text(21, "/help")
        await api.wait_for("sendMessage", chat_id=21, count=2)
        api.send_document(21, b"%PDF-1.4\n%%EOF\n", "cv.pdf", "application/pdf")
        await api.wait_for("sendMessage", chat_id=21, count=3)
        api.send_photo(21, face_jpeg)
        [selfie] = await api.wait_for("sendPhoto", chat_id=21)
        api.send_document(21, _tiny_png(), "dot.png", "image/png")  # refused by the handler, by its code
        [*_, too_small] = await api.wait_for("sendMessage", chat_id=21, count=4)
        api.send_text(21, "/language")  # the list, with a button per language
        [*_, listing] = await api.wait_for("sendMessage", chat_id=21, count=5)
        api.press_button(21, listing.result["message_id"], "language:es")
        [chosen] = await api.wait_for("editMessageText", chat_id=21)
        api.send_text(21, "/help")  # Spanish now, whatever the app says
        [*_, spanish_help] = await api.wait_for("sendMessage", chat_id=21, count=6)
        api.send_text(21, "/language auto")
        [*_, automatic] = await api.wait_for("sendMessage", chat_id=21, count=7)
    start, help_, refusal = (c.fields["text"] for c in api.calls_to("sendMessage", 21)[:3])
    assert too_small.fields["text"] == ru(messages.TOO_SMALL) != messages.TOO_SMALL
    assert start == ru(messages.WELCOME, style="Селфи в аниме")
    assert start.startswith("Привет!") and help_ == ru(messages.HELP) and "/language" in help_
    assert refusal == ru(messages.NOT_AN_IMAGE) != messages.NOT_AN_IMAGE
    assert selfie.fields["caption"] == "Селфи в аниме"
    assert listing.fields["text"].startswith(ru(messages.LANGUAGES_HEADER, language="Русский"))
    buttons = [b for row in listing.json("reply_markup")["inline_keyboard"] for b in row]
    assert [b["callback_data"] for b in buttons][:2] == ["language:en", "language:ru"] and len(buttons) == 6
    assert chosen.fields["text"] == i18n.words("es")(messages.LANGUAGE_SET, language="Español")
    assert spanish_help.fields["text"] == i18n.words("es")(messages.HELP)
    assert automatic.fields["text"] == ru(messages.LANGUAGE_AUTO, language="Русский")


ENGINE_ONLY = pytest.mark.parametrize(
    "bots_model_store", [pytest.param("engine", marks=pytest.mark.full)], indirect=True
)


@ENGINE_ONLY
async def test_a_gif_drawn_by_the_real_engine(
    read_usage: ReadUsage, api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str
) -> None:
    """The clip tests above draw in memory; this one goes frame by frame through the embedded engine."""
    clip = make_mp4(0.5, 6, audio=False)  # a GIF as Telegram passes it on: 3 silent frames
    async with running_bot(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        api.send_animation(511, clip)
        [animation] = await api.wait_for("sendAnimation", chat_id=511, timeout=120)
    upload = animation.files["animation"]
    drawn = probe(upload.data)
    assert (upload.filename, drawn["frames"], drawn["size"][0], drawn["audio_seconds"]) == ("toonbot.mp4", 3, 64, None)
    assert animation.fields["caption"] == "Selfie to anime"
    [row] = await read_usage(sqlite_db_url)
    assert (row.status, row.model_version, row.frames) == ("ok", "1.0", 3)


def _tiny_png() -> bytes:
    """A picture smaller than the handler draws (it refuses it as "too_small")."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "PNG")
    return out.getvalue()
