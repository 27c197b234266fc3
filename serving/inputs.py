"""What an upload is and whether it fits, read from its headers alone, before a pixel is decoded.

A few kilobytes of GIF can declare a 9000x9000 screen and hundreds of
frames, and a few megabytes of MP4 hundreds of 8K frames: decoding them
would hold the engine for minutes. So every input is measured first (a
GIF's screen and every frame's rectangle and delay by walking its blocks,
a video's frame size and count from its container, a still's size from its
header) and refused, in words for the user, when it is past `Limits`.

Formats are told by their bytes: an ISO media file (`ftyp`) is a clip when
its brand is a video's, and a still photo when it is HEIC, HEIF or AVIF.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from PIL import Image

from serving.api import BadInput, TooLarge
from styles.payload import refusals

if TYPE_CHECKING:
    from config import Settings

try:  # HEIC/HEIF photos: iPhones send them
    import pillow_heif
except ImportError:  # pragma: no cover - a declared dependency; without it HEIC is "not a picture"
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()

Kind = Literal["gif", "mp4"]

# What users are told (bots/messages.py lists them with the bots' own words).
TOO_LONG = (
    "That clip is {seconds:.1f} s and {frames} frames; I draw at most {max_seconds:g} s and {max_frames} frames. "
    "Trim it (your phone's video editor, or Telegram's trim bar before sending) and send it again."
)
FRAME_TOO_LARGE = (
    "That clip's frames are {width}×{height} pixels; I draw clips of up to {max_mp:g} megapixels a frame. "
    "Send a smaller version (most phones can share a video at 1080p or less)."
)
CLIP_TOO_LARGE = (
    "That clip is {frames} frames of {width}×{height} pixels, more than I draw at once "
    "({max_mp:g} megapixels in all, e.g. 10 s of 1080p video). Send a shorter or smaller one."
)
DAMAGED_GIF = "I could not read that GIF; it may be damaged."
DAMAGED_VIDEO = "I could not read that video; it may be damaged."
NO_PICTURE_TRACK = "That video has no picture track."

MAX_STREAMS = 16  # a video's streams given FFmpeg's options (`video_options`); more is not a phone's video
GIF_MIN_MS = 20  # browsers draw shorter GIF delays as 100 ms; keep what the file says, but never below this
GIF_DEFAULT_MS = 100  # a frame without a delay
# ISO base media brands (the `ftyp` box) of still pictures; any other brand is a video.
STILL_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2",
                          b"avif", b"avis", b"avio"})
VIDEO_BRANDS = frozenset({b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"mp71",
                          b"avc1", b"qt  ", b"M4V ", b"M4VH", b"M4VP", b"3gp4", b"3gp5", b"3gp6", b"3g2a",
                          b"dash", b"MSNV", b"XAVC", b"f4v "})


@dataclass(frozen=True)
class Limits:
    """What a 2-core machine draws without starving everyone else (settings in config.Settings)."""

    seconds: float = 10.0
    frames: int = 300
    pixels: int = 1280 * 720  # per drawn frame; larger frames are scaled down as they are decoded
    input_pixels: int = 3840 * 2160  # per frame as sent: a GIF's screen, a video's frame (4K)
    total_pixels: int = 1920 * 1080 * 300  # frames x input pixels: 10 s of 1080p at 30 frames a second

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The ANIMATION_MAX_* settings."""
        return cls(settings.animation_max_seconds, settings.animation_max_frames, settings.animation_max_pixels,
                   settings.animation_max_input_pixels, settings.animation_max_total_pixels)


@dataclass(frozen=True)
class Shape:
    """What the headers say: the frame size every frame is decoded at, how many, how long."""

    kind: Kind | None  # None: a still picture
    width: int
    height: int
    frames: int = 1
    seconds: float = 0.0
    delays_ms: tuple[int, ...] = ()  # a GIF's, frame by frame (GIF_MIN_MS at least)
    loop: int = 0  # a GIF's loop count

    @property
    def pixels(self) -> int:
        return self.width * self.height


def brand_kind(data: bytes) -> Kind | None:
    """"mp4" for an ISO media file with a video brand (MP4, MOV, M4V, 3GP), None for HEIC/HEIF/AVIF
    (and anything else): the major brand decides, else the compatible ones."""
    if data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[:4], "big")
    brands = [data[i:i + 4] for i in range(8, min(max(size, 16), len(data), 4096) - 3, 4) if i != 12]
    major, compatible = brands[:1], brands[1:]
    for group in (major, compatible):
        if any(b in VIDEO_BRANDS for b in group):
            return "mp4"
        if any(b in STILL_BRANDS for b in group):
            return None
    return "mp4"  # an ISO media file of an unknown brand: PyAV judges it


def sniff(data: bytes) -> Kind | None:
    """"gif" for a GIF of more than one frame, "mp4" for a video, else None (a still picture); reads
    no further than the second frame's header."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        try:
            return "gif" if _walk_gif(data, stop_after=2).frames > 1 else None
        except BadInput:
            return None
    return brand_kind(data)


def inspect(data: bytes, limits: Limits = Limits()) -> Shape:
    """The upload's shape, or `BadInput` (a clip too long, damaged) / `TooLarge` (too many pixels)."""
    kind = sniff(data)
    if kind == "gif":
        shape = _walk_gif(data)
    elif kind == "mp4":
        shape = _video_shape(data, limits)
    else:
        return _still_shape(data)
    check(shape, limits)
    return shape


def check(shape: Shape, limits: Limits) -> None:
    """Refuse a clip past `limits`, saying its length or size and the limit."""
    if shape.frames > limits.frames or shape.seconds > limits.seconds + 1e-6:
        raise too_long(limits, shape.seconds, shape.frames)
    if shape.pixels > limits.input_pixels:
        raise frame_too_large(shape.width, shape.height, limits)
    if shape.frames * shape.pixels > limits.total_pixels:
        raise clip_too_large(shape.frames, shape.width, shape.height, limits)


def frame_too_large(width: int, height: int, limits: Limits) -> TooLarge:
    """The refusal of a clip whose frames are larger than `limits.input_pixels`."""
    values = {"width": width, "height": height, "max_mp": round(limits.input_pixels / 1e6, 1)}
    return TooLarge(FRAME_TOO_LARGE.format(**values), code="frame_too_large", params=values)


def clip_too_large(frames: int, width: int, height: int, limits: Limits) -> TooLarge:
    """The refusal of a clip of more pixels in all than `limits.total_pixels`."""
    values = {"frames": frames, "width": width, "height": height, "max_mp": round(limits.total_pixels / 1e6)}
    return TooLarge(CLIP_TOO_LARGE.format(**values), code="clip_too_large", params=values)


def too_long(limits: Limits, seconds: float, frames: int) -> BadInput:
    """The refusal of a clip past `limits`, saying both its length and the limits."""
    values = {"seconds": seconds, "frames": frames, "max_seconds": limits.seconds, "max_frames": limits.frames}
    return BadInput(TOO_LONG.format(**values), code="too_long", params=values)  # the bots word it by code


def _still_shape(data: bytes) -> Shape:
    """A still's size from its header; over the handler's pixel limit is refused here already.
    A header Pillow cannot read is left to the handler, which says so in its own words."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        raise TooLarge(refusals.TOO_MANY_PIXELS) from None
    except Exception:  # UnidentifiedImageError mostly; corrupt headers raise many kinds
        return Shape(None, 0, 0)
    if width * height > refusals.MAX_PIXELS:
        raise TooLarge(refusals.TOO_MANY_PIXELS)
    return Shape(None, width, height)


def _walk_gif(data: bytes, stop_after: int = -1) -> Shape:
    """Screen, frames, delays and loop count from a GIF's blocks, skipping the image data undecoded
    (a few microseconds a frame: a 4.6 MB GIF of 200,000 frames is walked in under a second).

    The size is what Pillow composites every frame at: the screen, grown to hold any frame
    rectangle that reaches past it. Stops after `stop_after` frames when given."""
    try:
        width, height, flags = struct.unpack_from("<HHB", data, 6)
        at, end = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0), len(data)
        delays: list[int] = []
        delay, loop = GIF_DEFAULT_MS, 0
        while at < end and len(delays) != stop_after:
            block = data[at]
            if block == 0x21:  # an extension: graphic control (the next frame's delay), NETSCAPE (loops)
                if data[at + 1] == 0xF9 and data[at + 2] >= 4:
                    delay = (data[at + 4] | data[at + 5] << 8) * 10 or GIF_DEFAULT_MS
                elif data[at + 1] == 0xFF and data[at + 3:at + 14] == b"NETSCAPE2.0" and data[at + 14] >= 3:
                    loop = data[at + 16] | data[at + 17] << 8
                at += 2
            elif block == 0x2C:  # a frame: its rectangle, maybe a colour table, then LZW data
                right, bottom = (data[at + 1] | data[at + 2] << 8) + (data[at + 5] | data[at + 6] << 8), (
                    data[at + 3] | data[at + 4] << 8) + (data[at + 7] | data[at + 8] << 8)
                if right > width or bottom > height:
                    width, height = max(width, right), max(height, bottom)
                local = data[at + 9]
                at += 11 + (3 << ((local & 7) + 1) if local & 0x80 else 0)  # past the LZW minimum code size
                delays.append(delay if delay > GIF_MIN_MS else GIF_MIN_MS)
                delay = GIF_DEFAULT_MS
            else:
                break  # the trailer (0x3B), or garbage after the last frame: Pillow stops there too
            while size := data[at]:  # the data sub-blocks: a length byte and that many bytes, then 0
                at += size + 1
            at += 1
    except (struct.error, IndexError):
        raise BadInput(DAMAGED_GIF) from None
    if not delays:
        raise BadInput(DAMAGED_GIF)
    return Shape("gif", width, height, len(delays), sum(delays) / 1000, tuple(delays), loop)


def video_options(limits: Limits) -> dict[str, object]:
    """`av.open`'s options that keep FFmpeg itself from decoding a frame past `limits.input_pixels`:
    probing the streams decodes a first frame, 100 MB (and a second of CPU) for an 8K one."""
    return {"stream_options": [{"max_pixels": str(limits.input_pixels)}] * MAX_STREAMS}


def _video_shape(data: bytes, limits: Limits) -> Shape:
    """A video's frame size, frame count and length from its container (PyAV's stream info)."""
    import av

    try:
        with av.open(io.BytesIO(data), **video_options(limits)) as container:
            if not container.streams.video:
                raise BadInput(NO_PICTURE_TRACK)
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            seconds = stream_seconds(container, stream)
            frames = stream.frames or round(seconds * float(stream.average_rate or 0))
    except (av.error.FFmpegError, ValueError) as err:
        raise BadInput(DAMAGED_VIDEO) from err
    if width <= 0 or height <= 0:
        raise BadInput(DAMAGED_VIDEO)
    return Shape("mp4", width, height, frames, seconds)


def stream_seconds(container: object, stream: object) -> float:
    """A video stream's length: its own duration, else the container's."""
    import av

    if getattr(stream, "duration", None) is not None and getattr(stream, "time_base", None) is not None:
        return float(stream.duration * stream.time_base)  # type: ignore[attr-defined]
    return (getattr(container, "duration", None) or 0) / av.time_base
