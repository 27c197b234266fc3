"""The page against hostile uploads: files that declare too many pixels, bodies it cannot decode,
slow or stalled clients, and too many uploads at once; and an iPhone's HEIC photo."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import logging
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from PIL import Image

from bots import messages, web
from media import FIXTURES, make_gif, screen_gif, undecoded
from test_web import MEMORY_ONLY, running_page, upload
from waiting import HANG_S, until

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


async def status_of(reader: asyncio.StreamReader, within: float = HANG_S) -> int:
    """The HTTP status the server answers with, waiting at most `within` seconds (by default only
    a hung page's: the status tells a refusal at once from one after a body deadline)."""
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
        for name, data in [
            ("screen.gif", screen_gif(9000, 9000, 300)),  # 7 KB, 24 gigapixels to composite
            ("bomb.gif", screen_gif(65535, 65535, 2)),  # past Pillow's own limit
        ]:
            with undecoded() as decoded:  # refused from their headers alone
                async with client.post(f"{url}/api/stylize", data=upload(name, data, "image/heic")) as response:
                    assert (decoded, response.status) == ([], 413), name
        async with client.post(f"{url}/api/stylize", data=upload("me.heic", heic.getvalue(), "image/heic")) as response:
            assert response.status == 200
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
        assert await status_of(await stalled(url)) == 408
        assert time.perf_counter() - started >= 1.0  # not before its deadline (a slow machine only adds)
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /api/stylize HTTP/1.1\r\n")
        answer = await trickled(reader, writer)  # cut off while lines still come (a line resets no deadline)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    logged = [r.getMessage() for r in caplog.records if "cut off" in r.getMessage()]
    assert len(logged) == 2 and "no complete request headers within 1 s" in logged[1]


@MEMORY_ONLY
async def test_uploads_are_admitted_and_capped_before_their_body_is_read(
    bots_model_store: Path, sqlite_db_url: str
) -> None:
    quick = {"web_body_timeout_s": 3.0}  # the stalled ones are cut off before the page stops
    async with running_page(bots_model_store, sqlite_db_url, web_uploads_per_ip=1, **quick) as url:
        first = await stalled(url)  # no cookie: the visitor is the address
        # Counted before a byte of the body is read: the same visitor, busy, is refused at once (429;
        # one that waited for the body it never gets would answer 408 after the body deadline).
        assert await status_of(await stalled(url, sent=0)) == 429
        other = (await visitors(url, 1))[0]  # another browser on the same address: one upload at a time
        assert await status_of(await stalled(url, cookie=other, sent=0)) == 429
        assert first.at_eof() is False
    budget = {"web_upload_budget_bytes": 2**20, "web_uploads_per_ip": 5}
    async with running_page(bots_model_store, sqlite_db_url, **budget, **quick) as url:
        cookies = await visitors(url, 3)
        # 1.2 MB asked of 1 MiB, no body sent: whichever comes last is refused at once (503), the two
        # held are cut off at the body deadline (408): the same statuses in any order of arrival.
        asked = [await stalled(url, cookie=c, length=400_000, sent=0) for c in cookies]
        assert sorted([await status_of(r) for r in asked]) == [408, 408, 503]


@MEMORY_ONLY
async def test_a_refused_upload_is_answered_and_not_read_any_further(
    bots_model_store: Path, sqlite_db_url: str
) -> None:
    # A client that goes on sending after its refusal: aiohttp's lingering close received all of it, as
    # fast as it came (60 such uploads held the page's loop); now its socket is paused until the close.
    async with running_page(bots_model_store, sqlite_db_url) as url:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2**16)  # the kernel's buffers hold little of it
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write((f"POST /api/stylize HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {FORM}\r\n"
                      f"Content-Length: {64 * 2**20}\r\n\r\n").encode() + PART)  # declared too big: refused unread
        sent = 0

        async def send() -> None:
            nonlocal sent
            while sent < 16 * 2**20:
                writer.write(b"\xff" * 2**16)
                sent += 2**16
                await writer.drain()

        sending = asyncio.create_task(send())
        assert await status_of(reader) == 413
        with pytest.raises(ConnectionError):  # the server closes it, unread, instead of taking all of it
            await asyncio.wait_for(sending, HANG_S)
        assert sent < 4 * 2**20  # what the sockets buffer: 768 KiB here
        writer.close()


@MEMORY_ONLY
async def test_a_clip_whose_page_was_closed_stops_drawing(
    bots_model_store: Path, sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bots import resources

    stylizer = resources.open_stylizer(None)  # the test's in-memory stylizer, shared by the page
    draw, gate = stylizer.stylize, asyncio.Event()  # the gate is never opened: a frame drawing holds on
    frames: list[str] = []  # how each frame's drawing ended

    async def held(*args: object, **kwargs: object) -> object:
        frames.append("drawing")
        try:
            await gate.wait()
        except asyncio.CancelledError:
            frames[-1] = "cancelled"
            raise
        return await draw(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stylizer, "stylize", held)
    async with running_page(bots_model_store, sqlite_db_url) as url:
        async with aiohttp.ClientSession() as client:
            asking = asyncio.create_task(
                client.post(f"{url}/api/stylize", data=upload("long.gif", make_gif([100] * 40), "image/gif"))
            )
            await until(lambda: frames == ["drawing"], "the clip's first frame")
            asking.cancel()  # the visitor leaves: the session closes the connection
            with pytest.raises(asyncio.CancelledError):
                await asking
        await until(lambda: frames != ["drawing"], "the end of the frame being drawn")
    assert frames == ["cancelled"]  # nothing drawn for nobody, nor asked for until the page stopped


def test_uploads_are_counted_per_address_and_one_always_fits_the_budget() -> None:
    uploads = web.Uploads(per_address=2, budget=100)
    assert uploads.reserve("a", 500) is None  # more than the whole budget: it holds all of it
    assert uploads.reserve("b", 1) == "overloaded"
    uploads.release("a", 500)
    assert uploads.reserve("b", 60) is None and uploads.reserve("b", 40) is None
    assert uploads.reserve("b", 0) == "too_many"
    uploads.release("b", 60)
    assert uploads.held == 40 and uploads.reserve("c", 61) == "overloaded"
