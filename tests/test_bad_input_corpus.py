"""One corpus of bad files through every front end: each is refused in the same plain words,
with the right HTTP status on the web page, a usage row each, and nothing logged as an error.

The front ends are the real ones (aiohttp page, python-telegram-bot, discord.py) against the
fakes of their platforms, over the real embedded engine and a real SQLite database.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
import torch
from test_discord import fake, running_bot  # noqa: F401  (the fake Discord and the bot over it)
from test_telegram import api, bot_settings  # noqa: F401  (the fake Bot API and the bot's settings)
from test_telegram import running_bot as running_telegram
from test_web import running_page, upload

from bots import messages
from fakes.discord import FakeDiscord
from fakes.telegram import FakeTelegram
from styles.payload import imaging

if TYPE_CHECKING:
    from conftest import ReadUsage

torch.set_num_threads(1)
EDGE = Path(__file__).with_name("fixtures") / "edge_cases"


def png_bomb(side: int = 60_000) -> bytes:
    """A PNG whose header claims side x side pixels: 3.6 gigapixels in a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# name -> (bytes, declared type, the words expected, the web page's status)
CORPUS: dict[str, tuple[bytes, str, str, int]] = {
    "empty.jpg": (b"", "image/jpeg", imaging.NOT_AN_IMAGE, 400),
    "notes.txt": (b"just some words\n", "text/plain", messages.NOT_AN_IMAGE, 415),
    "cv.pdf": (b"%PDF-1.4\n%%EOF\n", "application/pdf", messages.NOT_AN_IMAGE, 415),
    "page.png": (b"<html><script>alert(1)</script></html>", "image/png", imaging.NOT_AN_IMAGE, 400),
    "noise.jpg": (bytes(range(256)) * 64, "image/jpeg", imaging.NOT_AN_IMAGE, 400),
    "cut.jpg": ((EDGE / "astronaut_truncated.jpg").read_bytes(), "image/jpeg", imaging.TRUNCATED, 400),
    "tiny.jpg": ((EDGE / "astronaut_tiny_31x47.jpg").read_bytes(), "image/jpeg", imaging.TOO_SMALL, 400),
    "bomb.png": (png_bomb(), "image/png", imaging.TOO_MANY_PIXELS, 413),  # too large, measured from its header
}


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def each_refused_and_logged(
    answers: dict[str, str], caplog: pytest.LogCaptureFixture, read_usage: ReadUsage, url: str
) -> None:
    """Every file got its words, nothing was logged as an error, and each has a usage row."""
    assert answers == {name: words for name, (_, _, words, _) in CORPUS.items()}
    assert no_errors_logged(caplog) == []
    assert [r.status for r in await read_usage(url)] == ["bad_input"] * len(CORPUS)


async def test_the_web_page(
    read_usage: ReadUsage, bots_model_store: Path, sqlite_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_page(bots_model_store, sqlite_db_url) as url, aiohttp.ClientSession() as client:
        for name, (data, content_type, words, status) in CORPUS.items():
            async with client.post(f"{url}/api/stylize", data=upload(name, data, content_type)) as response:
                assert (response.status, (await response.json())["message"]) == (status, words), name
    assert no_errors_logged(caplog) == []
    assert [r.status for r in await read_usage(sqlite_db_url)] == ["bad_input"] * len(CORPUS)


async def test_telegram(
    read_usage: ReadUsage, api: FakeTelegram, bots_model_store: Path, sqlite_db_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_telegram(api, bot_settings(api, bots_model_store, sqlite_db_url)):
        for user, (name, (data, content_type, _, _)) in enumerate(CORPUS.items(), start=500):
            api.send_document(user, data, name, content_type)
        answers = {
            name: (await api.wait_for("sendMessage", chat_id=user))[0].fields["text"]
            for user, name in enumerate(CORPUS, start=500)
        }
    await each_refused_and_logged(answers, caplog, read_usage, sqlite_db_url)


async def test_discord(
    read_usage: ReadUsage, fake: FakeDiscord, bots_model_store: Path, sqlite_db_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_bot(fake, bots_model_store, sqlite_db_url):
        for user, (name, (data, content_type, _, _)) in enumerate(CORPUS.items(), start=600):
            await fake.send_message(user, attachments=[fake.attachment(data, name, content_type)])
        answers = {
            name: (await fake.wait_for("channel_message", channel_id=str(user)))[0].json["content"]
            for user, name in enumerate(CORPUS, start=600)
        }
    await each_refused_and_logged(answers, caplog, read_usage, sqlite_db_url)
