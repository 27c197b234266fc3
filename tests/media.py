"""Small animated GIFs and MP4 videos of a public-domain face, made by the tests themselves
(so no test depends on a binary fixture), and `probe` to read a video back."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageFile

FIXTURES = Path(__file__).with_name("fixtures")


def panned(n: int, side: int = 96) -> list[Image.Image]:
    """`n` frames of a public-domain face, the camera drifting right and in."""
    face = Image.open(FIXTURES / "obama_256.jpg").convert("RGB")
    return [face.crop((i, i // 2, 200 + i // 2, 200)).resize((side + 32, side), Image.BILINEAR) for i in range(n)]


def make_gif(durations_ms: list[int], loop: int = 0) -> bytes:
    """An animated GIF, one frame per duration."""
    frames = panned(len(durations_ms))
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=durations_ms, loop=loop)
    return out.getvalue()


def make_mp4(seconds: float, fps: int, audio: bool = True) -> bytes:
    """An H.264 MP4 (with an AAC 440 Hz tone)."""
    n = round(seconds * fps)
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as c:
        video = c.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 128, 96, "yuv420p"
        sound = c.add_stream("aac", rate=44100) if audio else None  # every stream before the first packet
        for img in panned(n):
            c.mux(video.encode(av.VideoFrame.from_image(img)))
        c.mux(video.encode())
        if sound is not None:
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(44100 * seconds)) / 44100)).astype(np.float32)
            for k in range(0, len(tone), 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, k:k + 1024], format="fltp", layout="mono")
                frame.sample_rate = 44100
                c.mux(sound.encode(frame))
            c.mux(sound.encode())
    return out.getvalue()


def probe(data: bytes) -> dict:
    """A video's frame count, seconds, frame size and sound length (None: silent)."""
    with av.open(io.BytesIO(data)) as c:
        video = c.streams.video[0]
        frames = list(c.decode(video))
        audio = c.streams.audio
        return {
            "frames": len(frames),
            "seconds": float(video.duration * video.time_base),
            "size": (frames[0].width, frames[0].height),
            "audio_seconds": float(audio[0].duration * audio[0].time_base) if audio else None,
        }


def gif_frames(data: bytes) -> list[int]:
    """The duration of each frame of a GIF, in ms; fails unless it is a GIF."""
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.format == "GIF"
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    return durations


def screen_gif(width: int, height: int, frames: int, delay_cs: int = 3) -> bytes:
    """A hostile GIF written by hand: a `width` x `height` screen and `frames` one-pixel frames,
    a few bytes each, so a few kilobytes declare gigapixels of compositing."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff")
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\0\0\0"  # loop forever
    for _ in range(frames):
        out += b"\x21\xf9\x04\x00" + struct.pack("<H", delay_cs) + b"\0\0"  # graphic control: the delay
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"  # one pixel, LZW
    return bytes(out + b"\x3b")


@contextmanager
def undecoded() -> Iterator[list[tuple[int, int]]]:
    """Within it, decoding a picture fails at once and its size is listed: a hostile file must be
    refused from its headers alone (decoding it would composite gigapixels, for minutes)."""
    decoded: list[tuple[int, int]] = []

    def refuse(image: ImageFile.ImageFile) -> None:
        decoded.append(image.size)
        raise AssertionError(f"a {image.size} picture was decoded")

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(ImageFile.ImageFile, "load", refuse)
        yield decoded


def black_mp4(width: int, height: int, frames: int) -> bytes:
    """`frames` black H.264 frames of `width` x `height` at 30 a second: megabytes that declare gigapixels."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as c:
        video = c.add_stream("libx264", rate=30)
        video.width, video.height = width, height
        video.pix_fmt, video.options = "yuv420p", {"preset": "ultrafast"}
        black = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
        for _ in range(frames):
            c.mux(video.encode(black))
        c.mux(video.encode())
    return out.getvalue()
