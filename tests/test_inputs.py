"""Uploads measured from their headers before a pixel is decoded: hostile GIFs and videos are refused
in a moment, formats are told by their brand, and decoding stops when nobody waits."""

from __future__ import annotations

import io
import os
import threading

import pytest
from PIL import Image

from media import black_mp4, make_gif, make_mp4, screen_gif
from serving import animation, inputs
from serving.api import BadInput, TooLarge
from styles.payload import refusals


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused from the headers means no frame decoded: the decoders fail the test if they are reached
    (not a time bound, which a loaded machine can miss and a decoder of a small bomb can meet)."""

    def decoded(*args: object) -> None:
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr(animation, "_decode_gif", decoded)
    monkeypatch.setattr(animation, "_decode_mp4", decoded)


def heic() -> bytes:
    """A small HEIC photo, as an iPhone sends (pillow-heif's encoder)."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, "HEIF")
    return out.getvalue()


def avif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (40, 120, 200)).save(out, "AVIF")
    return out.getvalue()


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    """The first box of an ISO media file, with these brands."""
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\0\0\0\x08free"


def test_formats_are_told_by_their_brand() -> None:
    assert inputs.sniff(make_mp4(0.5, 10, audio=False)) == "mp4"
    assert inputs.sniff(ftyp(b"qt  ", b"qt  ")) == "mp4"  # QuickTime
    assert inputs.sniff(ftyp(b"mp42", b"isom", b"mp42")) == "mp4"
    assert inputs.sniff(heic()) is None  # a still photo, not a one-frame clip
    assert inputs.sniff(avif()) is None
    assert inputs.sniff(ftyp(b"mif1", b"heic")) is None
    assert inputs.sniff(make_gif([100, 100])) == "gif"
    with Image.open(io.BytesIO(heic())) as photo:  # the opener is registered where images are decoded
        assert photo.size == (64, 48)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (screen_gif(9000, 9000, 300), "9000×9000"),  # 7 KB declaring 24 gigapixels of compositing
        (screen_gif(65535, 65535, 2), "65535×65535"),  # past Pillow's own bomb limit: no traceback
        (screen_gif(2000, 1200, 300), "300 frames of 2000×1200"),  # each frame fits, all of them do not
    ],
)
def test_hostile_gifs_are_refused_from_their_headers(data: bytes, words: str, no_decoding: None) -> None:
    with pytest.raises(TooLarge, match=words):
        animation.decode(data)


def test_a_frame_reaching_past_the_screen_counts_at_its_size() -> None:
    gif = bytearray(screen_gif(16, 16, 2))
    at = gif.index(b"\x2c")  # the first frame's rectangle: 1x1 -> 5000x5000 on a 16x16 screen
    gif[at + 5:at + 9] = (5000).to_bytes(2, "little") * 2
    with pytest.raises(TooLarge, match="5000×5000"):
        inputs.inspect(bytes(gif))


def test_a_too_long_gif_is_worded_without_decoding_it(no_decoding: None) -> None:
    with pytest.raises(BadInput, match=r"150\.0 s and 5000 frames"):
        animation.decode(screen_gif(2000, 2000, 5000))  # 115 KB


def test_a_video_of_huge_frames_is_refused_from_its_stream_info(no_decoding: None) -> None:
    video = black_mp4(8192, 8192, 2)
    with pytest.raises(TooLarge, match="8192×8192"):
        animation.decode(video)


def test_a_clip_past_the_total_is_refused_and_its_frames_shrink_as_they_decode() -> None:
    video = make_mp4(3.0, 30, audio=False)  # 90 frames of 128x96
    with pytest.raises(TooLarge, match="90 frames of 128×96"):
        animation.decode(video, inputs.Limits(total_pixels=128 * 96 * 89))
    clip = animation.decode(video, inputs.Limits(pixels=64 * 48))
    assert clip.size == (64, 48) and len(clip.frames) == 90


def test_a_still_past_the_pixel_limit_is_refused_from_its_header() -> None:
    out = io.BytesIO()
    Image.new("1", (8000, 6000)).save(out, "PNG")  # 48 megapixels in a few kilobytes
    with pytest.raises(TooLarge, match="too many pixels"):
        inputs.inspect(out.getvalue())
    assert refusals.TOO_MANY_PIXELS in str(pytest.raises(TooLarge, inputs.inspect, out.getvalue()).value)
    assert inputs.inspect(heic()).pixels == 64 * 48


def test_decoding_stops_when_nobody_waits() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(animation.Abandoned):
        animation.decode(make_gif([100] * 5), stop=stop)
    with pytest.raises(animation.Abandoned):
        animation.decode(make_mp4(1.0, 10), stop=stop)


async def test_clips_are_decoded_and_encoded_at_a_lower_priority() -> None:
    """Seconds of CPU per clip, yielding to photos and the event loop (nice is per thread on Linux)."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert await animation.in_background(os.getpriority, os.PRIO_PROCESS, 0) >= animation.BACKGROUND_NICE
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours  # the rest of the process as it was
