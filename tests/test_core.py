"""The platform-free core over a real SQLite database, drawing with the in-memory stylizer and
the real embedded engine (tiny .mar); what only the engine does (faces, the model store, its queue)
on the engine alone."""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from PIL import Image

from bots import core as core_module
from bots import messages
from bots.core import Attachment, Core, Reply, Request
from bots.resources import SharedCore
from config import Settings
from db.engine import create_engine, session_factory
from db.usage import UsageRecorder
from fakes.stylizer import MemoryStylizer
from group_photos import group_photo
from serving import replies
from serving.api import ImageFormat, StyleInfo, Stylized, Unavailable
from serving.engine import EmbeddedEngine

if TYPE_CHECKING:
    from conftest import ReadUsage

FIXTURES = Path(__file__).with_name("fixtures")

torch.set_num_threads(1)


def photo(data: bytes, content_type: str = "image/jpeg") -> Attachment:
    """An attachment as an adapter would build it."""

    async def read() -> bytes:
        return data

    return Attachment(content_type, len(data), read)


def never_read(content_type: str, size: int) -> Attachment:
    """An attachment the core must refuse from its declared type or size alone."""

    async def read() -> bytes:
        raise AssertionError("the core fetched a file it should have refused unseen")

    return Attachment(content_type, size, read)


def request(user: str = "1", text: str = "", attachment: Attachment | None = None) -> Request:
    return Request(platform="telegram", user_id=user, chat_id=f"chat{user}", text=text, attachment=attachment)


CORE_LIMITS = {
    "default_style": "selfie2anime",
    "requests_per_minute": 10,
    "max_in_flight": 2,
    "max_upload_bytes": 2**20,
    "output_size": 64,
}


def core_settings(model_store: Path, database_url: str) -> Settings:
    return Settings(
        _env_file=None,
        model_store=model_store,
        database_url=database_url,
        requests_per_minute=100,
        output_size=64,
    )


@pytest.fixture
def settings(bots_model_store: Path, sqlite_db_url: str) -> Settings:
    """The in-memory stylizer (fast lane), then the real engine."""
    return core_settings(bots_model_store, sqlite_db_url)


@pytest.fixture
def shared(settings: Settings) -> SharedCore:
    return SharedCore(settings)


@pytest.fixture
def engine_shared(engine_model_store: Path, sqlite_db_url: str) -> SharedCore:
    """Always the real engine: for what only it does (faces, the model store)."""
    return SharedCore(core_settings(engine_model_store, sqlite_db_url))


async def test_commands(shared: SharedCore) -> None:
    core = await shared.open()
    try:
        start = await core.handle(request(text="/start"))
        assert start.text == messages.WELCOME.format(style="Selfie to anime")
        assert (await core.handle(request(text="/help"))).text == messages.HELP
        assert (await core.handle(request(text="/nonsense"))).text == messages.HELP
        assert (await core.handle(request(text="hello"))).text == messages.NOT_A_COMMAND

        styles = await core.handle(request(text="/styles"))
        assert [(b.style, b.selected) for b in styles.buttons] == [
            ("anime2selfie", False),
            ("selfie2anime", True),  # the default
        ]
        assert "selfie2anime - Turns a selfie into an anime portrait." in styles.text

        unknown = await core.handle(request(text="/style mona_lisa"))
        assert unknown.text.startswith(messages.UNKNOWN_STYLE.format(name="mona_lisa"))
        assert len(unknown.buttons) == 2
        bare = await core.handle(request(text="/style"))
        assert bare.text.startswith(messages.STYLES_HEADER.format(style="selfie2anime"))
    finally:
        await shared.close()


async def test_chosen_style_survives_a_restart(settings: Settings) -> None:
    first = SharedCore(settings)
    core = await first.open()
    set_reply = await core.handle(request(text="/style@toonbot_bot anime2selfie"))
    assert set_reply.text == messages.STYLE_SET.format(title="Anime to selfie")
    await first.close()

    second = SharedCore(settings)  # a new process, the same database
    core = await second.open()
    try:
        styles = await core.handle(request(text="/styles"))
        assert [b.style for b in styles.buttons if b.selected] == ["anime2selfie"]
        other = await core.handle(request(user="2", text="/styles"))
        assert [b.style for b in other.buttons if b.selected] == ["selfie2anime"]
    finally:
        await second.close()


async def test_new_deployments_show_without_a_restart(
    engine_model_store: Path, sqlite_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()  # the core's clock moves only when the test moves it: no race with a loaded machine
    monkeypatch.setattr(core_module, "time", clock)
    store = tmp_path / "model_store"
    store.mkdir()
    shutil.copy(engine_model_store / "selfie2anime.mar", store)
    shared = SharedCore(core_settings(store, sqlite_db_url))
    core = await shared.open()
    try:
        before = await core.handle(request(text="/styles"))
        shutil.copy(engine_model_store / "anime2selfie.mar", store)  # deployed while running
        clock.now += core_module.CATALOGUE_TTL_S - 0.01
        cached = await core.handle(request(text="/styles"))
        clock.now += 0.01
        after = await core.handle(request(text="/styles"))
    finally:
        await shared.close()
    assert [[b.style for b in r.buttons] for r in (before, cached, after)] == [
        ["selfie2anime"], ["selfie2anime"], ["anime2selfie", "selfie2anime"],
    ]


class Clock:
    """`bots.core`'s `time` module with a `monotonic` the test sets; everything else is the real module's."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


async def test_photo_is_stylized_and_logged(
    read_usage: ReadUsage, shared: SharedCore, face_jpeg: bytes, sqlite_db_url: str
) -> None:
    core = await shared.open()
    reply = await core.handle(request(attachment=photo(face_jpeg)))
    once = await core.handle(request(user="2", text="/style anime2selfie", attachment=photo(face_jpeg)))
    after = await core.handle(request(user="2", text="/styles"))
    await shared.close()  # flushes the usage log

    assert reply.content_type == "image/jpeg" and reply.text == "Selfie to anime"
    assert reply.image is not None
    assert Image.open(io.BytesIO(reply.image)).size == (64, 64)
    assert once.image is not None and once.text == "Anime to selfie"
    assert [b.style for b in after.buttons if b.selected] == ["selfie2anime"]  # just once

    rows = await read_usage(sqlite_db_url)
    assert [(r.platform_user_id, r.chat_id, r.style, r.status) for r in rows] == [
        ("1", "chat1", "selfie2anime", "ok"),
        ("2", "chat2", "anime2selfie", "ok"),
    ]
    assert rows[0].model_version == "1.0"
    assert rows[0].input_bytes == len(face_jpeg) and rows[0].input_pixels == 256 * 256
    assert rows[0].latency_ms >= 0
    assert [r.faces for r in rows] == [1, 0]  # anime2selfie keeps the centre crop


async def test_compare_puts_the_original_beside_the_result(shared: SharedCore, face_jpeg: bytes) -> None:
    """A caption "/style [NAME] compare" or a front end's own option; the text command says how."""
    core = await shared.open()
    try:
        captioned = await core.handle(request(text="/style anime2selfie compare", attachment=photo(face_jpeg)))
        current = await core.handle(request(text="/style@toonbot compare", attachment=photo(face_jpeg)))
        option = await core.handle(replace(request(attachment=photo(face_jpeg)), compare=True))
        plain = await core.handle(request(attachment=photo(face_jpeg)))
        told = await core.handle(request(text="/style compare"))
        switched = await core.handle(request(text="/style anime2selfie compare"))
    finally:
        await shared.close()
    sizes = [Image.open(io.BytesIO(r.image)).size for r in (captioned, current, option, plain) if r.image]
    assert sizes == [(128, 64), (128, 64), (128, 64), (64, 64)]
    assert (captioned.text, current.text) == ("Anime to selfie", "Selfie to anime")
    assert told.text == messages.COMPARE_HOW
    assert switched.text.startswith(messages.STYLE_SET.format(title="Anime to selfie")) and "compare" in switched.text


async def test_typed_calls_answer_as_the_chat_text_does(shared: SharedCore, face_jpeg: bytes) -> None:
    """What the page, Discord's slash commands and Telegram's buttons call, with no command text:
    the replies of the chat text that parses into the same calls."""
    core = await shared.open()
    try:
        listing = await core.list_styles(request())
        assert listing == await core.handle(request(text="/styles"))
        unknown = await core.set_style(request(), "mona_lisa")
        assert unknown == await core.handle(request(text="/style mona_lisa"))
        assert unknown.text.startswith(messages.UNKNOWN_STYLE.format(name="mona_lisa")) and len(unknown.buttons) == 2
        chosen = await core.set_style(request(), "anime2selfie")
        assert chosen == Reply(messages.STYLE_SET.format(title="Anime to selfie"))
        compared = await core.set_style(request(user="2"), "anime2selfie", compare=True)
        assert compared == await core.handle(request(user="3", text="/style anime2selfie compare"))
        assert [b.style for b in (await core.list_styles(request())).buttons if b.selected] == ["anime2selfie"]

        once = await core.handle(replace(request(user="4", attachment=photo(face_jpeg)), style="anime2selfie"))
        captioned = await core.handle(request(user="5", text="/style anime2selfie", attachment=photo(face_jpeg)))
        assert once.image is not None and captioned.image is not None
        assert once.text == captioned.text == "Anime to selfie"
        kept = await core.list_styles(request(user="4"))
        assert [b.style for b in kept.buttons if b.selected] == ["selfie2anime"]  # just once
        wrong = await core.handle(replace(request(user="4", attachment=photo(face_jpeg)), style="mona_lisa"))
        assert wrong.problem == "unknown_style" and wrong.buttons == listing.buttons
        assert wrong.text.startswith(messages.UNKNOWN_STYLE.format(name="mona_lisa"))
    finally:
        await shared.close()


class Unreachable(MemoryStylizer):
    """A runtime that cannot list its styles (TorchServe down)."""

    async def styles(self) -> list[StyleInfo]:
        raise Unavailable(replies.UNAVAILABLE)


async def test_an_unreachable_runtime_is_answered_in_servings_words(sqlite_db_url: str, face_jpeg: bytes) -> None:
    engine = create_engine(sqlite_db_url)
    sessions = session_factory(engine)
    recorder = UsageRecorder(sessions)
    core = Core(stylizer=Unreachable(), sessions=sessions, recorder=recorder, **CORE_LIMITS)
    try:
        answered = [
            await core.list_styles(request()),
            await core.set_style(request(), "anime2selfie"),
            await core.handle(request(text="/styles")),
            await core.handle(request(text="/style anime2selfie")),
            await core.handle(request(text="/start")),
        ]
        drawn = await core.handle(replace(request(attachment=photo(face_jpeg)), style="anime2selfie"))
    finally:
        await recorder.close(timeout_s=1.0)
        await engine.dispose()
    assert answered == [Reply(replies.UNAVAILABLE)] * 5
    assert drawn == Reply(replies.UNAVAILABLE, problem="unavailable", retry_after_s=core_module.RETRY_OVERLOADED_S)


async def test_a_group_photo_reply_says_how_many_faces_were_drawn(
    read_usage: ReadUsage, engine_shared: SharedCore, sqlite_db_url: str
) -> None:
    out = io.BytesIO()
    group_photo(3, 200).save(out, "JPEG", quality=92)
    core = await engine_shared.open()
    reply = await core.handle(request(attachment=photo(out.getvalue())))
    await engine_shared.close()
    assert reply.text == "Selfie to anime" + messages.FACES_DRAWN.format(count=3)
    assert [(r.status, r.faces) for r in await read_usage(sqlite_db_url)] == [("ok", 3)]


async def test_bad_input_gets_plain_words(
    read_usage: ReadUsage, engine_shared: SharedCore, face_jpeg: bytes, sqlite_db_url: str
) -> None:
    core = await engine_shared.open()
    pdf = await core.handle(request(attachment=never_read("application/pdf", 12_000)))
    huge = await core.handle(request(attachment=never_read("image/png", 50 * 2**20)))
    garbage = await core.handle(request(attachment=photo(b"not an image at all", content_type="image/jpeg")))
    cat = await core.handle(request(attachment=photo((FIXTURES / "chelsea_256.jpg").read_bytes())))
    unknown = await core.handle(request(text="/style mona_lisa", attachment=photo(face_jpeg)))
    await engine_shared.close()

    assert pdf == Reply(messages.NOT_AN_IMAGE, problem="not_an_image")
    assert huge == Reply(messages.TOO_BIG.format(limit_mb=20), problem="too_big")
    assert garbage == Reply(messages.NOT_AN_IMAGE, problem="bad_input")  # the handler's words and the core's agree
    assert cat.image is None and "face" in cat.text and cat.problem == "no_face"
    assert unknown.text.startswith(messages.UNKNOWN_STYLE.format(name="mona_lisa"))
    assert unknown.problem == "unknown_style"
    assert [r.status for r in await read_usage(sqlite_db_url)] == [
        "bad_input", "bad_input", "bad_input", "no_face", "bad_input",
    ]


async def test_one_photo_at_a_time_per_user(
    read_usage: ReadUsage, shared: SharedCore, face_jpeg: bytes, sqlite_db_url: str
) -> None:
    core = await shared.open()
    downloading = asyncio.Event()
    release = asyncio.Event()

    async def slow_read() -> bytes:
        downloading.set()
        await release.wait()
        return face_jpeg

    first = asyncio.create_task(core.handle(request(attachment=Attachment("image/jpeg", None, slow_read))))
    await downloading.wait()
    second = await core.handle(request(attachment=photo(face_jpeg)))
    other_user = await core.handle(request(user="2", attachment=photo(face_jpeg)))
    release.set()
    assert (await first).image is not None
    await shared.close()

    assert second == Reply(messages.BUSY_USER, problem="busy", retry_after_s=5)
    assert other_user.image is not None
    statuses = {(r.platform_user_id, r.status) for r in await read_usage(sqlite_db_url)}
    assert statuses == {("1", "rate_limited"), ("1", "ok"), ("2", "ok")}


async def test_per_minute_limit(settings: Settings, face_jpeg: bytes) -> None:
    shared = SharedCore(settings.model_copy(update={"requests_per_minute": 2}))
    core = await shared.open()
    try:
        replies = [await core.handle(request(attachment=photo(face_jpeg))) for _ in range(3)]
    finally:
        await shared.close()
    assert [r.image is not None for r in replies] == [True, True, False]
    refusal = replies[2]
    assert (refusal.text, refusal.problem) == (messages.SLOW_DOWN.format(limit=2), "too_many")
    assert refusal.retry_after_s is not None and 55 <= refusal.retry_after_s <= 60  # the first photo's minute


async def test_database_down_photos_still_answered(face_jpeg: bytes) -> None:
    dead = create_engine("postgresql+asyncpg://toonbot@127.0.0.1:9/nothing_listens_here", timeout=1)
    sessions = session_factory(dead)
    recorder = UsageRecorder(sessions, retry_min_s=0.05, retry_max_s=0.05)
    engine = MemoryStylizer()
    core = Core(stylizer=engine, sessions=sessions, recorder=recorder, **CORE_LIMITS)
    try:
        reply = await core.handle(request(attachment=photo(face_jpeg)))
        assert reply.image is not None and reply.text == "Selfie to anime"  # the default style
        assert recorder.pending == 1  # kept for when the database is back
    finally:
        await recorder.close(timeout_s=0.2)
        await engine.close()
        await dead.dispose()


class CountingStylizer:
    """The real engine, with a count of how many requests it holds at once."""

    def __init__(self, engine: EmbeddedEngine) -> None:
        self.engine = engine
        self.now = self.most = 0

    async def stylize(
        self, style: str, image: bytes, *, size: int = 512, fmt: ImageFormat = "jpeg", **options: object
    ) -> Stylized:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await self.engine.stylize(style, image, size=size, fmt=fmt, **options)  # type: ignore[arg-type]
        finally:
            self.now -= 1

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)


async def test_a_burst_queues_instead_of_overloading(
    read_usage: ReadUsage, engine_model_store: Path, sqlite_db_url: str, face_jpeg: bytes
) -> None:
    # More users at once than the engine's queue holds (4): the core lets 3 through at a time.
    engine = EmbeddedEngine(engine_model_store, queue_size=4)
    counting = CountingStylizer(engine)
    db = create_engine(sqlite_db_url)
    sessions = session_factory(db)
    recorder = UsageRecorder(sessions)
    limits = {**CORE_LIMITS, "max_in_flight": 3}
    core = Core(stylizer=counting, sessions=sessions, recorder=recorder, **limits)
    try:
        replies = await asyncio.gather(
            *(core.handle(request(user=str(u), attachment=photo(face_jpeg))) for u in range(12))
        )
    finally:
        await recorder.close()
        await engine.close()
        await db.dispose()
    assert all(r.image is not None for r in replies), [r.text for r in replies if r.image is None]
    assert counting.most == 3
    assert [r.status for r in await read_usage(sqlite_db_url)] == ["ok"] * 12
