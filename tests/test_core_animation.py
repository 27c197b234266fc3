"""Animated GIFs and short videos through the platform-free core: limits, one model slot per clip,
progress, the reply's kind and the usage log (the in-memory stylizer over a real SQLite database)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bots import messages
from bots.core import Attachment, Core, Progress, Request, every
from db.engine import create_engine, session_factory
from db.usage import UsageRecorder
from fakes.stylizer import MemoryStylizer
from media import FIXTURES, gif_frames, make_gif, make_mp4, probe, screen_gif, undecoded
from serving import animation, inputs
from serving.api import NoFace, Stylized
from serving.engine import EmbeddedEngine
from waiting import until

if TYPE_CHECKING:
    from conftest import ReadUsage

LIMITS = {
    "default_style": "selfie2anime",
    "requests_per_minute": 100,
    "max_in_flight": 2,
    "max_upload_bytes": 2**20,
    "output_size": 64,
}



def clip(data: bytes, content_type: str) -> Attachment:
    async def read() -> bytes:
        return data

    return Attachment(content_type, len(data), read)


def request(user: str, attachment: Attachment, progress: Progress | None = None) -> Request:
    return Request(
        platform="telegram", user_id=user, chat_id=f"chat{user}", attachment=attachment, progress=progress
    )


def slots(state: str) -> float:
    """The core's model slots now, as its metrics count them: frames and photos "waiting" or "drawing"."""
    name = {"waiting": "toonbot_queue_depth", "drawing": "toonbot_drawing_now"}[state]
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
async def sessions(sqlite_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    db = create_engine(sqlite_db_url)
    yield session_factory(db)
    await db.dispose()


@pytest.fixture
async def recorder(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[UsageRecorder]:
    recorder = UsageRecorder(sessions)
    yield recorder
    await recorder.close()


@pytest.fixture
def core_over(
    sessions: async_sessionmaker[AsyncSession], recorder: UsageRecorder
) -> Callable[..., Core]:
    """A core drawing with the stylizer given, logging to the test's database."""

    def build(stylizer: object, **more: object) -> Core:
        limits = {**LIMITS, **more}
        return Core(stylizer=stylizer, sessions=sessions, recorder=recorder, **limits)  # type: ignore[arg-type]

    return build


async def test_a_gif_and_a_video_come_back_animated_in_their_own_format(
    read_usage: ReadUsage, recorder: UsageRecorder, core_over: Callable[..., Core], sqlite_db_url: str
) -> None:
    core = core_over(MemoryStylizer())
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    gif, mp4, silent = make_gif([100, 200, 300, 100]), make_mp4(3.0, 30), make_mp4(1.0, 10, audio=False)
    as_gif = await core.handle(request("1", clip(gif, "image/gif"), progress=progress))
    as_mp4 = await core.handle(request("2", clip(mp4, "video/mp4")))
    as_silent = await core.handle(request("3", clip(silent, "")))  # undeclared: the bytes tell
    await recorder.close()

    assert (as_gif.animated, as_gif.content_type, as_gif.sound) == ("gif", "image/gif", False)
    assert as_gif.text == "Selfie to anime" and as_gif.image is not None
    assert gif_frames(as_gif.image) == [100, 200, 300, 100]
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert (as_mp4.animated, as_mp4.content_type, as_mp4.sound) == ("mp4", "video/mp4", True)
    assert as_mp4.image is not None
    before, after = probe(mp4), probe(as_mp4.image)
    assert after["frames"] == before["frames"] == 90
    assert after["seconds"] == pytest.approx(before["seconds"], abs=1 / 30)
    assert after["size"] == (64, 64)  # OUTPUT_SIZE, every frame
    assert (as_silent.animated, as_silent.sound) == ("mp4", False)

    rows = await read_usage(sqlite_db_url)
    assert [(r.platform_user_id, r.status) for r in rows] == [("1", "ok"), ("2", "ok"), ("3", "ok")]
    assert rows[1].input_bytes == len(mp4) and rows[1].input_pixels == 128 * 96  # one frame's
    assert rows[1].model_version == "1.0" and rows[1].latency_ms >= 0
    assert (rows[0].frames, rows[1].frames) == (4, 90)  # what the clip had drawn, and how long it was
    assert rows[0].seconds == pytest.approx(0.7) and rows[1].seconds == pytest.approx(3.0, abs=0.04)


async def test_clips_past_the_limits_damaged_or_foreign_get_plain_words(
    read_usage: ReadUsage, recorder: UsageRecorder, core_over: Callable[..., Core], sqlite_db_url: str
) -> None:
    limits = animation.Limits(seconds=2, frames=300)
    core = core_over(MemoryStylizer(), animation_limits=limits)
    mp4 = make_mp4(1.0, 10)
    long = await core.handle(request("1", clip(make_mp4(3.0, 10, audio=False), "video/mp4")))
    broken = await core.handle(request("2", clip(mp4[: len(mp4) // 3], "video/mp4")))
    webm = await core.handle(request("3", clip(b"\x1aE\xdf\xa3 a webm header", "video/webm")))
    short = await core.handle(request("4", clip(make_gif([500] * 3), "image/gif")))  # 1.5 s: fine
    await recorder.close()

    assert long.image is None and long.problem == "bad_input"
    assert long.text == messages.CLIP_TOO_LONG.format(seconds=3.0, frames=30, max_seconds=2, max_frames=300)
    assert "at most 2 s and 300 frames" in long.text and "Trim it" in long.text
    assert broken.problem == "bad_input" and broken.text in (messages.CLIP_DAMAGED, animation.NO_FRAMES)
    assert (webm.text, webm.problem) == (messages.NOT_A_CLIP, "not_an_image")
    assert short.animated == "gif"
    assert [r.status for r in await read_usage(sqlite_db_url)] == ["bad_input"] * 3 + ["ok"]


class NoFaces(MemoryStylizer):
    async def stylize(self, style: str, image: bytes, **kw: object) -> Stylized:
        raise NoFace("no face")


async def test_a_clip_without_any_face_gets_the_no_face_answer(
    read_usage: ReadUsage, recorder: UsageRecorder, core_over: Callable[..., Core], sqlite_db_url: str
) -> None:
    core = core_over(NoFaces())
    reply = await core.handle(request("1", clip(make_gif([100] * 3), "image/gif")))
    await recorder.close()
    assert (reply.text, reply.problem, reply.image) == (messages.NO_FACE_IN_CLIP, "no_face", None)
    assert [r.status for r in await read_usage(sqlite_db_url)] == ["no_face"]


class Gated(MemoryStylizer):
    """Draws a clip's frames only once the test opens the gate (photos pass); counts frames drawn at
    once and logs what it drew, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.at_gate = 0  # frames holding a model slot, waiting for the gate
        self.drawn: list[str] = []  # "frame" or "photo", in the order they got past the gate
        self.now = self.most = 0

    async def stylize(self, style: str, image: bytes, **kw: object) -> Stylized:
        frame = kw.get("fmt") == "png"  # a clip's frames come back as PNG, the photos as JPEG
        if frame:
            self.at_gate += 1
            try:
                await self.gate.wait()
            finally:
                self.at_gate -= 1
        self.drawn.append("frame" if frame else "photo")
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            return await super().stylize(style, image, **kw)  # type: ignore[arg-type]
        finally:
            self.now -= 1


async def test_a_clip_holds_one_model_slot_and_photos_go_on_meanwhile(
    core_over: Callable[..., Core], face_jpeg: bytes
) -> None:
    stylizer = Gated()
    core = core_over(stylizer, max_in_flight=2)
    drawing = asyncio.create_task(core.handle(request("1", clip(make_gif([100] * 20), "image/gif"))))
    await until(lambda: stylizer.at_gate == 1)  # the clip has its slot and waits on its first frame
    photos = [core.handle(request(str(u), clip(face_jpeg, "image/jpeg"))) for u in range(2, 6)]
    answered = await asyncio.wait_for(asyncio.gather(*photos), 30)  # through the other slot
    assert all(r.image is not None and r.animated is None for r in answered)
    assert not drawing.done()
    busy = await core.handle(request("1", clip(face_jpeg, "image/jpeg")))  # one at a time per user
    assert busy.problem == "busy"
    stylizer.gate.set()
    assert (await drawing).animated == "gif"
    assert stylizer.most == 1  # the clip's frames went one by one


async def test_a_photo_waits_a_frame_not_a_clip_while_four_clips_draw(
    core_over: Callable[..., Core], face_jpeg: bytes
) -> None:
    """Each frame takes a model slot for its own request only: a photo waits behind the frames already
    in line for one, not behind whole clips. Counted in frames drawn, not timed."""
    stylizer = Gated()
    core = core_over(stylizer, max_in_flight=2, clips_in_flight=4)
    waiting = slots("waiting")
    clips = [asyncio.create_task(core.handle(request(str(u), clip(make_gif([100] * 20), "image/gif"))))
             for u in range(4)]
    await until(lambda: stylizer.at_gate == 2 and slots("waiting") == waiting + 2)  # two frames drawing, two in line
    photo = asyncio.create_task(core.handle(request("9", clip(face_jpeg, "image/jpeg"))))
    await until(lambda: slots("waiting") == waiting + 3)  # in line behind them
    stylizer.gate.set()
    assert (await photo).image is not None
    # The two frames drawing, then the two clips' frames ahead of it; a clip that held its slot to the
    # end would put 40 frames before it.
    assert stylizer.drawn.index("photo") == 4
    assert all(r.animated == "gif" for r in await asyncio.gather(*clips))


async def test_a_clip_nobody_waits_for_frees_its_slot_at_the_next_frame(
    core_over: Callable[..., Core], face_jpeg: bytes
) -> None:
    stylizer = Gated()
    core = core_over(stylizer, max_in_flight=1)
    drawing = asyncio.create_task(core.handle(request("1", clip(make_gif([100] * 20), "image/gif"))))
    await until(lambda: stylizer.at_gate == 1)  # it holds the only slot, its first frame not drawn yet
    held = slots("drawing")
    drawing.cancel()  # the page was closed (aiohttp cancels the request)
    with pytest.raises(asyncio.CancelledError):
        await drawing
    assert slots("drawing") == held - 1  # its slot is free as soon as the request is gone
    photo = await core.handle(request("2", clip(face_jpeg, "image/jpeg")))
    assert photo.image is not None
    assert stylizer.requests == 1  # the photo alone: no frame was drawn for nobody


async def test_hostile_clips_are_refused_as_too_big_and_heic_and_avif_are_photos(
    read_usage: ReadUsage, recorder: UsageRecorder, core_over: Callable[..., Core], sqlite_db_url: str
) -> None:
    core = core_over(MemoryStylizer())
    heic = io.BytesIO()
    Image.open(FIXTURES / "obama_256.jpg").save(heic, "HEIF")
    with undecoded() as decoded:
        screen = await core.handle(request("1", clip(screen_gif(9000, 9000, 300), "image/gif")))
        bomb = await core.handle(request("2", clip(screen_gif(65535, 65535, 2), "image/gif")))
    photo = await core.handle(request("3", clip(heic.getvalue(), "image/heic")))
    avif = io.BytesIO()
    Image.open(FIXTURES / "obama_256.jpg").save(avif, "AVIF")
    other = await core.handle(request("4", clip(avif.getvalue(), "image/avif")))
    await recorder.close()
    assert decoded == [] and (screen.problem, bomb.problem) == ("too_big", "too_big")
    assert "9000×9000" in screen.text and "65535×65535" in bomb.text
    for still in (photo, other):  # ISO media files of an image brand: pictures, not one-frame videos
        assert still.image is not None and still.animated is None and still.content_type == "image/jpeg"
    rows = await read_usage(sqlite_db_url)
    assert [(r.status, r.input_pixels) for r in rows] == [
        ("bad_input", None), ("bad_input", None), ("ok", 256 * 256), ("ok", 256 * 256),  # refused from the headers alone
    ]


async def test_a_gif_of_200000_frames_is_measured_off_the_event_loop(
    core_over: Callable[..., Core], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walking its blocks takes most of a second: in a thread, so other chats' requests go on."""
    core = core_over(MemoryStylizer(), max_upload_bytes=2**23)
    walked_in: list[int] = []  # the threads that walked the GIF
    walk = inputs._walk_gif

    def watched(data: bytes, stop_after: int = -1) -> inputs.Shape:
        walked_in.append(threading.get_ident())
        return walk(data, stop_after)

    monkeypatch.setattr(inputs, "_walk_gif", watched)
    reply = await core.handle(request("1", clip(screen_gif(16, 16, 200_000), "image/gif")))  # 4.6 MB
    assert reply.problem == "bad_input" and "200000 frames" in reply.text
    assert walked_in and threading.get_ident() not in walked_in  # never on the event loop's thread


async def test_every_spaces_out_progress() -> None:
    now = [0.0]
    shown: list[tuple[int, int]] = []

    async def show(done: int, total: int) -> None:
        shown.append((done, total))

    progress = every(3.0, show, clock=lambda: now[0])
    for frame in range(1, 101):
        now[0] = frame * 0.1  # ten frames a second
        await progress(frame, 100)
    assert shown == [(30, 100), (60, 100), (90, 100)]  # none at the start, none at the end


async def test_the_real_engine_draws_a_face_video_frame_by_frame(
    read_usage: ReadUsage, core_over: Callable[..., Core], recorder: UsageRecorder,
    engine_model_store: Path, sqlite_db_url: str, face_jpeg: bytes,
) -> None:
    engine = EmbeddedEngine(engine_model_store)
    try:
        core = core_over(engine)
        video = make_mp4(1.0, 10)  # a public-domain face, panned
        drawn = await core.handle(request("1", clip(video, "video/mp4")))
        photo = await core.handle(request("2", clip(face_jpeg, "image/jpeg")))  # the same engine, meanwhile
    finally:
        await engine.close()
    await recorder.close()
    assert drawn.animated == "mp4" and drawn.image is not None, drawn.text
    before, after = probe(video), probe(drawn.image)
    assert after["frames"] == before["frames"] == 10
    assert after["seconds"] == pytest.approx(before["seconds"], abs=1 / 10)
    assert photo.image is not None
    rows = await read_usage(sqlite_db_url)
    assert [(r.status, r.faces) for r in rows] == [("ok", 1), ("ok", 1)]
