"""A burst of photos past UPSCALE_BACKLOG: the core keeps every reply at its style's size, but photos
that find a long line are resized instead of drawn by the learned upscaler, so the line moves.

On the real engine with a tiny random cat2dog whose archive names a Real-CUGAN 2x upscaler; a gate in
front of the engine holds the first photo in its slot so the line is built one photo at a time.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bots import metrics
from bots.core import Attachment, Core, Request
from db.engine import create_engine, session_factory
from db.usage import UsageRecorder
from serving.api import ImageFormat, Stylized
from serving.engine import EmbeddedEngine
from styles import catalog
from styles.archive import model_config, write_archive
from styles.payload.networks import ResnetGenerator
from torchserve_fixture import TINY
from waiting import until

CAT = Path(__file__).with_name("fixtures") / "chelsea_256.jpg"
UPSCALER = {"name": "realcugan-se", "scale": 2, "denoise": "no-denoise"}
OUTPUT_SIDE = 2 * TINY["img_size"]


@pytest.fixture(scope="module")
def upscaled_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    generator = ResnetGenerator(**TINY)
    config = model_config(generator.arch(), TINY["img_size"], catalog.entry("cat2dog"), workers=1, batch_size=1,
                          max_batch_delay=0, response_timeout=60, inference="eager", upscaler=UPSCALER)
    folder = tmp_path_factory.mktemp("bursts") / "model_store"
    write_archive(folder, "cat2dog", "1.0", generator.state_dict(), config)
    return folder


class Gated:
    """The engine behind a gate: each call is recorded (upscaled or not), then waits for the gate."""

    def __init__(self, engine: EmbeddedEngine) -> None:
        self.engine, self.gate, self.calls = engine, asyncio.Event(), list[bool]()

    async def stylize(self, style: str, image: bytes, *, size: int | None = None, fmt: ImageFormat = "jpeg",
                      upscale: bool = True, **options: object) -> Stylized:
        self.calls.append(upscale)
        await self.gate.wait()
        return await self.engine.stylize(style, image, size=size, fmt=fmt, upscale=upscale, **options)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)


def cat_photo(user: int) -> Request:
    data = CAT.read_bytes()

    async def read() -> bytes:
        return data

    return Request(platform="web", user_id=str(user), chat_id=str(user), text="",
                   attachment=Attachment("image/jpeg", len(data), read))


async def test_photos_behind_a_long_line_are_resized_not_upscaled(
    upscaled_store: Path, tmp_path: Path, sqlite_db_url: str
) -> None:
    engine = EmbeddedEngine(upscaled_store, cache_dir=tmp_path / "mar")
    gated = Gated(engine)
    db = create_engine(sqlite_db_url)
    recorder = UsageRecorder(session_factory(db))
    core = Core(stylizer=gated, sessions=session_factory(db), recorder=recorder, default_style="cat2dog",
                requests_per_minute=10, max_in_flight=1, max_upload_bytes=2**22, output_size=None,
                upscale_backlog=1)
    skipped = metrics.UPSCALER_SKIPPED.labels("cat2dog")
    skipped_before = skipped._value.get()
    try:
        sent = [asyncio.create_task(core.handle(cat_photo(0)))]
        await until(lambda: len(gated.calls) == 1, "the first photo in the one slot")
        for user in (1, 2, 3):  # each finds user - 1 photos waiting for the slot
            sent.append(asyncio.create_task(core.handle(cat_photo(user))))
            await until(lambda user=user: core._model_slots.waiting == user, f"{user} photos in line")
        gated.gate.set()
        replies = await asyncio.gather(*sent)
        plain = await engine.stylize("cat2dog", CAT.read_bytes(), size=OUTPUT_SIDE, upscale=False)
        learned = await engine.stylize("cat2dog", CAT.read_bytes())
    finally:
        await recorder.close()
        await engine.close()
        await db.dispose()
    # Only the photo that found more than UPSCALE_BACKLOG (1) photos waiting skipped the upscaler...
    assert gated.calls == [True, True, True, False]
    assert skipped._value.get() - skipped_before == 1
    # ...and every reply came at the style's size: the last one resized, the others drawn by the upscaler.
    pictures = [np.asarray(Image.open(io.BytesIO(r.image)), dtype=np.int16) for r in replies]
    assert {p.shape for p in pictures} == {(OUTPUT_SIDE, OUTPUT_SIDE, 3)}
    assert np.array_equal(pictures[3], np.asarray(Image.open(io.BytesIO(plain.image)), dtype=np.int16))
    assert all(np.array_equal(p, np.asarray(Image.open(io.BytesIO(learned.image)), dtype=np.int16))
               for p in pictures[:3])
    assert not np.array_equal(pictures[0], pictures[3])
