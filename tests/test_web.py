"""The local web page: its HTTP API, and the page itself driven in headless Chromium."""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
import torch
from PIL import Image
from playwright.async_api import Page, Route, async_playwright, expect

from bots import messages, web
from bots.resources import SharedCore
from bots.settings import Settings
from torchserve_fixture import free_ports

if TYPE_CHECKING:
    from conftest import ReadUsage

torch.set_num_threads(1)

FIXTURES = Path(__file__).with_name("fixtures")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@asynccontextmanager
async def running_page(model_store: Path, database_url: str) -> AsyncIterator[str]:
    """The page as `python -m bots web` serves it, on a free port; stopped (and flushed) after."""
    settings = Settings(
        _env_file=None,
        model_store=model_store,
        database_url=database_url,
        web_port=free_ports(1)[0],
        output_size=64,
        max_upload_bytes=2**20,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(web.serve(settings, SharedCore(settings), stop))
    url = f"http://127.0.0.1:{settings.web_port}"
    try:
        async with aiohttp.ClientSession() as client:
            for _ in range(200):  # until it listens
                try:
                    async with client.get(f"{url}/api/styles"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        yield url
    finally:
        stop.set()
        await task


def upload(name: str, data: bytes, content_type: str, style: str = "") -> aiohttp.FormData:
    form = aiohttp.FormData()
    if style:
        form.add_field("style", style)
    form.add_field("image", data, filename=name, content_type=content_type)
    return form


async def test_http_api(
    read_usage: ReadUsage, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # the default jar ignores cookies from IP addresses
    async with (
        running_page(bots_model_store, sqlite_db_url) as url,
        aiohttp.ClientSession(cookie_jar=jar) as client,
    ):
        async with client.get(url) as page:
            assert page.status == 200
            html = await page.text()
            assert "TELEGRAM_TOKEN" in html and "DISCORD_TOKEN" in html
        visitor = {cookie.key: cookie.value for cookie in jar}[web.VISITOR_COOKIE]
        async with client.get(f"{url}/api/styles") as response:
            body = await response.json()
        assert [(s["name"], s["title"], s["selected"]) for s in body["styles"]] == [
            ("anime2selfie", "Anime to selfie", False),
            ("selfie2anime", "Selfie to anime", True),
        ]
        form = upload("me.jpg", face_jpeg, "image/jpeg", style="anime2selfie")
        async with client.post(f"{url}/api/stylize", data=form) as response:
            assert response.content_type == "image/jpeg"
            assert Image.open(io.BytesIO(await response.read())).size == (64, 64)
        for form, words in [
            (upload("notes.txt", b"hello", "text/plain"), messages.NOT_AN_IMAGE),
            (upload("big.png", b"\0" * (2**20 + 5), "image/png"), messages.TOO_BIG.format(limit_mb=1)),
        ]:
            async with client.post(f"{url}/api/stylize", data=form) as response:
                assert response.status == 422
                assert (await response.json()) == {"message": words}

    rows = await read_usage(sqlite_db_url)
    assert [(r.platform, r.platform_user_id, r.style, r.status) for r in rows] == [
        ("web", visitor, "anime2selfie", "ok"),
        ("web", visitor, "selfie2anime", "bad_input"),
        ("web", visitor, "selfie2anime", "bad_input"),
    ]


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A tab in headless Debian Chromium (`apt-get install chromium`; .ci/run does), or skip."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium not found: install Debian's chromium package (.ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_the_page_in_a_browser(
    read_usage: ReadUsage, page: Page, bots_model_store: Path, sqlite_db_url: str, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    async with running_page(bots_model_store, sqlite_db_url) as url:
        await page.goto(url)
        await expect(page.locator("#style option")).to_have_count(2)
        await expect(page.locator("#style")).to_have_value("selfie2anime")  # the default
        await expect(page.locator("#no-styles-help")).to_be_hidden()

        await page.set_input_files("#file", FIXTURES / "grace_hopper_256.jpg")
        await expect(page.locator("#original")).to_be_visible()
        await page.select_option("#style", "anime2selfie")
        held: asyncio.Queue[Route] = asyncio.Queue()  # hold the upload to see the progress shown
        await page.route("**/api/stylize", held.put_nowait)
        await page.click("#go")
        upload_request = await held.get()
        await expect(page.locator("#progress")).to_be_visible()
        await expect(page.locator("#go")).to_be_disabled()
        await upload_request.continue_()
        await page.unroute("**/api/stylize")
        result = page.locator("#result")
        await expect(result).to_be_visible(timeout=60_000)
        assert await result.evaluate("img => img.complete && img.naturalWidth") == 64
        await expect(page.locator("#download")).to_have_attribute("download", "toonbot-anime2selfie.jpeg")
        await expect(page.locator("#caption")).to_have_text("Anime to selfie")
        await expect(page.locator("#progress")).to_be_hidden()

        await page.set_input_files("#file", notes)
        await page.click("#go")
        await expect(page.locator("#error")).to_have_text(messages.NOT_AN_IMAGE, timeout=60_000)
        await expect(page.locator("#result")).to_be_hidden()

    statuses = [(r.platform, r.style, r.status) for r in await read_usage(sqlite_db_url)]
    assert statuses == [("web", "anime2selfie", "ok"), ("web", "anime2selfie", "bad_input")]


async def test_an_empty_model_store_is_explained(page: Page, sqlite_db_url: str, tmp_path: Path) -> None:
    async with running_page(tmp_path, sqlite_db_url) as url:
        await page.goto(url)
        await expect(page.locator("#error")).to_have_text(messages.NO_STYLES)
        await expect(page.locator("#no-styles-help")).to_be_visible()
