"""Animated GIFs and short videos: read, drawn frame by frame, written back in their own format and timing."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from serving import animation
from serving.api import BadInput, NoFace, Stylized
from fakes.stylizer import MemoryStylizer
from media import make_gif, make_mp4, probe

FIXTURES = Path(__file__).with_name("fixtures")


def test_sniff_tells_animations_from_stills() -> None:
    still = io.BytesIO()
    Image.new("RGB", (8, 8)).save(still, "GIF")
    assert animation.sniff(make_gif([100, 100])) == "gif"
    assert animation.sniff(make_mp4(0.5, 10, audio=False)) == "mp4"
    assert animation.sniff(still.getvalue()) is None  # a one-frame GIF is a still image
    assert animation.sniff((FIXTURES / "obama_256.jpg").read_bytes()) is None
    assert animation.sniff(b"GIF89a not really") is None


async def test_a_gif_comes_back_a_gif_with_its_frames_timing_and_loop() -> None:
    durations = [80, 120, 200, 80, 80, 300]
    clip = animation.decode(make_gif(durations, loop=3))
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    result = await animation.draw(MemoryStylizer(), "selfie2anime", clip, progress=progress)
    assert result.content_type == "image/gif"
    with Image.open(io.BytesIO(result.image)) as gif:
        assert gif.n_frames == len(durations) and gif.info["loop"] == 3
        got = []
        for i in range(gif.n_frames):
            gif.seek(i)
            got.append(gif.info["duration"])
    assert got == durations
    assert seen == [(i, len(durations)) for i in range(1, len(durations) + 1)]


async def test_an_mp4_comes_back_an_mp4_with_frame_count_duration_and_audio() -> None:
    source = make_mp4(3.0, 30)
    result = await animation.draw(MemoryStylizer(), "selfie2anime", animation.decode(source))
    assert result.content_type == "video/mp4"
    before, after = probe(source), probe(result.image)
    assert after["frames"] == before["frames"] == 90
    assert after["seconds"] == pytest.approx(before["seconds"], abs=1 / 30)
    assert after["audio_seconds"] == pytest.approx(before["audio_seconds"], abs=0.05)
    assert after["size"] == (32, 32)  # what the style draws, every frame the same size


async def test_a_video_without_sound_stays_silent() -> None:
    result = await animation.draw(MemoryStylizer(), "selfie2anime", animation.decode(make_mp4(1.0, 10, audio=False)))
    assert probe(result.image)["audio_seconds"] is None


def test_clips_past_the_limits_are_refused_with_the_limits() -> None:
    with pytest.raises(BadInput, match=r"at most 2 s and 300 frames"):
        animation.decode(make_mp4(3.0, 10, audio=False), animation.Limits(seconds=2))
    with pytest.raises(BadInput, match=r"at most 10 s and 4 frames"):
        animation.decode(make_gif([50] * 6), animation.Limits(frames=4))
    with pytest.raises(BadInput, match=r"is 2\.0 s"):
        animation.decode(make_gif([500] * 4), animation.Limits(seconds=1))


def test_large_frames_are_scaled_down_to_the_pixel_limit() -> None:
    clip = animation.decode(make_gif([100, 100]), animation.Limits(pixels=64 * 48))
    assert clip.size[0] * clip.size[1] <= 64 * 48
    assert all(Image.open(io.BytesIO(f)).size == clip.size for f in clip.frames)


def test_damaged_or_foreign_files_get_a_clear_answer() -> None:
    mp4 = make_mp4(1.0, 10)
    with pytest.raises(BadInput, match="damaged|no frames"):
        animation.decode(mp4[: len(mp4) // 3])
    with pytest.raises(BadInput, match="not an animated GIF or an MP4"):
        animation.decode(b"hello")


class FlakyFaces(MemoryStylizer):
    """Finds no face in the frames whose index is in `missing`."""

    def __init__(self, missing: set[int]) -> None:
        super().__init__()
        self.missing, self.calls = missing, 0
        self.followed: list[str | None] = []  # what each frame's request handed on
        self.upscaled: list[object] = []  # whether each frame asked for the style's upscaler

    async def stylize(self, style: str, image: bytes, **kw) -> Stylized:
        self.calls += 1
        self.followed.append(kw.get("follow"))
        self.upscaled.append(kw.get("upscale", True))
        if self.calls - 1 in self.missing:
            raise NoFace("no face")
        return replace(await super().stylize(style, image, **kw), frames=f"faces of frame {self.calls - 1}")


async def test_frames_without_a_face_hold_the_last_drawn_one() -> None:
    clip = animation.decode(make_gif([100] * 5))
    result = await animation.draw(FlakyFaces({0, 2}), "selfie2anime", clip)
    with Image.open(io.BytesIO(result.image)) as gif:  # Pillow merges a held frame into the one before it
        total = 0
        for i in range(gif.n_frames):
            gif.seek(i)
            total += gif.info["duration"]
    assert total == 500
    with pytest.raises(NoFace, match="no face in any frame"):
        await animation.draw(FlakyFaces(set(range(5))), "selfie2anime", clip)


async def test_each_frame_hands_on_where_the_faces_were() -> None:
    """The runtime's X-Frames of one frame goes back as the next frame's X-Follow; a frame without
    an answer hands on the last one there was."""
    stylizer = FlakyFaces({0, 2})
    await animation.draw(stylizer, "selfie2anime", animation.decode(make_gif([100] * 5)))
    assert stylizer.followed == [None, None, "faces of frame 1", "faces of frame 1", "faces of frame 3"]
    assert stylizer.upscaled == [False] * 5  # a learned upscaler per frame would cost a clip minutes
