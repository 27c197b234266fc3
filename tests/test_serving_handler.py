"""The packaged handler, run in-process by the embedded engine: decoding, framing, output."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
import torch
from PIL import Image

from group_photos import group_photo
from serving import replies
from serving.api import BadInput, NoFace, Overloaded, Stylized
from serving.engine import EmbeddedEngine
from styles import loader
from styles.archive import scan
from styles.payload import framing, imaging

torch.set_num_threads(1)
FIXTURES = Path(__file__).with_name("fixtures")
FACE = FIXTURES / "obama_256.jpg"


@pytest.fixture
async def engine(serving_model_store: Path, serving_mar_cache: Path) -> AsyncIterator[EmbeddedEngine]:
    engine = EmbeddedEngine(serving_model_store, cache_dir=serving_mar_cache)
    yield engine
    await engine.close()


def encoded(img: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("JPEG", {}), ("PNG", {}), ("WEBP", {}), ("BMP", {}), ("TIFF", {}), ("GIF", {}), ("HEIF", {})],
)
async def test_decodes_every_supported_format(engine: EmbeddedEngine, fmt: str, params: dict) -> None:
    pillow_heif.register_heif_opener()
    data = encoded(Image.open(FACE).convert("RGB"), fmt, **params)
    result = await engine.stylize("cat2dog", data, size=64, fmt="png")
    assert decoded(result.image).size == (64, 64)


async def test_gif_uses_its_first_frame(engine: EmbeddedEngine) -> None:
    face = Image.open(FACE).convert("RGB")
    frames = [face, Image.new("RGB", face.size, "black")]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert (await engine.stylize("selfie2anime", data)).content_type == "image/jpeg"  # the face is found


@pytest.mark.parametrize(
    "name",
    ["astronaut_cmyk.jpg", "astronaut_gray_L.jpg", "astronaut_png_named.jpg", "astronaut_rgba.png",
     "astronaut_nonsquare_300x180.jpg"],
)
async def test_awkward_files_still_work(engine: EmbeddedEngine, name: str) -> None:
    result = await engine.stylize("cat2dog", (FIXTURES / "edge_cases" / name).read_bytes(), size=48)
    assert decoded(result.image).size == (48, 48)


async def test_exif_orientation_is_applied_before_face_detection(engine: EmbeddedEngine) -> None:
    sideways = Image.open(FACE).convert("RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": undoes the rotation above
    with_tag = encoded(sideways, "JPEG", exif=exif.tobytes())
    assert (await engine.stylize("selfie2anime", with_tag)).image
    with pytest.raises(NoFace):  # the same pixels without the tag show a sideways face
        await engine.stylize("selfie2anime", encoded(sideways, "JPEG"))


def test_alpha_is_composited_on_white() -> None:
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    rgb = imaging.to_rgb(img)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((5, 5)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(("fmt", "content_type", "magic"), [
    ("jpeg", "image/jpeg", b"\xff\xd8"), ("png", "image/png", b"\x89PNG"), ("webp", "image/webp", b"RIFF"),
])
async def test_output_format_and_size(engine: EmbeddedEngine, fmt: str, content_type: str, magic: bytes) -> None:
    result = await engine.stylize("selfie2anime", FACE.read_bytes(), size=96, fmt=fmt)
    assert result.content_type == content_type and result.image.startswith(magic)
    assert decoded(result.image).size == (96, 96)
    assert (result.style, result.version) == ("selfie2anime", "1.0")


async def test_default_output_is_a_jpeg_at_the_size_the_model_draws(engine: EmbeddedEngine) -> None:
    """No blowing a small model's picture up: the tiny test styles train at 32 px, and
    cat2dog/dog2cat were exported to draw at twice that."""
    cat = FIXTURES.joinpath("chelsea_256.jpg").read_bytes()
    img = decoded((await engine.stylize("dog2cat", cat)).image)
    assert (img.format, img.size) == ("JPEG", (64, 64))
    img = decoded((await engine.stylize("selfie2anime", FACE.read_bytes())).image)
    assert (img.format, img.size) == ("JPEG", (32, 32))


async def test_unsupported_output_options_are_rejected(engine: EmbeddedEngine) -> None:
    with pytest.raises(BadInput) as err:
        await engine.stylize("cat2dog", FACE.read_bytes(), size=4096)
    assert err.value.message == imaging.BAD_OPTION
    for flag in ("yes", "2", "maybe"):  # X-Compare as a raw HTTP caller could send it
        with pytest.raises(imaging.Rejected, match="compare 1 or 0"):
            imaging.parse_options(compare=flag)
    assert imaging.parse_options(compare="1").compare and not imaging.parse_options(compare="0").compare


def group_png(count: int, width: int) -> bytes:
    return encoded(group_photo(count, width), "PNG")


async def test_a_group_photo_comes_back_whole_with_every_face_restyled(engine: EmbeddedEngine) -> None:
    data = group_png(3, 200)
    photo = np.asarray(decoded(data).convert("RGB"), dtype=np.int16)
    result = await engine.stylize("selfie2anime", data, fmt="png")
    assert result.faces == 3
    out = np.asarray(decoded(result.image).convert("RGB"), dtype=np.int16)
    assert out.shape == photo.shape  # the photo itself, not a square
    changed = np.abs(out - photo).max(axis=2) > 8
    assert not changed[:, :12].any() and not changed[-12:, :].any()  # the ground is intact
    for i in range(3):  # each portrait's face was drawn over
        x = 20 + i * 220 + 100
        assert changed[90:190, x - 40 : x + 40].mean() > 0.5


async def test_one_face_still_comes_back_as_a_square_portrait(engine: EmbeddedEngine) -> None:
    result = await engine.stylize("selfie2anime", FACE.read_bytes(), size=64)
    assert result.faces == 1
    assert decoded(result.image).size == (64, 64)


async def test_a_group_reply_follows_the_requested_size_on_its_long_side(engine: EmbeddedEngine) -> None:
    result = await engine.stylize("selfie2anime", group_png(2, 200), size=300)
    assert decoded(result.image).size == (300, 189)  # 460 x 290 scaled down


async def test_styles_without_faces_report_none_drawn(engine: EmbeddedEngine) -> None:
    assert (await engine.stylize("dog2cat", FACE.read_bytes())).faces == 0


async def test_no_face_says_what_to_try(engine: EmbeddedEngine) -> None:
    with pytest.raises(NoFace) as err:
        await engine.stylize("selfie2anime", FIXTURES.joinpath("chelsea_256.jpg").read_bytes())
    assert err.value.message == framing.NO_FACE and "/styles" in err.value.message


async def test_twenty_tiny_faces_are_refused_in_bounded_time(engine: EmbeddedEngine) -> None:
    start = asyncio.get_running_loop().time()
    with pytest.raises(NoFace) as err:
        await engine.stylize("selfie2anime", group_png(20, 40))
    assert err.value.message == framing.FACES_TOO_SMALL
    assert asyncio.get_running_loop().time() - start < 30


async def test_a_huge_crowd_photo_gets_at_most_eight_faces_drawn(engine: EmbeddedEngine) -> None:
    result = await engine.stylize("selfie2anime", group_png(12, 200), size=512)
    assert result.faces == framing.MAX_FACES
    assert max(decoded(result.image).size) == 512


async def test_archives_unpack_once_into_a_cache_keyed_by_hash(serving_model_store: Path, tmp_path: Path) -> None:
    archive = scan(serving_model_store)["cat2dog"]
    first = loader.unpack(archive, tmp_path)
    (first / "marker").touch()
    assert loader.unpack(archive, tmp_path) == first and (first / "marker").exists()
    assert first.name == f"cat2dog-{loader.file_hash(archive.path)[:16]}"


async def test_styles_come_from_the_archives(engine: EmbeddedEngine) -> None:
    styles = await engine.styles()
    assert [s.name for s in styles] == ["anime2selfie", "cat2dog", "dog2cat", "selfie2anime"]
    assert {s.name: s.needs_face for s in styles} == {
        "anime2selfie": False, "cat2dog": False, "dog2cat": False, "selfie2anime": True
    }
    assert await engine.health()


async def test_concurrent_requests_are_batched_in_process(
    engine: EmbeddedEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    results = await _gather(engine, "selfie2anime", [FACE.read_bytes()] * 8)
    assert all(r.image for r in results)
    assert "batch of 8 (8 to the generator)" in caplog.text


async def _gather(engine: EmbeddedEngine, style: str, images: list[bytes]) -> list[Stylized]:
    return await asyncio.gather(*(engine.stylize(style, image, size=32, fmt="png") for image in images))


async def test_lanes_draw_at_once_each_request_with_its_own_options(
    serving_model_store: Path, serving_mar_cache: Path
) -> None:
    """Copies of one handler run side by side (the cat framer too): no reply takes another's options."""
    engine = EmbeddedEngine(serving_model_store, cache_dir=serving_mar_cache, lanes=3)
    face = FACE.read_bytes()
    try:
        calls = [(style, 32 + 8 * i, fmt) for i, (style, fmt) in
                 enumerate([("cat2dog", "png"), ("selfie2anime", "jpeg"), ("cat2dog", "webp")] * 4)]
        results = await asyncio.gather(*(engine.stylize(st, face, size=sz, fmt=f) for st, sz, f in calls))
    finally:
        await engine.close()
    assert [(r.style, decoded(r.image).size, r.content_type) for r in results] == [
        (st, (sz, sz), imaging.FORMATS[f]) for st, sz, f in calls
    ]


def test_lanes_default_to_torchs_threads_up_to_max_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOONBOT_LANES", raising=False)
    monkeypatch.setenv("MAX_IN_FLIGHT", "4")
    try:
        for threads, lanes, each in ((1, 1, 1), (2, 2, 1), (16, 4, 4)):
            torch.set_num_threads(threads)
            assert (EmbeddedEngine(tmp_path).lanes, torch.get_num_threads()) == (lanes, each)
    finally:
        torch.set_num_threads(1)


def test_pixels_of_identical_requests_are_identical(serving_model_store: Path) -> None:
    # Batch composition must not change a request's pixels (instance norm is per sample).
    async def run() -> list[bytes]:
        engine = EmbeddedEngine(serving_model_store, cache_dir=serving_model_store.parent / "cache")
        try:
            alone = await engine.stylize("selfie2anime", FACE.read_bytes(), size=32, fmt="png")
            batch = await _gather(engine, "selfie2anime", [FACE.read_bytes()] * 3)
            return [alone.image] + [b.image for b in batch]
        finally:
            await engine.close()

    images = [np.asarray(decoded(i), dtype=int) for i in asyncio.run(run())]
    assert all(np.abs(images[0] - other).max() <= 1 for other in images[1:])


async def test_a_full_queue_answers_overloaded(serving_model_store: Path, serving_mar_cache: Path) -> None:
    # A 36-megapixel picture keeps the worker busy while the queue (one place) fills.
    big = encoded(Image.linear_gradient("L").resize((6000, 6000)).convert("RGB"), "JPEG")
    engine = EmbeddedEngine(serving_model_store, cache_dir=serving_mar_cache, queue_size=1)
    try:
        results = await asyncio.gather(
            *(engine.stylize("cat2dog", big, size=32) for _ in range(4)), return_exceptions=True
        )
    finally:
        await engine.close()
    kinds = [type(r).__name__ for r in results]
    assert "Overloaded" in kinds and "Stylized" in kinds, kinds
    assert all(r.message == replies.OVERLOADED for r in results if isinstance(r, Overloaded))


async def test_the_free_heap_goes_back_once_nothing_is_left_to_draw(
    serving_model_store: Path, serving_mar_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not between the batches of a burst (they would map their buffers afresh), but after the last."""
    trims: list[int] = []
    monkeypatch.setattr("serving.engine.give_back_free_heap", lambda: trims.append(engine.queued()))
    engine = EmbeddedEngine(serving_model_store, cache_dir=serving_mar_cache, lanes=1)
    face = FACE.read_bytes()
    try:
        await engine.stylize("cat2dog", face, size=32)
        await engine._idle.trim
        assert trims == [0]
        # cat2dog draws one request per batch: three queued at once make three batches, one after another.
        await asyncio.gather(*(engine.stylize("cat2dog", face, size=32) for _ in range(3)))
        await engine._idle.trim
    finally:
        await engine.close()
    assert trims == [0, 0]


async def test_a_clips_next_frame_follows_the_faces_of_the_one_before(engine: EmbeddedEngine) -> None:
    """X-Frames of one frame, handed back as X-Follow, keeps the face's square steady in the next."""
    face = Image.open(FACE).convert("RGB")
    first = await engine.stylize("selfie2anime", encoded(face, "PNG"), size=64)
    assert first.frames is not None
    (start,) = framing.frames_from_text(first.frames)
    moved = Image.new("RGB", face.size)
    moved.paste(face, (12, 0))  # the head moved 12 px right
    alone = framing.frames_from_text((await engine.stylize("selfie2anime", encoded(moved, "PNG"))).frames)[0]
    followed = await engine.stylize("selfie2anime", encoded(moved, "PNG"), follow=first.frames)
    (step,) = framing.frames_from_text(followed.frames)
    shift, full = framing.centre(step)[0] - framing.centre(start)[0], framing.centre(alone)[0] - framing.centre(start)[0]
    assert full > 8 and shift == pytest.approx(framing.FOLLOW_WEIGHT * full, rel=0.05)
    black = encoded(Image.new("RGB", face.size), "PNG")  # the face lost: its square is held
    held = await engine.stylize("selfie2anime", black, follow=followed.frames)
    assert np.allclose(framing.frames_from_text(held.frames)[0].matrix, step.matrix)
    with pytest.raises(BadInput, match="X-Follow"):
        await engine.stylize("selfie2anime", black, follow="[[0,0,0,0,0,0]]")


@pytest.mark.parametrize("style", ["selfie2anime", "dog2cat"])
async def test_compare_puts_the_original_beside_the_result(engine: EmbeddedEngine, style: str) -> None:
    alone = decoded((await engine.stylize(style, FACE.read_bytes(), size=64, fmt="png")).image)
    both = decoded((await engine.stylize(style, FACE.read_bytes(), size=64, fmt="png", compare=True)).image)
    assert both.size == (128, 64)
    after = np.asarray(both.convert("RGB"))[:, 64:].astype(int)
    assert np.abs(after - np.asarray(alone.convert("RGB")).astype(int)).max() == 0  # the result, untouched
    before = np.asarray(both.convert("RGB"))[:, :64].astype(int)
    assert np.abs(before - after).mean() > 5  # and the original beside it, not a copy


async def test_compare_on_a_group_photo_shows_the_whole_photo_before_and_after(engine: EmbeddedEngine) -> None:
    both = decoded((await engine.stylize("selfie2anime", group_png(2, 200), size=300, compare=True)).image)
    assert both.size == (600, 189)

