"""Animated GIFs and short videos, drawn frame by frame through any `Stylizer`.

A clip is split into still frames here, on the runtime side, so that each
frame is one ordinary request: the handler keeps its still-image contract,
TorchServe batches frames with other users' photos, and a video takes its
turn frame by frame instead of holding the engine for its whole length.

GIFs are read and written with Pillow; MP4 (and QuickTime) with PyAV, whose
wheels ship FFmpeg with x264 and AAC. A clip comes back in its own format,
with its frame count and timing, and an MP4's audio is copied across
untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import math
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeVar

from PIL import Image

from serving import inputs
from serving.api import BadInput, NoFace, Stylized, Stylizer
from serving.inputs import (  # noqa: F401 - the clip's words and limits, where the bots have long read them
    DAMAGED_GIF, DAMAGED_VIDEO, NO_PICTURE_TRACK, TOO_LONG, Kind, Limits, Shape, sniff, too_long,
)

if TYPE_CHECKING:  # PyAV is imported by the first MP4: ~20 MiB a process that draws only stills never needs
    import av

Progress = Callable[[int, int], Awaitable[None]]
T = TypeVar("T")

CONTENT_TYPES: dict[Kind, str] = {"gif": "image/gif", "mp4": "video/mp4"}
# What users are told (bots/messages.py lists them with the bots' own words).
NO_FACE_IN_CLIP = "I found no face in any frame of that clip. Try one where the face is large and turned to the camera."
NOT_A_CLIP = "That is not an animated GIF or an MP4 video."
NO_FRAMES = "That video has no frames."
FRAME_QUALITY = 95  # JPEG quality of the frames a clip keeps (see `Clip`)
GIF_MIN_MS = inputs.GIF_MIN_MS
# Frames are shrunk with Pillow's (antialiased) bilinear filter: a third of Lanczos's CPU, and the
# generator draws at 96-256 px, where the two do not differ.
SHRINK = Image.BILINEAR
BACKGROUND_NICE = 10  # how much lower a clip's decoding and encoding run than the rest (`in_background`)


class Abandoned(Exception):
    """Nobody waits for the clip any more (its `stop` was set): decoding ends at the next frame."""


@dataclass
class Clip:
    """The frames of one animation, each ready to send as a still image, and what it takes to
    write the clip back.

    Frames are kept as JPEG (quality 95, full colour resolution): 300 decoded
    720p frames would hold 830 MB per clip, as JPEG about 60 MB; the
    generator draws at 96-256 px, where the difference does not show.
    """

    kind: Kind
    frames: list[bytes]  # JPEG, at most `Limits.pixels` each
    size: tuple[int, int]  # the frames' width and height
    times: list[float]  # start of each frame, seconds from the clip's start
    duration: float  # seconds
    source: bytes = field(repr=False)  # the original file: an MP4's audio is copied from it
    loop: int = 0  # GIF loop count (0: forever)
    audio: bool = False  # an MP4 with a sound track (kept in the result)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.kind]


def fitted(width: int, height: int, pixels: int) -> tuple[int, int]:
    """`width` x `height` scaled down (never up) to at most `pixels`, the aspect kept."""
    scale = math.sqrt(pixels / max(1, width * height))
    if scale >= 1.0:
        return width, height
    return max(1, int(width * scale)), max(1, int(height * scale))


def _kept(img: Image.Image) -> bytes:
    """One frame as the clip keeps it and the handler reads it (about 10 ms for 720p)."""
    out = io.BytesIO()
    img.save(out, "JPEG", quality=FRAME_QUALITY, subsampling=0)
    return out.getvalue()


def _lower_priority() -> None:
    """A clip's decoding and encoding threads yield the CPU to photos, other clips' frames and the
    event loop (nice 10; on Linux per thread, and FFmpeg's own threads inherit it)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the same priority as the rest
        os.setpriority(os.PRIO_PROCESS, 0, BACKGROUND_NICE)


# Where clips are decoded and encoded: seconds of CPU each, at a lower priority than drawing.
_BACKGROUND = ThreadPoolExecutor(max_workers=4, thread_name_prefix="clip", initializer=_lower_priority)


async def in_background(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`work(*args, **kwargs)` in a low-priority thread (`_lower_priority`), off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_BACKGROUND, functools.partial(work, *args, **kwargs))


def _go_on(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Abandoned


def decode(
    data: bytes, limits: Limits = Limits(), *, shape: Shape | None = None, stop: threading.Event | None = None
) -> Clip:
    """Every frame of a GIF or a video, shrunk to `limits.pixels` as it is decoded, with its start
    time; `BadInput` when unreadable or too long, `TooLarge` past the pixel budget (told from the
    headers first: `inputs.inspect`, unless its `shape` is given). `stop` set: `Abandoned`."""
    shape = shape or inputs.inspect(data, limits)
    if shape.kind == "gif":
        return _decode_gif(data, shape, limits, stop)
    if shape.kind == "mp4":
        return _decode_mp4(data, shape, limits, stop)
    raise BadInput(NOT_A_CLIP)


def _decode_gif(data: bytes, shape: Shape, limits: Limits, stop: threading.Event | None) -> Clip:
    """Pillow composites each frame on the whole screen (its cost is in the budget); the clip keeps
    it shrunk. Timing and loop come from the blocks `inputs` walked."""
    size = fitted(shape.width, shape.height, limits.pixels)
    frames: list[bytes] = []
    try:
        with Image.open(io.BytesIO(data)) as img:
            for i in range(shape.frames):
                _go_on(stop)
                try:
                    img.seek(i)
                except EOFError:  # Pillow stops at a damaged frame: keep what came before
                    break
                frame = img.convert("RGB")
                frames.append(_kept(frame if frame.size == size else frame.resize(size, SHRINK)))
    except Image.DecompressionBombError:
        raise inputs.frame_too_large(shape.width, shape.height, limits) from None
    except (Abandoned, BadInput):
        raise
    except Exception as err:  # UnidentifiedImageError, OSError, ValueError...: a damaged file
        raise BadInput(DAMAGED_GIF) from err
    if not frames:
        raise BadInput(DAMAGED_GIF)
    delays = shape.delays_ms[: len(frames)]
    times = [sum(delays[:i]) / 1000 for i in range(len(delays))]
    return Clip("gif", frames, size, times, sum(delays) / 1000, data, shape.loop)


def _decode_mp4(data: bytes, shape: Shape, limits: Limits, stop: threading.Event | None) -> Clip:
    """Each frame scaled down by FFmpeg as it comes out of the decoder, never kept at full size;
    the frame count and pixels are held to the limits again as they come (headers can lie)."""
    import av

    frames: list[bytes] = []
    times: list[float] = []
    size, used = (0, 0), 0
    try:
        with av.open(io.BytesIO(data), **inputs.video_options(limits)) as container:
            stream = container.streams.video[0]
            audio = bool(container.streams.audio)
            for frame in container.decode(stream):
                _go_on(stop)
                used += frame.width * frame.height
                if len(frames) >= limits.frames:
                    raise too_long(limits, shape.seconds, len(frames) + 1)
                if frame.width * frame.height > limits.input_pixels:
                    raise inputs.frame_too_large(frame.width, frame.height, limits)
                if used > limits.total_pixels:
                    raise inputs.clip_too_large(max(shape.frames, len(frames) + 1), frame.width, frame.height, limits)
                width, height = fitted(frame.width, frame.height, limits.pixels)
                img = frame.to_image(width=width, height=height, interpolation="AREA")
                if frame.rotation:  # phone videos: stored sideways, turned by display metadata
                    img = img.rotate(frame.rotation, expand=True)
                size = size if frames else img.size
                frames.append(_kept(img if img.size == size else img.resize(size, SHRINK)))
                times.append(float(frame.time or 0.0))
    except (av.error.FFmpegError, ValueError) as err:
        raise BadInput(DAMAGED_VIDEO) from err
    if not frames:
        raise BadInput(NO_FRAMES)
    start = times[0]
    return Clip("mp4", frames, size, [t - start for t in times], shape.seconds, data, audio=audio)


def encode(clip: Clip, frames: list[Image.Image]) -> bytes:
    """`frames` (one per frame of `clip`) written in the clip's own format and timing."""
    if len(frames) != len(clip.frames):
        raise ValueError(f"{len(frames)} drawn frames for a clip of {len(clip.frames)}")
    return _encode_gif(clip, frames) if clip.kind == "gif" else _encode_mp4(clip, frames)


def _durations_ms(clip: Clip) -> list[int]:
    ends = [*clip.times[1:], clip.duration]
    return [max(GIF_MIN_MS, round((end - start) * 1000)) for start, end in zip(clip.times, ends)]


def _encode_gif(clip: Clip, frames: list[Image.Image]) -> bytes:
    out = io.BytesIO()
    first, *rest = (f.convert("RGB") for f in frames)
    first.save(out, "GIF", save_all=True, append_images=rest, duration=_durations_ms(clip),
               loop=clip.loop, disposal=1)
    return out.getvalue()


def _encode_mp4(clip: Clip, frames: list[Image.Image]) -> bytes:
    import av

    width, height = (s - s % 2 for s in frames[0].size)  # x264's 4:2:0 needs even sides
    out = io.BytesIO()
    with av.open(io.BytesIO(clip.source)) as source, av.open(out, "w", format="mp4") as sink:
        video = sink.add_stream("libx264", rate=source.streams.video[0].average_rate or 25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = Fraction(1, 15360)
        video.options = {"crf": "20", "preset": "veryfast"}
        audio_in = source.streams.audio[0] if source.streams.audio else None
        audio_out = sink.add_stream_from_template(audio_in) if audio_in is not None else None
        for img, t in zip(frames, clip.times):
            if img.size != (width, height):
                img = img.resize((width, height), Image.LANCZOS)
            frame = av.VideoFrame.from_image(img.convert("RGB"))
            frame.pts, frame.time_base = round(t / video.time_base), video.time_base
            sink.mux(video.encode(frame))
        sink.mux(video.encode())
        if audio_in is not None and audio_out is not None:
            for packet in source.demux(audio_in):
                if packet.dts is None:  # the demuxer's final flush packet
                    continue
                packet.stream = audio_out
                sink.mux(packet)
    return out.getvalue()


async def draw(
    stylizer: Stylizer, style: str, clip: Clip, *, size: int | None = None, progress: Progress | None = None,
    turns: asyncio.Semaphore | None = None,
) -> Stylized:
    """Every frame through `stylizer`, one request at a time, then the clip written back.

    With `turns` (the model slots photos wait for too), each frame takes one for its own request
    only: a photo that arrives mid-clip gets the next free slot, between two frames.

    Each frame's request hands on where the frame before had its faces
    (`follow`), so the handler keeps them steady in their squares instead of
    re-framing every frame from a detection that jitters by a few pixels. A
    face style that finds no face before the first one is found (or a
    runtime that does not follow) shows the last frame it could draw; only a
    clip without any face is refused.
    """
    drawn: list[Image.Image | None] = []
    version, faces, follow = "", None, None
    for i, frame in enumerate(clip.frames):
        try:
            async with turns or contextlib.nullcontext():
                result = await stylizer.stylize(style, frame, size=size, fmt="png", follow=follow, upscale=False)
        except NoFace:
            drawn.append(None)
        else:
            version, follow = result.version, result.frames or follow
            if result.faces is not None:
                faces = max(faces or 0, result.faces)
            with Image.open(io.BytesIO(result.image)) as img:
                drawn.append(img.convert("RGB"))
        if progress is not None:
            await progress(i + 1, len(clip.frames))
    frames = _held(drawn)
    if frames is None:
        raise NoFace(NO_FACE_IN_CLIP)
    side = frames[0].size
    frames = [f if f.size == side else f.resize(side, Image.LANCZOS) for f in frames]
    # Seconds of CPU for a long clip (GIF palettes, x264): off the event loop, so other chats go on.
    return Stylized(await in_background(encode, clip, frames), style, version, clip.content_type, faces)


def _held(drawn: list[Image.Image | None]) -> list[Image.Image] | None:
    """Fill frames that could not be drawn with the nearest earlier one (the first drawn for a leading gap)."""
    first = next((f for f in drawn if f is not None), None)
    if first is None:
        return None
    frames, last = [], first
    for f in drawn:
        last = f if f is not None else last
        frames.append(last)
    return frames
