"""Image bytes in and out of the handler: decode, validate, encode.

Ships inside every `.mar` beside `handler.py` (TorchServe puts the archive's
folder on `sys.path`), so it imports only installed packages.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

try:  # flat inside a .mar: TorchServe puts the archive's folder on sys.path
    from refusals import (
        MAX_BYTES, MAX_PIXELS, MIN_SIDE, NOT_AN_IMAGE, TOO_LARGE, TOO_MANY_PIXELS, TOO_SMALL, TRUNCATED,
    )
except ModuleNotFoundError:  # imported from the source tree (tests, bench)
    from styles.payload.refusals import (
        MAX_BYTES, MAX_PIXELS, MIN_SIDE, NOT_AN_IMAGE, TOO_LARGE, TOO_MANY_PIXELS, TOO_SMALL, TRUNCATED,
    )

try:  # HEIC/HEIF photos (iPhones): a TorchServe whose Python lacks pillow-heif still serves every other format
    import pillow_heif
except ImportError:  # pragma: no cover - a declared dependency of toonbot
    pass
else:
    pillow_heif.register_heif_opener()

SIZES = range(32, 2049)
FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
DEFAULT_FORMAT = "jpeg"
JPEG_QUALITY = 92
WEBP_QUALITY = 90
ALPHA_MODES = ("RGBA", "LA", "PA")  # not LAB: its "A" band is a colour
WIDE_MODES = ("I", "F")  # 32-bit integer and float greyscale (16-bit modes are "I;16...")

BAD_OPTION = (
    f"Unsupported output options: size must be {SIZES.start}-{SIZES.stop - 1} px, "
    f"format one of {', '.join(FORMATS)}, and compare 1 or 0."
)


class Rejected(Exception):
    """One request of a batch cannot be served; the others go on."""

    def __init__(self, kind: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status

    def to_json(self) -> bytes:
        """The error body the contract promises: {"error": kind, "message": text}."""
        return json.dumps({"error": self.kind, "message": self.message}).encode()


@dataclass(frozen=True)
class Options:
    """What the caller asked for: output side in pixels (None: the model's own), encoding,
    whether the original comes back beside the result (before/after), and whether the style's
    learned upscaler runs (a clip's frames skip it: its cost is paid per frame)."""

    size: int | None = None
    fmt: str = DEFAULT_FORMAT
    compare: bool = False
    upscale: bool = True

    @property
    def content_type(self) -> str:
        return FORMATS[self.fmt]


def _text(value: Any) -> str:
    """TorchServe hands form fields over as bytes or bytearray, headers as str."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def parse_options(size: Any = None, fmt: Any = None, compare: Any = None, upscale: Any = None) -> Options:
    """Validate the requested output side and format; None means the default
    (for the side: what the model draws, see the handler's `draw_size`).

    TorchServe does not pass query strings to handlers: callers send the
    `X-Size` / `X-Format` headers, or `size` / `format` fields of a multipart form.
    """
    try:
        side = None if size is None or not _text(size).strip() else int(_text(size))
    except ValueError:
        raise Rejected("bad_option", BAD_OPTION) from None
    name = DEFAULT_FORMAT if fmt is None else _text(fmt).lower().replace("jpg", "jpeg")
    if (side is not None and side not in SIZES) or name not in FORMATS:
        raise Rejected("bad_option", BAD_OPTION)
    flags = ["" if value is None else _text(value).strip().lower() for value in (compare, upscale)]
    if any(flag not in ("", "0", "1", "false", "true") for flag in flags):
        raise Rejected("bad_option", BAD_OPTION)
    return Options(side, name, flags[0] in ("1", "true"), flags[1] not in ("0", "false"))


def side_by_side(before: Image.Image, after: Image.Image) -> Image.Image:
    """The original on the left and the result on the right, `before` scaled to `after`'s height."""
    if before.height != after.height:
        width = max(1, round(before.width * after.height / before.height))
        before = before.resize((width, after.height), Image.LANCZOS)
    both = Image.new("RGB", (before.width + after.width, after.height))
    both.paste(before, (0, 0))
    both.paste(after, (before.width, 0))
    return both


def request_body(row: dict[str, Any]) -> bytes:
    """The image bytes: a raw body arrives as "body", a multipart or form upload as "data"."""
    body = row.get("body") if row.get("body") is not None else row.get("data")
    if isinstance(body, str):  # a text/* upload; never an image
        raise Rejected("not_an_image", NOT_AN_IMAGE)
    return bytes(body or b"")


def decode(data: bytes, min_long: int = 0, min_short: int = 0) -> Image.Image:
    """Bytes -> upright RGB picture, or `Rejected` saying why not.

    Sizes are checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing. A JPEG that is at least twice as large
    as the caller needs (`min_long` on its long side, `min_short` on its short
    side) is decoded at 1/2, 1/4 or 1/8 scale: libjpeg scales in the DCT, at a
    fraction of the CPU that decoding it whole and shrinking it takes.
    """
    if len(data) > MAX_BYTES:
        raise Rejected("too_large", TOO_LARGE, 413)
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise Rejected("too_many_pixels", TOO_MANY_PIXELS, 413) from None
    except Exception:  # UnidentifiedImageError mostly; corrupt headers raise many kinds
        raise Rejected("not_an_image", NOT_AN_IMAGE) from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise Rejected("too_many_pixels", TOO_MANY_PIXELS, 413)
    if min(width, height) < MIN_SIDE:
        raise Rejected("too_small", TOO_SMALL)
    needed = max(min_long / max(width, height), min_short / min(width, height))  # the share of it needed
    if 0 < needed <= 0.5:  # no-op for formats other than JPEG
        img.draft(None, (math.ceil(width * needed), math.ceil(height * needed)))
    try:
        img.load()  # the first frame of a GIF or an animated WebP
        img = ImageOps.exif_transpose(img)
    except Exception:  # OSError for a cut-off file; corrupt data raises many kinds
        raise Rejected("truncated", TRUNCATED) from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode -> RGB; transparent pixels become white, as on a chat's light background.

    Transparency is read before 16-bit and float pictures are scaled down to
    8 bits: a tRNS colour names a 16-bit value, and scaling first would make
    every pixel miss it (or, converting straight to RGBA, turn them all white).
    """
    if img.mode == "RGB":
        return img
    alpha = _alpha(img)
    if img.mode in WIDE_MODES or img.mode.startswith("I;16"):
        img = _grey_8bit(img)
    rgb = img.convert("RGB")
    if alpha is None:
        return rgb
    return Image.composite(rgb, Image.new("RGB", rgb.size, (255, 255, 255)), alpha)


def _alpha(img: Image.Image) -> Image.Image | None:
    """The picture's opacity as an L mask, or None when it is opaque."""
    if img.mode in ALPHA_MODES:
        return img.getchannel("A")
    if "transparency" not in img.info:
        return None
    if img.mode in WIDE_MODES or img.mode.startswith("I;16"):  # one grey value, at full depth
        key = img.info["transparency"]
        return Image.fromarray(np.where(np.asarray(img) == key, 0, 255).astype(np.uint8))
    return img.convert("RGBA").getchannel("A")  # palette, 1, L and RGB keys: Pillow knows them


def _grey_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale -> 8-bit L, scaled from the range the values were written in.

    I;16 spans 0-65535. I and F come from TIFFs that hold 8-bit, 16-bit or
    0-1 float data alike, so the largest value says which; anything wider is
    stretched to fit.
    """
    values = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        top = 65535.0
    else:
        peak = float(values.max(initial=0.0))
        top = next((t for t in (1.0, 255.0, 65535.0) if peak <= t), peak)
    return Image.fromarray(np.clip(values * (255.0 / top) + 0.5, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str) -> bytes:
    """RGB picture -> bytes in the requested format."""
    out = io.BytesIO()
    if fmt == "jpeg":
        img.save(out, "JPEG", quality=JPEG_QUALITY)
    elif fmt == "webp":
        img.save(out, "WEBP", quality=WEBP_QUALITY)
    else:
        img.save(out, "PNG")
    return out.getvalue()
