"""The local web page: its HTTP API, and the page itself driven in headless Chromium."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
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

from bots import i18n, messages, web
from bots.core import Core
from bots.resources import SharedCore
from config import Settings
from styles import catalog
from media import gif_frames, make_gif, make_mp4, probe
from test_core_deadlines import usage_rows
from test_db_usage import PostgresProxy
from waiting import until

if TYPE_CHECKING:
    from conftest import ReadUsage

torch.set_num_threads(1)

FIXTURES = Path(__file__).with_name("fixtures")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


class Announced(logging.Handler):
    """The address a page logs once it serves ("web page: http://HOST:PORT")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.url: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if found := re.fullmatch(r"web page: (http://\S+)", record.getMessage()):
            self.url = found[1]


@asynccontextmanager
async def running_page(model_store: Path, database_url: str, **more: object) -> AsyncIterator[str]:
    """The page as `python -m bots web` serves it, on the port it binds (WEB_PORT=0: free, and never
    another's), once it says it serves; stopped (and flushed) after."""
    settings = Settings(
        _env_file=None,
        model_store=model_store,
        database_url=database_url,
        web_port=0,
        output_size=64,
        max_upload_bytes=2**20,
        **more,  # type: ignore[arg-type]
    )
    stop, announced, level = asyncio.Event(), Announced(), web.logger.level
    web.logger.addHandler(announced)
    web.logger.setLevel(logging.INFO)
    task = asyncio.create_task(web.serve(settings, SharedCore(settings), stop))
    try:
        await until(lambda: announced.url is not None or task.done(), "the page serving")
        if task.done():  # it stopped: its error, or say so
            await task
            raise AssertionError("the page stopped before it served")
        assert announced.url is not None
        yield announced.url
    finally:
        web.logger.removeHandler(announced)
        web.logger.setLevel(level)
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
        cookie = {cookie.key: cookie.value for cookie in jar}[web.VISITOR_COOKIE]
        visitor = "v-" + cookie.partition(".")[0]  # the id the cookie signs
        async with client.get(f"{url}/api/styles") as response:
            body = await response.json()
        assert [(s["name"], s["title"], s["description"], s["selected"]) for s in body["styles"]] == [
            ("anime2selfie", "Anime to selfie", catalog.KNOWN["anime2selfie"].description, False),
            ("selfie2anime", "Selfie to anime", catalog.KNOWN["selfie2anime"].description, True),
        ]
        for style in body["styles"]:  # each card's before and after, as the archive carries it
            assert style["preview"] == f"/api/styles/{style['name']}/preview?version=1.0"
            async with client.get(f"{url}{style['preview']}") as response:
                assert response.content_type == "image/jpeg" and "max-age" in response.headers["Cache-Control"]
                with Image.open(io.BytesIO(await response.read())) as preview:
                    assert preview.width == 2 * preview.height  # before | after
        async with client.get(f"{url}/api/styles/cat2dog/preview") as response:
            assert response.status == 404  # not deployed here
        form = upload("me.jpg", face_jpeg, "image/jpeg", style="anime2selfie")
        async with client.post(f"{url}/api/stylize", data=form) as response:
            assert response.content_type == "image/jpeg"
            assert Image.open(io.BytesIO(await response.read())).size == (64, 64)
        form = upload("me.jpg", face_jpeg, "image/jpeg", style="anime2selfie")
        form.add_field("compare", "1")  # the page's "Before and after" box
        async with client.post(f"{url}/api/stylize", data=form) as response:
            assert Image.open(io.BytesIO(await response.read())).size == (128, 64)
        for form, status, words in [
            (upload("notes.txt", b"hello", "text/plain"), 415, messages.NOT_AN_IMAGE),
            (upload("big.png", b"\0" * (2**20 + 5), "image/png"), 413, messages.TOO_BIG.format(limit_mb=1)),
        ]:
            async with client.post(f"{url}/api/stylize", data=form) as response:
                assert response.status == status
                assert (await response.json()) == {"message": words}

    rows = await read_usage(sqlite_db_url)
    assert [(r.platform, r.platform_user_id, r.style, r.status) for r in rows] == [
        ("web", visitor, "anime2selfie", "ok"),
        ("web", visitor, "anime2selfie", "ok"),
        ("web", visitor, "selfie2anime", "bad_input"),
        ("web", visitor, "selfie2anime", "bad_input"),
    ]


@asynccontextmanager
async def chromium_tab(locale: str | None = None) -> AsyncIterator[Page]:
    """A tab in headless Debian Chromium (`apt-get install chromium`; .ci/run does), or skip;
    `locale`: the browser's language (its Accept-Language)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium not found: install Debian's chromium package (.ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        try:
            yield await browser.new_page(locale=locale)
        finally:
            await browser.close()


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A tab in headless Chromium, or skip."""
    async with chromium_tab() as tab:
        yield tab


async def test_the_page_in_a_browser(
    read_usage: ReadUsage, page: Page, bots_model_store: Path, sqlite_db_url: str, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    async with running_page(bots_model_store, sqlite_db_url) as url:
        await page.goto(url)
        cards = page.locator("#gallery .card")  # one card per style: what it does, before and after
        await expect(cards).to_have_count(2)
        await expect(cards.nth(0)).to_contain_text("Anime to selfie")
        await expect(cards.nth(0)).to_contain_text(catalog.KNOWN["anime2selfie"].description)
        sizes = "imgs => Promise.all(imgs.map(i => i.decode().then(() => [i.naturalWidth, i.naturalHeight])))"
        previews = await page.eval_on_selector_all("#gallery img", sizes)  # each card's preview loads
        assert len(previews) == 2 and all(w == 2 * h > 0 for w, h in previews)
        chosen = page.locator('#gallery .card[aria-checked="true"]')
        await expect(chosen).to_have_attribute("data-style", "selfie2anime")  # the default
        await expect(page.locator("#no-styles-help")).to_be_hidden()

        await page.set_input_files("#file", FIXTURES / "grace_hopper_256.jpg")
        await expect(page.locator("#original")).to_be_visible()
        await cards.nth(0).click()  # choose anime2selfie: the uploads below are drawn in it
        await expect(chosen).to_have_attribute("data-style", "anime2selfie")
        await expect(chosen).to_have_count(1)
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

        await page.check("#compare")  # before and after, with a divider to drag
        await page.click("#go")
        await expect(page.locator("#slider")).to_be_visible(timeout=60_000)
        await expect(page.locator("#result")).to_be_hidden()
        halves = await page.evaluate('["before-half", "after-half"].map(id => document.getElementById(id).width)')
        assert halves == [64, 64]
        await page.locator("#divider").scroll_into_view_if_needed()  # below the gallery
        box = await page.locator("#divider").bounding_box()
        assert box is not None
        await page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)  # drag it right
        clip = await page.evaluate('document.getElementById("after-half").style.clipPath')
        assert clip.startswith("inset(0px 0px 0px 7") or clip.startswith("inset(0px 0px 0px 8"), clip
        alone = await page.evaluate(  # the download is the result alone, not the pair
            """async () => { const img = new Image(); img.src = document.getElementById("download").href;
                await img.decode(); return [img.naturalWidth, img.naturalHeight]; }"""
        )
        assert alone == [64, 64]
        await page.uncheck("#compare")

        await page.set_input_files("#file", notes)
        await page.click("#go")
        await expect(page.locator("#error")).to_have_text(messages.NOT_AN_IMAGE, timeout=60_000)
        await expect(page.locator("#result")).to_be_hidden()

    statuses = [(r.platform, r.style, r.status) for r in await read_usage(sqlite_db_url)]
    assert statuses == [("web", "anime2selfie", status) for status in ("ok", "ok", "bad_input")]


MEMORY_ONLY = pytest.mark.parametrize("bots_model_store", ["memory"], indirect=True)


@MEMORY_ONLY
async def test_gifs_and_videos_through_the_http_api(
    read_usage: ReadUsage, bots_model_store: Path, sqlite_db_url: str
) -> None:
    gif, video = make_gif([100, 200, 300, 100]), make_mp4(3.0, 30)
    async with running_page(bots_model_store, sqlite_db_url) as url, aiohttp.ClientSession() as client:
        async with client.post(f"{url}/api/stylize", data=upload("dance.gif", gif, "image/gif")) as response:
            assert (response.status, response.content_type) == (200, "image/gif")
            assert gif_frames(await response.read()) == [100, 200, 300, 100]
        async with client.post(f"{url}/api/stylize", data=upload("me.mp4", video, "video/mp4")) as response:
            assert (response.status, response.content_type) == (200, "video/mp4")
            before, after = probe(video), probe(await response.read())  # a 3-second face video, with sound
        long = upload("long.mp4", make_mp4(11.0, 2, audio=False), "video/mp4")
        async with client.post(f"{url}/api/stylize", data=long) as response:
            assert response.status == 400
            assert "at most 10 s and 300 frames" in (await response.json())["message"]
        webm = upload("clip.webm", b"\x1aE\xdf\xa3 a webm header", "video/webm")
        async with client.post(f"{url}/api/stylize", data=webm) as response:
            assert response.status == 415 and (await response.json())["message"] == messages.NOT_A_CLIP
    assert after["frames"] == before["frames"] == 90
    assert after["seconds"] == pytest.approx(before["seconds"], abs=1 / 30)
    assert after["audio_seconds"] == pytest.approx(before["audio_seconds"], abs=0.05)
    rows = await read_usage(sqlite_db_url)
    assert [r.status for r in rows] == ["ok", "ok", "bad_input", "bad_input"]
    assert [(r.frames, r.seconds and round(r.seconds)) for r in rows[:2]] == [(4, 1), (90, 3)]


@MEMORY_ONLY
async def test_the_clip_limits_are_settings(bots_model_store: Path, sqlite_db_url: str) -> None:
    clip = upload("me.mp4", make_mp4(3.0, 10, audio=False), "video/mp4")
    async with (
        running_page(bots_model_store, sqlite_db_url, animation_max_seconds=2) as url,
        aiohttp.ClientSession() as client,
        client.post(f"{url}/api/stylize", data=clip) as response,
    ):
        assert response.status == 400 and "at most 2 s and 300 frames" in (await response.json())["message"]


@MEMORY_ONLY
async def test_a_gif_and_a_video_round_trip_in_the_browser(
    page: Page, bots_model_store: Path, sqlite_db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "dance.gif").write_bytes(make_gif([100, 200, 300, 100]))
    (tmp_path / "me.mp4").write_bytes(make_mp4(3.0, 30))
    async with running_page(bots_model_store, sqlite_db_url) as url:
        await page.goto(url)
        await expect(page.locator("#gallery .card")).to_have_count(2)
        assert "video/mp4" in (await page.locator("#file").get_attribute("accept") or "")

        await page.set_input_files("#file", tmp_path / "dance.gif")
        await expect(page.locator("#original")).to_be_visible()
        await page.click("#go")
        result = page.locator("#result")
        await expect(result).to_be_visible(timeout=60_000)
        await expect(page.locator("#result-video")).to_be_hidden()
        assert await result.evaluate("img => img.complete && img.naturalWidth") == 64
        await expect(page.locator("#download")).to_have_attribute("download", "toonbot-selfie2anime.gif")
        assert await result.get_attribute("src") == await page.locator("#download").get_attribute("href")
        async with page.expect_download() as saving:  # the very file the <img> shows
            await page.click("#download")
        saved = await (await saving.value).path()
        assert gif_frames(Path(saved).read_bytes()) == [100, 200, 300, 100]  # animated, in its timing

        await page.set_input_files("#file", tmp_path / "me.mp4")
        await expect(page.locator("#original-video")).to_be_visible()
        await page.click("#go")
        video = page.locator("#result-video")
        await expect(video).to_be_visible(timeout=60_000)
        await expect(result).to_be_hidden()
        for attribute in ("controls", "loop", "autoplay", "muted", "playsinline"):
            assert await video.get_attribute(attribute) is not None
        await expect(page.locator("#download")).to_have_attribute("download", "toonbot-selfie2anime.mp4")
        played = await video.evaluate(
            """v => new Promise((done) => {
                 const report = () => done({
                   duration: v.duration, width: v.videoWidth, error: v.error && v.error.code,
                 });
                 if (v.readyState >= 1) report(); else { v.onloadedmetadata = report; v.onerror = report; }
               })"""
        )
        await expect(page.locator("#error")).to_be_hidden()
    assert played["error"] is None and played["width"] == 64
    assert played["duration"] == pytest.approx(3.0, abs=1 / 30 + 0.05)


async def test_an_empty_model_store_is_explained(page: Page, sqlite_db_url: str, tmp_path: Path) -> None:
    async with running_page(tmp_path, sqlite_db_url) as url:
        await page.goto(url)
        await expect(page.locator("#error")).to_have_text(messages.NO_STYLES)
        await expect(page.locator("#no-styles-help")).to_be_visible()


# --- bad bodies, rate limits, Host/Origin, headers ------------------------------------

NOT_FORMS = [  # (headers, body, status): what scripts and clumsy clients send
    ({"Content-Type": "application/json"}, b'{"image": "aGVsbG8=", "style": "selfie2anime"}', 415),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"style=selfie2anime&image=abc", 415),
    ({"Content-Type": "image/jpeg"}, (FIXTURES / "grace_hopper_256.jpg").read_bytes(), 415),
    ({}, b"", 400),
    ({"Content-Type": "multipart/form-data"}, b"no boundary given", 400),
    ({"Content-Type": "multipart/form-data; boundary=xyz"}, b"--xyz\r\nbroken", 400),
    ({"Content-Type": "multipart/form-data; boundary=xyz"}, b"", 400),
]


async def test_bodies_that_are_not_forms_are_refused_and_logged(
    read_usage: ReadUsage, bots_model_store: Path, sqlite_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_page(bots_model_store, sqlite_db_url) as url, aiohttp.ClientSession() as client:
        for headers, body, status in NOT_FORMS:
            async with client.post(f"{url}/api/stylize", data=body, headers=headers) as response:
                assert response.status == status, (headers, body[:40])
                assert (await response.json())["message"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # no traceback
    rows = await read_usage(sqlite_db_url)
    assert [(r.platform, r.status) for r in rows] == [("web", "bad_input")] * len(NOT_FORMS)
    assert rows[2].input_bytes == len(NOT_FORMS[2][1])


async def test_rotating_cookies_do_not_reset_the_limit(
    read_usage: ReadUsage, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    async with (
        running_page(bots_model_store, sqlite_db_url, requests_per_minute=3) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
    ):
        statuses, retry_after = [], []
        for i in range(8):
            async with client.get(url) as page:  # a fresh, validly signed cookie every time
                fresh = page.cookies[web.VISITOR_COOKIE].value
            cookie = fresh if i % 2 else f"forged-{i}.{'A' * 22}"
            form = upload("me.jpg", face_jpeg, "image/jpeg")
            async with client.post(f"{url}/api/stylize", data=form, headers={"Cookie": f"{web.VISITOR_COOKIE}={cookie}"}) as response:
                statuses.append(response.status)
                retry_after.append(response.headers.get("Retry-After"))
    assert statuses == [200] * 3 + [429] * 5
    assert all(value is not None and 50 <= int(value) <= 60 for value in retry_after[3:])
    rows = await read_usage(sqlite_db_url)
    assert [r.status for r in rows] == ["ok"] * 3 + ["rate_limited"] * 5
    assert {r.platform_user_id for r in rows[::2]} == {"ip-127.0.0.1"}  # forged cookies count as none


def test_visitor_cookies_are_signed() -> None:
    visitors = web.Visitors(b"k" * 32)
    cookie = visitors.issue()
    visitor = visitors.verify(cookie)
    assert visitor is not None and cookie.startswith(visitor + ".")
    assert web.Visitors(b"other key").verify(cookie) is None
    for forged in (None, "", visitor, f"{visitor}.", f"x{cookie}", "a" * 100 + ".b"):
        assert visitors.verify(forged) is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, {"localhost:8000", "127.0.0.1:8000", "[::1]:8000"}),
        ({"web_host": "0.0.0.0", "web_port": 80}, {"localhost:80", "localhost", "127.0.0.1:80", "127.0.0.1", "[::1]:80", "[::1]"}),
        ({"web_host": "192.168.1.5"}, {"192.168.1.5:8000"}),
        ({"web_host": "fd00::5"}, {"[fd00::5]:8000"}),
        ({"web_allowed_hosts": "Toon.example.org,toon.lan:8443"}, {"toon.example.org:8000", "toon.lan:8443"}),
    ],
)
def test_allowed_hosts_follow_web_host_and_port(
    changes: dict[str, object], expected: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in changes.items():
        monkeypatch.setenv(name.upper(), str(value))
    assert web.allowed_hosts(Settings(_env_file=None)) == expected


SECURITY_HEADERS = ("X-Content-Type-Options", "Content-Security-Policy", "Referrer-Policy", "X-Frame-Options")


async def test_foreign_hosts_and_origins_are_refused_and_headers_are_set(
    read_usage: ReadUsage, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    async with running_page(bots_model_store, sqlite_db_url) as url, aiohttp.ClientSession() as client:
        port = url.rsplit(":", 1)[1]
        refused = [
            ({"Host": "evil.example"}, 421),  # DNS rebinding: evil.example resolving to 127.0.0.1
            ({"Host": f"evil.example:{port}"}, 421),
            ({"Origin": "http://evil.example"}, 403),
            ({"Origin": "null"}, 403),
            ({"Sec-Fetch-Site": "cross-site"}, 403),
        ]
        for headers, status in refused:
            for method, path in (("GET", "/"), ("GET", "/api/styles"), ("POST", "/api/stylize")):
                form = upload("me.jpg", face_jpeg, "image/jpeg") if method == "POST" else None
                async with client.request(method, url + path, headers=headers, data=form) as response:
                    assert response.status == status, (headers, path)
                    assert all(name in response.headers for name in SECURITY_HEADERS)
        allowed = {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}", "Sec-Fetch-Site": "same-origin"}
        async with client.post(f"{url}/api/stylize", headers=allowed, data=upload("me.jpg", face_jpeg, "image/jpeg")) as response:
            assert response.status == 200
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Referrer-Policy"] == "no-referrer"
        async with client.get(url) as page:
            policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert policy == web.content_security_policy(web.PAGE.read_text(encoding="utf-8"))
    assert policy.count("'sha256-") == 2  # the page's one inline script and one inline style
    assert [r.status for r in await read_usage(sqlite_db_url)] == ["ok"]  # refused ones never reach the core


@pytest.mark.parametrize(
    ("problem", "status", "retry"),
    [("overloaded", 503, "30"), ("unavailable", 503, "30"), ("no_face", 422, None), ("error", 500, None),
     ("too_big", 413, None), ("too_slow", 408, None), ("too_many", 429, "5")],
)
def test_each_refusal_has_its_status(problem: str, status: int, retry: str | None) -> None:
    reply = web.Reply("words", problem=problem, retry_after_s=int(retry) if retry else None)  # type: ignore[arg-type]
    response = web._answer(reply)
    assert (response.status, response.headers.get("Retry-After")) == (status, retry)


# --- the visitor's language ------------------------------------------------------------


async def test_the_page_and_its_answers_speak_the_browsers_language(
    bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    pt, ja = i18n.words("pt_BR"), i18n.words("ja")
    jar = aiohttp.CookieJar(unsafe=True)
    brazilian = {"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.8"}
    async with (
        running_page(bots_model_store, sqlite_db_url) as url,
        aiohttp.ClientSession(cookie_jar=jar, headers=brazilian) as client,
    ):
        async with client.get(url) as response:
            html = await response.text()
            assert response.headers["Content-Language"] == "pt-BR" and "Accept-Language" in response.headers["Vary"]
        assert '<html lang="pt-BR">' in html and pt("Redraw it") in html and "Redesenhar" in html
        assert '<option value="auto" selected>' in html  # no choice made: as the browser says
        async with client.get(f"{url}/api/styles") as response:
            titles = [(s["title"], s["description"]) for s in (await response.json())["styles"]]
        assert titles[1] == ("De selfie para anime", "Transforma uma selfie num retrato de anime.")
        pdf = upload("cv.pdf", b"%PDF-1.4\n%%EOF\n", "application/pdf")
        async with client.post(f"{url}/api/stylize", data=pdf) as response:
            assert (response.status, await response.json()) == (415, {"message": pt(messages.NOT_AN_IMAGE)})
        async with client.post(f"{url}/api/stylize", data=upload("me.jpg", face_jpeg, "image/jpeg")) as response:
            assert response.content_type == "image/jpeg"

        async with client.post(f"{url}/api/language", data={"language": "ja"}) as response:  # the selector
            chosen = {"message": ja(messages.LANGUAGE_SET, language="日本語")}
            assert (response.status, await response.json()) == (200, chosen)
        async with client.get(url) as response:
            html = await response.text()
        assert '<html lang="ja">' in html and "描き直す" in html and '<option value="ja" lang="ja" selected>' in html
        async with client.get(f"{url}/api/styles") as response:
            assert (await response.json())["styles"][1]["title"] == "セルフィーをアニメに"
        async with client.post(f"{url}/api/language", data={"language": "xx"}) as response:
            unknown = ja(messages.UNKNOWN_LANGUAGE, name="xx")
            assert response.status == 400 and (await response.json())["message"].startswith(unknown)
        async with client.post(f"{url}/api/language", data={"language": "auto"}) as response:
            assert (await response.json())["message"] == pt(messages.LANGUAGE_AUTO, language="Português (Brasil)")
        async with client.get(url) as response:
            assert '<html lang="pt-BR">' in await response.text()


async def test_every_language_of_the_page_keeps_its_content_security_policy(
    bots_model_store: Path, sqlite_db_url: str
) -> None:
    async with running_page(bots_model_store, sqlite_db_url) as url, aiohttp.ClientSession() as client:
        for locale in i18n.LANGUAGES:
            async with client.get(url, headers={"Accept-Language": locale.replace("_", "-")}) as response:
                html = await response.text()
                policy = response.headers["Content-Security-Policy"]
            assert f'<html lang="{locale.replace("_", "-")}">' in html
            assert policy == web.content_security_policy(html), locale  # the inline script and style hash alike


async def test_the_page_in_japanese_in_a_browser(bots_model_store: Path, sqlite_db_url: str, tmp_path: Path) -> None:
    ja, ru = i18n.words("ja"), i18n.words("ru")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    async with chromium_tab("ja-JP") as page, running_page(bots_model_store, sqlite_db_url) as url:
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        await page.goto(url)
        await expect(page.locator("html")).to_have_attribute("lang", "ja")
        await expect(page.locator("#go")).to_have_text("描き直す")
        await expect(page.locator("#gallery .card").nth(1)).to_contain_text("セルフィーをアニメに")  # the script ran
        preview_alt = await page.locator("#gallery .card img").nth(1).get_attribute("alt")
        assert preview_alt == ja("{title}: before and after").replace("{title}", "セルフィーをアニメに")
        await page.set_input_files("#file", notes)
        await page.click("#go")
        await expect(page.locator("#error")).to_have_text(ja(messages.NOT_AN_IMAGE), timeout=60_000)

        async with page.expect_navigation():  # the selector remembers the choice, then reloads
            await page.select_option("#language", "ru")
        await expect(page.locator("html")).to_have_attribute("lang", "ru")
        await expect(page.locator("#go")).to_have_text(ru("Redraw it"))
        await expect(page.locator("#gallery .card").nth(1)).to_contain_text("Селфи в аниме")
        await expect(page.locator("#language")).to_have_value("ru")
    assert blocked == []


# --- every answer's headers, the cookie's attributes, and the two per-minute limits apart -------

HEADER_VALUES = {
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@MEMORY_ONLY
async def test_every_answer_carries_the_security_headers_and_the_cookie_stays_in_the_page(
    bots_model_store: Path, sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the core")

    async with running_page(bots_model_store, sqlite_db_url) as url, aiohttp.ClientSession() as client:
        monkeypatch.setattr(Core, "styles", broken)  # /api/styles: the one error handler's 500
        seen = {}
        for path in ("/", "/api/styles/selfie2anime/preview?version=1.0", "/api/styles/cat2dog/preview",
                     "/no/such/page", "/api/styles"):
            async with client.get(url + path) as response:
                seen[path] = response.status, response.headers.copy()
    assert {path: status for path, (status, _) in seen.items()} == {
        "/": 200, "/api/styles/selfie2anime/preview?version=1.0": 200, "/api/styles/cat2dog/preview": 404,
        "/no/such/page": 404, "/api/styles": 500,
    }
    for path, (_, headers) in seen.items():
        assert {name: headers.get(name) for name in HEADER_VALUES} == HEADER_VALUES, path
        assert headers["Content-Security-Policy"] == seen["/"][1]["Content-Security-Policy"], path
    [cookie] = seen["/"][1].getall("Set-Cookie")
    attributes = {part.strip().partition("=")[0].lower(): part.strip().partition("=")[2] for part in cookie.split(";")}
    assert web.VISITOR_COOKIE in attributes and "httponly" in attributes  # no script reads it
    assert attributes["samesite"] == "Strict"  # no other site's request carries it


@MEMORY_ONLY
async def test_fresh_cookies_from_one_address_meet_the_address_limit(
    read_usage: ReadUsage, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    """Each visitor asks once, far below REQUESTS_PER_MINUTE: only the address's own limit can refuse."""
    async with (
        running_page(bots_model_store, sqlite_db_url, requests_per_minute=10, web_requests_per_minute_per_ip=3) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
    ):
        answers = []
        for _ in range(5):
            async with client.get(url) as page:
                cookie = {"Cookie": f"{web.VISITOR_COOKIE}={page.cookies[web.VISITOR_COOKIE].value}"}
            form = upload("me.jpg", face_jpeg, "image/jpeg")
            async with client.post(f"{url}/api/stylize", data=form, headers=cookie) as response:
                body = await response.read()
                answers.append((response.status, response.headers.get("Retry-After"), body))
    assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
    for _, retry_after, body in answers[3:]:
        assert retry_after is not None and 1 <= int(retry_after) <= 60
        assert json.loads(body) == {"message": i18n.words("en")(messages.SLOW_DOWN, limit=3)}  # the address's figure
    rows = await read_usage(sqlite_db_url)
    assert [r.status for r in rows] == ["ok"] * 3 + ["rate_limited"] * 2
    assert len({r.platform_user_id for r in rows}) == 5 and all(r.platform_user_id.startswith("v-") for r in rows)


@MEMORY_ONLY
async def test_one_visitor_meets_its_own_limit_while_its_address_has_room(
    read_usage: ReadUsage, bots_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # keeps its cookie, as a browser does
    async with (
        running_page(bots_model_store, sqlite_db_url, requests_per_minute=2, web_requests_per_minute_per_ip=100) as url,
        aiohttp.ClientSession(cookie_jar=jar) as visitor,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as neighbour,  # same address
    ):
        answers = []
        for client in (visitor, visitor, visitor, neighbour):
            async with client.get(url):
                pass  # the cookie, once
            async with client.post(f"{url}/api/stylize", data=upload("me.jpg", face_jpeg, "image/jpeg")) as response:
                answers.append((response.status, await response.read()))
    assert [status for status, _ in answers] == [200, 200, 429, 200]
    assert json.loads(answers[2][1]) == {"message": i18n.words("en")(messages.SLOW_DOWN, limit=2)}  # the visitor's figure
    rows = await read_usage(sqlite_db_url)
    assert [r.status for r in rows] == ["ok", "ok", "rate_limited", "ok"]
    assert rows[0].platform_user_id == rows[2].platform_user_id != rows[3].platform_user_id


ENGINE_ONLY = pytest.mark.parametrize(
    "bots_model_store", [pytest.param("engine", marks=pytest.mark.full)], indirect=True
)


@ENGINE_ONLY
async def test_a_video_drawn_by_the_real_engine(
    read_usage: ReadUsage, bots_model_store: Path, sqlite_db_url: str
) -> None:
    """The clip tests above draw in memory; this one goes frame by frame through the embedded engine
    (tests/test_web_torchserve.py draws one through TorchServe)."""
    video = make_mp4(0.5, 6)  # 3 frames, with sound
    async with (
        running_page(bots_model_store, sqlite_db_url) as url,
        aiohttp.ClientSession() as client,
        client.post(f"{url}/api/stylize", data=upload("me.mp4", video, "video/mp4")) as response,
    ):
        assert (response.status, response.content_type) == (200, "video/mp4")
        drawn = probe(await response.read())
    assert (drawn["frames"], drawn["size"][0]) == (3, 64)
    assert drawn["audio_seconds"] == pytest.approx(probe(video)["audio_seconds"], abs=0.05)
    [row] = await read_usage(sqlite_db_url)
    assert (row.status, row.model_version, row.frames) == ("ok", "1.0", 3)


@MEMORY_ONLY
@pytest.mark.deadline  # the reply waits for the database at most DB_DEADLINE_S
async def test_a_photo_while_the_database_hangs_is_answered_and_logged_once_it_answers(
    read_usage: ReadUsage, bots_model_store: Path, postgres_db_url: str, face_jpeg: bytes
) -> None:
    proxy = PostgresProxy(postgres_db_url)  # passes nothing while frozen: a hung server, never an error
    await proxy.start()
    hung = aiohttp.ClientTimeout(total=10)  # a reply that waited for the database would never come
    try:
        async with running_page(bots_model_store, proxy.url) as url, aiohttp.ClientSession(timeout=hung) as client:
            proxy.freeze()
            async with client.post(f"{url}/api/stylize", data=upload("me.jpg", face_jpeg, "image/jpeg")) as response:
                assert (response.status, response.content_type) == (200, "image/jpeg")
            proxy.thaw()
            rows = await usage_rows(read_usage, postgres_db_url, 1)  # written by the page while it runs
        assert rows == [("ip-127.0.0.1", "selfie2anime", "ok")]
    finally:
        proxy.thaw()
        await proxy.cut()
