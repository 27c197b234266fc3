"""A style whose live version falls below its bar is marked experimental, with one line saying why:
in /styles (Telegram), the Discord embed, and the page's gallery."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from fakes.stylizer import MemoryStylizer
from fakes.discord import FakeDiscord
from test_discord import answers, fake  # noqa: F401  (fake: the fake Discord fixture)
from test_discord import running_bot as running_discord
from playwright.async_api import Page, expect
from test_web import page, running_page  # noqa: F401  (page: a Chromium tab)

from bots import messages, resources
from bots.core import Request
from bots.resources import SharedCore
from config import Settings
from serving.client import TorchServeClient
from serving.engine import EmbeddedEngine
from styles import catalog
from styles.quality import Shortfall, below_bar, read_quality

BUNDLED = Path(__file__).resolve().parents[1] / "model_store"
WHY = Shortfall("judged", 0.67, 0.8)
SAID = messages.EXPERIMENTAL["judged"].format(value=0.67, bar=0.8)
UNREACHABLE = catalog.Bar(min_judged=1.01)  # no share of pictures reaches it


@pytest.fixture
def stylizer(monkeypatch: pytest.MonkeyPatch) -> MemoryStylizer:
    """cat2dog and horse2zebra, the latter below its bar."""
    memory = MemoryStylizer(("cat2dog", "horse2zebra"))
    memory._styles["horse2zebra"] = replace(memory._styles["horse2zebra"], experimental=WHY)
    monkeypatch.setattr(resources, "open_stylizer", lambda settings: memory)
    monkeypatch.setattr(resources, "open_management", lambda settings, stylizer: memory)
    return memory


async def test_styles_says_why_a_style_is_experimental(
    stylizer: MemoryStylizer, tmp_path: Path, sqlite_db_url: str
) -> None:
    shared = SharedCore(Settings(_env_file=None, model_store=tmp_path, database_url=sqlite_db_url,
                                 default_style="cat2dog"))
    core = await shared.open()
    try:
        listing = await core.handle(Request(platform="telegram", user_id="1", chat_id="1", text="/styles"))
    finally:
        await shared.close()
    lines = listing.text.splitlines()
    horse = next(i for i, line in enumerate(lines) if line.startswith("horse2zebra - "))
    assert lines[horse + 1] == f"  {SAID}"
    assert SAID not in "\n".join(lines[:horse])  # cat2dog meets its bar


async def test_the_discord_embed_says_why(
    stylizer: MemoryStylizer, fake: FakeDiscord, tmp_path: Path, sqlite_db_url: str
) -> None:
    async with running_discord(fake, tmp_path, sqlite_db_url, default_style="cat2dog"):
        [listing] = await answers(fake, await fake.slash_command(41, "styles"))
    [embed] = listing.json["data"]["embeds"]
    assert f"horse2zebra - {catalog.KNOWN['horse2zebra'].description}\n  {SAID}" in embed["description"]


async def test_the_gallery_gets_the_reason(stylizer: MemoryStylizer, tmp_path: Path, sqlite_db_url: str) -> None:
    async with running_page(tmp_path, sqlite_db_url) as url, aiohttp.ClientSession() as client:
        async with client.get(f"{url}/api/styles") as response:
            body = await response.json()
    assert {s["name"]: s["experimental"] for s in body["styles"]} == {"cat2dog": None, "horse2zebra": SAID}


async def test_the_bundled_styles_are_marked_on_their_own_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled horse2zebra meets its bar since it paints stripes (stretch 6); a bar no figure can meet
    shows the engine reads the archive's own quality.json."""
    store = tmp_path / "store"
    store.mkdir()
    for style in ("horse2zebra", "cat2dog"):
        shutil.copy(BUNDLED / f"{style}.mar", store)
    engine = EmbeddedEngine(store, cache_dir=tmp_path / "cache")
    try:
        found = {s.name: s.experimental for s in await engine.styles()}
    finally:
        await engine.close()
    horse = read_quality(store / "horse2zebra.mar")
    assert horse is not None and found["horse2zebra"] == below_bar(horse, catalog.bar("horse2zebra")) is None
    assert found["cat2dog"] is None
    monkeypatch.setitem(catalog.BARS, "horse2zebra", UNREACHABLE)
    engine = EmbeddedEngine(store, cache_dir=tmp_path / "cache")
    try:
        found = {s.name: s.experimental for s in await engine.styles()}
    finally:
        await engine.close()
    assert found["horse2zebra"] == Shortfall("judged", horse.judged.value, UNREACHABLE.min_judged)


async def test_the_gallery_shows_the_reason_in_a_browser(
    stylizer: MemoryStylizer, page: Page, tmp_path: Path, sqlite_db_url: str  # noqa: F811
) -> None:
    async with running_page(tmp_path, sqlite_db_url) as url:
        await page.goto(url)
        horse = page.locator('#gallery .card[data-style="horse2zebra"]')
        await expect(horse.locator(".experimental-note")).to_have_text(SAID)
        await expect(page.locator('#gallery .card[data-style="cat2dog"] .experimental-note')).to_have_count(0)


async def test_a_torchserve_client_reads_the_figures_from_the_model_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(catalog.BARS, "horse2zebra", UNREACHABLE)
    shutil.copy(BUNDLED / "horse2zebra.mar", tmp_path)
    client = TorchServeClient("http://127.0.0.1:9", model_store=tmp_path)
    meta = {"title": "Horse to zebra", "description": "Stripes.", "needs_face": False}

    async def describe(*args: object, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
        return 200, {}, json.dumps([{"modelVersion": "1.0", "customizedMetadata": json.dumps(meta)}]).encode()

    client._request = describe  # type: ignore[method-assign]  # TorchServe's GET /models/horse2zebra
    try:
        info = await client._describe(client.management_urls[0], "horse2zebra")
    finally:
        await client.close()
    assert info is not None and info.experimental is not None
    assert info.experimental == below_bar(read_quality(tmp_path / "horse2zebra.mar"), catalog.bar("horse2zebra"))
