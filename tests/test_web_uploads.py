"""The page against hostile uploads: files that declare too many pixels, bodies it cannot decode,
slow or stalled clients, and too many uploads at once; and an iPhone's HEIC photo."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from PIL import Image

from bots import messages, web
from media import FIXTURES, make_gif, screen_gif
from test_web import MEMORY_ONLY, running_page, upload

if TYPE_CHECKING:
    from conftest import ReadUsage

PART = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="me.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
FORM = "multipart/form-data; boundary=xyz"


OPEN: list[asyncio.StreamWriter] = []  # writers of the stalled connections: dropping one closes it


async def stalled(url: str, *, cookie: str = "", length: int = 900_000, sent: int = 4096) -> asyncio.StreamReader:
    """An upload that sends its headers and the start of its body, then nothing more (held open)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (f"POST /api/stylize HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {FORM}\r\n"
            f"Content-Length: {length}\r\n" + (f"Cookie: {web.VISITOR_COOKIE}={cookie}\r\n" if cookie else "") + "\r\n")
    writer.write(head.encode() + PART + b"\xff" * sent)
    await writer.drain()
    OPEN.append(writer)
    return reader


async def status_of(reader: asyncio.StreamReader, within: float) -> int:
    """The HTTP status the server answers with, waiting at most `within` seconds."""
    line = await asyncio.wait_for(reader.readline(), within)
    return int(line.split()[1])


async def trickled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lines: int = 50) -> bytes | None:
    """Send one header line every 0.2 s, never the end of them: what the server answered once it
    closes (None: it never did)."""
    got = b""
    for i in range(lines):
        try:
            writer.write(f"X-Slow-{i}: 1\r\n".encode())
            await writer.drain()
            data = await asyncio.wait_for(reader.read(4096), 0.2)
        except TimeoutError:
            continue
        except ConnectionError:  # the answer may still be waiting to be read
            with contextlib.suppress(ConnectionError):
                got += await reader.read()
            return got
        if not data:
            return got
        got += data
    return None


async def visitors(url: str, count: int) -> list[str]:
    """`count` validly signed visitor cookies, as `count` browsers get them."""
    cookies = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        for _ in range(count):
            async with client.get(url) as page:
                cookies.append(page.cookies[web.VISITOR_COOKIE].value)
    return cookies


@MEMORY_ONLY
async def test_hostile_files_get_413_heic_a_picture_and_undecodable_bodies_400(
    read_usage: ReadUsage, bots_model_store: Path, sqlite_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    heic = io.BytesIO()
    Image.open(FIXTURES / "obama_256.jpg").save(heic, "HEIF")
    body = PART + (FIXTURES / "obama_256.jpg").read_bytes() + b"\r\n--xyz--\r\n"
    async with running_page(bots_model_store, sqlite_db_url) as url, aiohttp.ClientSession() as client:
        for name, data, status in [
            ("screen.gif", screen_gif(9000, 9000, 300), 413),  # 7 KB, 24 gigapixels to composite
            ("bomb.gif", screen_gif(65535, 65535, 2), 413),  # past Pillow's own limit
            ("me.heic", heic.getvalue(), 200),
        ]:
            started = time.perf_counter()
            async with client.post(f"{url}/api/stylize", data=upload(name, data, "image/heic")) as response:
                assert response.status == status, name
                assert time.perf_counter() - started < 3
                if status == 200:
                    assert response.content_type == "image/jpeg"  # a picture, not a one-frame video
        headers = {"Content-Type": FORM, "Content-Encoding": "gzip"}  # a plain form that says it is gzipped
        async with client.post(f"{url}/api/stylize", data=body, headers=headers) as response:
            assert response.status == 400 and (await response.json())["message"] == messages.NOT_A_FORM
        headers = {"Content-Type": FORM, "Content-Encoding": "gzip"}  # really gzipped: aiohttp reads it
        async with client.post(f"{url}/api/stylize", data=gzip.compress(body), headers=headers) as response:
            assert response.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback
    assert [r.status for r in await read_usage(sqlite_db_url)] == ["bad_input", "bad_input", "ok", "bad_input", "ok"]


@MEMORY_ONLY
async def test_a_stalled_body_gets_408_and_headers_that_never_end_a_closed_connection(
    bots_model_store: Path, sqlite_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running_page(bots_model_store, sqlite_db_url, web_body_timeout_s=1.0, web_header_timeout_s=1.0) as url:
        started = time.perf_counter()
        assert await status_of(await stalled(url), within=5) == 408
        assert 1.0 <= time.perf_counter() - started < 3
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /api/stylize HTTP/1.1\r\n")
        started = time.perf_counter()
        answer = await trickled(reader, writer)
        assert answer is not None and time.perf_counter() - started < 3
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    logged = [r.getMessage() for r in caplog.records if "cut off" in r.getMessage()]
    assert len(logged) == 2 and "no complete request headers within 1 s" in logged[1]


@MEMORY_ONLY
async def test_uploads_are_admitted_and_capped_before_their_body_is_read(
    bots_model_store: Path, sqlite_db_url: str
) -> None:
    quick = {"web_body_timeout_s": 3.0}  # the stalled ones are cut off before the page stops
    async with running_page(bots_model_store, sqlite_db_url, web_uploads_per_ip=1, **quick) as url:
        first = await stalled(url)  # no cookie: the visitor is the address
        # Counted before a byte of the body is read: the same visitor, busy, is refused at once.
        assert await status_of(await stalled(url, sent=0), within=2) == 429
        other = (await visitors(url, 1))[0]  # another browser on the same address: one upload at a time
        assert await status_of(await stalled(url, cookie=other, sent=0), within=2) == 429
        assert first.at_eof() is False
    budget = {"web_upload_budget_bytes": 2**20, "web_uploads_per_ip": 5}
    async with running_page(bots_model_store, sqlite_db_url, **budget, **quick) as url:
        cookies = await visitors(url, 3)
        held = [await stalled(url, cookie=c, length=400_000) for c in cookies[:2]]  # 800 KB of 1 MiB
        await asyncio.sleep(0.2)
        assert await status_of(await stalled(url, cookie=cookies[2], length=400_000, sent=0), within=2) == 503
        assert all(not r.at_eof() for r in held)


@MEMORY_ONLY
async def test_a_clip_whose_page_was_closed_stops_drawing(bots_model_store: Path, sqlite_db_url: str) -> None:
    from bots import resources

    stylizer = resources.open_stylizer(None)  # the test's in-memory stylizer, shared by the page
    stylizer.delay_s = 0.1  # 40 frames: 4 s
    async with running_page(bots_model_store, sqlite_db_url) as url:
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            with pytest.raises(TimeoutError):  # the visitor leaves half a second in
                await client.post(f"{url}/api/stylize", data=upload("long.gif", make_gif([100] * 40), "image/gif"))
        await asyncio.sleep(0.3)
        drawn = stylizer.requests
        await asyncio.sleep(1.0)
        assert stylizer.requests == drawn < 10  # nothing drawn for nobody


def test_uploads_are_counted_per_address_and_one_always_fits_the_budget() -> None:
    uploads = web.Uploads(per_address=2, budget=100)
    assert uploads.reserve("a", 500) is None  # more than the whole budget: it holds all of it
    assert uploads.reserve("b", 1) == "overloaded"
    uploads.release("a", 500)
    assert uploads.reserve("b", 60) is None and uploads.reserve("b", 40) is None
    assert uploads.reserve("b", 0) == "too_many"
    uploads.release("b", 60)
    assert uploads.held == 40 and uploads.reserve("c", 61) == "overloaded"
