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
import io
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Literal

from PIL import Image, ImageSequence, UnidentifiedImageError

from serving.api import BadInput, NoFace, Stylized, Stylizer

if TYPE_CHECKING:  # PyAV is imported by the first MP4: ~20 MiB a process that draws only stills never needs
    import av

Kind = Literal["gif", "mp4"]
Progress = Callable[[int, int], Awaitable[None]]

CONTENT_TYPES: dict[Kind, str] = {"gif": "image/gif", "mp4": "video/mp4"}
# What users are told (bots/messages.py lists them with the bots' own words).
NO_FACE_IN_CLIP = "I found no face in any frame of that clip. Try one where the face is large and turned to the camera."
TOO_LONG = (
    "That clip is {seconds:.1f} s and {frames} frames; I draw at most {max_seconds:g} s and {max_frames} frames. "
    "Trim it (your phone's video editor, or Telegram's trim bar before sending) and send it again."
)
NOT_A_CLIP = "That is not an animated GIF or an MP4 video."
DAMAGED_GIF = "I could not read that GIF; it may be damaged."
DAMAGED_VIDEO = "I could not read that video; it may be damaged."
NO_PICTURE_TRACK = "That video has no picture track."
NO_FRAMES = "That video has no frames."
FRAME_QUALITY = 95  # JPEG quality of the frames a clip keeps (see `Clip`)
GIF_MIN_MS = 20  # browsers draw shorter GIF delays as 100 ms; keep what the file says, but never below this


@dataclass(frozen=True)
class Limits:
    """What a 2-core machine draws without starving everyone else (settings in the bots)."""

    seconds: float = 10.0
    frames: int = 300
    pixels: int = 1280 * 720  # per frame; larger frames are scaled down before drawing


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


def sniff(data: bytes) -> Kind | None:
    """"gif" for an animated GIF, "mp4" for an ISO media file (MP4, MOV, M4V), else None (a still image)."""
    if data[4:8] == b"ftyp":
        return "mp4"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        try:
            with Image.open(io.BytesIO(data)) as img:
                return "gif" if getattr(img, "n_frames", 1) > 1 else None
        except (UnidentifiedImageError, OSError, ValueError):
            return None
    return None


def too_long(limits: Limits, seconds: float, frames: int) -> BadInput:
    """The refusal of a clip past `limits`, saying both its length and the limits."""
    words = TOO_LONG.format(seconds=seconds, frames=frames, max_seconds=limits.seconds, max_frames=limits.frames)
    return BadInput(words)


def _fit(img: Image.Image, limits: Limits) -> Image.Image:
    """RGB, scaled down (never up) to at most `limits.pixels`."""
    img = img.convert("RGB")
    scale = math.sqrt(limits.pixels / (img.width * img.height))
    if scale < 1.0:
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.LANCZOS)
    return img


def _kept(img: Image.Image) -> bytes:
    """One frame as the clip keeps it and the handler reads it (about 10 ms for 720p)."""
    out = io.BytesIO()
    img.save(out, "JPEG", quality=FRAME_QUALITY, subsampling=0)
    return out.getvalue()


def decode(data: bytes, limits: Limits = Limits()) -> Clip:
    """Every frame of a GIF or a video, with its start time; `BadInput` when unreadable or too long."""
    kind = sniff(data)
    if kind == "gif":
        return _decode_gif(data, limits)
    if kind == "mp4":
        return _decode_mp4(data, limits)
    raise BadInput(NOT_A_CLIP)


def _decode_gif(data: bytes, limits: Limits) -> Clip:
    frames: list[bytes] = []
    times: list[float] = []
    t, size = 0.0, (0, 0)
    try:
        with Image.open(io.BytesIO(data)) as img:
            n = img.n_frames
            loop = int(img.info.get("loop", 0))
            for frame in ImageSequence.Iterator(img):
                ms = max(GIF_MIN_MS, int(frame.info.get("duration") or 100))
                times.append(t)
                t += ms / 1000
                if len(frames) >= limits.frames or t > limits.seconds + 1e-6:
                    raise too_long(limits, _gif_seconds(img), n)
                fitted = _fit(frame, limits)
                frames.append(_kept(fitted))
                size = fitted.size
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as err:
        raise BadInput(DAMAGED_GIF) from err
    return Clip("gif", frames, size, times, t, data, loop)


def _gif_seconds(img: Image.Image) -> float:
    total = 0.0
    for frame in ImageSequence.Iterator(img):
        total += max(GIF_MIN_MS, int(frame.info.get("duration") or 100)) / 1000
    return total


def _decode_mp4(data: bytes, limits: Limits) -> Clip:
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise BadInput(NO_PICTURE_TRACK)
            stream = container.streams.video[0]
            audio = bool(container.streams.audio)
            seconds = _seconds(container, stream)
            declared = stream.frames or round(seconds * float(stream.average_rate or 0))
            if seconds > limits.seconds + 1e-6 or declared > limits.frames:
                raise too_long(limits, seconds, declared)
            frames: list[bytes] = []
            times: list[float] = []
            size = (0, 0)
            for frame in container.decode(stream):
                if len(frames) >= limits.frames:
                    raise too_long(limits, seconds, len(frames) + 1)
                img = frame.to_image()
                if frame.rotation:  # phone videos: stored sideways, turned by display metadata
                    img = img.rotate(frame.rotation, expand=True)
                fitted = _fit(img, limits)
                frames.append(_kept(fitted))
                size = fitted.size
                times.append(float(frame.time or 0.0))
    except av.error.FFmpegError as err:
        raise BadInput(DAMAGED_VIDEO) from err
    if not frames:
        raise BadInput(NO_FRAMES)
    start = times[0]
    return Clip("mp4", frames, size, [t - start for t in times], seconds, data, audio=audio)


def _seconds(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    import av

    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / av.time_base


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
    stylizer: Stylizer, style: str, clip: Clip, *, size: int | None = None, progress: Progress | None = None
) -> Stylized:
    """Every frame through `stylizer`, one request at a time, then the clip written back.

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
            result = await stylizer.stylize(style, frame, size=size, fmt="png", follow=follow)
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
    return Stylized(await asyncio.to_thread(encode, clip, frames), style, version, clip.content_type, faces)


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
