"""Decoding every image mode Pillow opens: the picture survives, transparency becomes white.

Each case writes the same portrait in one mode to a format that keeps that
mode, checks Pillow reads that mode back, and compares what `decode` makes of
it with the portrait, block by block (dithering and palettes move single
pixels, not 8x8 averages).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styles.payload import imaging

PORTRAIT = Image.open(Path(__file__).with_name("fixtures") / "grace_hopper_256.jpg").convert("RGB")
GREY = np.asarray(PORTRAIT.convert("L"))
HALF = GREY.shape[1] // 2  # the left half is made transparent where the mode allows it


def saved(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def blocks(grey: np.ndarray) -> np.ndarray:
    """8x8 block means."""
    h, w = grey.shape
    return grey[: h // 8 * 8, : w // 8 * 8].reshape(h // 8, 8, w // 8, 8).astype(float).mean(axis=(1, 3))


def grey16(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.uint16))


def left_transparent_l() -> bytes:
    """8-bit grey with a tRNS key: the portrait in even values, the left half the odd key 1."""
    values = GREY // 2 * 2
    values[:, :HALF] = 1
    return saved(Image.fromarray(values), "PNG", transparency=1)


def left_transparent_16() -> bytes:
    """16-bit grey with a tRNS key (the issue's case): the key 1 is a value no portrait pixel has."""
    values = GREY.astype(np.uint32) * 257
    values[:, :HALF] = 1
    return saved(grey16(values), "PNG", transparency=1)


def left_transparent_palette() -> bytes:
    img = PORTRAIT.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    indices = np.asarray(img).copy()
    indices[:, :HALF] = 255
    out = Image.fromarray(indices, "P")
    out.putpalette(img.getpalette() + [0, 0, 0] * (256 - len(img.getpalette()) // 3))  # index 255 exists
    return saved(out, "PNG", transparency=255)


def with_alpha(mode: str) -> bytes:
    img = PORTRAIT.convert(mode)
    alpha = np.full(GREY.shape, 255, np.uint8)
    alpha[:, :HALF] = 0
    img.putalpha(Image.fromarray(alpha))
    return saved(img, "PNG")


# (mode Pillow must open, file bytes, whether the left half is transparent)
CASES: dict[str, tuple[str, Callable[[], bytes], bool]] = {
    "1": ("1", lambda: saved(PORTRAIT.convert("1"), "PNG"), False),
    "L": ("L", lambda: saved(PORTRAIT.convert("L"), "PNG"), False),
    "L with tRNS": ("L", left_transparent_l, True),
    "LA": ("LA", lambda: with_alpha("LA"), True),
    "I;16": ("I;16", lambda: saved(grey16(GREY.astype(np.uint32) * 257), "PNG"), False),
    "I;16 with tRNS": ("I;16", left_transparent_16, True),
    "I, 8-bit values": ("I", lambda: saved(PORTRAIT.convert("L").convert("I"), "TIFF"), False),
    "I, 16-bit values": ("I", lambda: saved(Image.fromarray(GREY.astype(np.int32) * 257), "TIFF"), False),
    "F, 0-1": ("F", lambda: saved(Image.fromarray(GREY.astype(np.float32) / 255), "TIFF"), False),
    "F, 0-255": ("F", lambda: saved(PORTRAIT.convert("F"), "TIFF"), False),
    "P with transparency": ("P", left_transparent_palette, True),
    "RGBA": ("RGBA", lambda: with_alpha("RGBA"), True),
    "CMYK": ("CMYK", lambda: saved(PORTRAIT.convert("CMYK"), "JPEG", quality=95), False),
    "YCbCr": ("YCbCr", lambda: saved(PORTRAIT.convert("YCbCr"), "TIFF"), False),
    "LAB": ("LAB", lambda: saved(PORTRAIT.convert("LAB"), "TIFF"), False),
}


@pytest.mark.parametrize("case", CASES)
def test_every_mode_decodes_to_the_picture(case: str) -> None:
    mode, make, transparent = CASES[case]
    data = make()
    assert Image.open(io.BytesIO(data)).mode == mode  # the case really tests that mode

    decoded = imaging.decode(data)

    assert decoded.mode == "RGB" and decoded.size == PORTRAIT.size
    got = blocks(np.asarray(decoded.convert("L")))
    want = blocks(GREY.copy())
    if transparent:
        want[:, : HALF // 8] = 255  # transparent: white
    assert np.abs(got - want).mean() < 4, f"{case}: decoded picture differs from the portrait"
    assert np.abs(got - want).max() < 40


@pytest.mark.parametrize(
    ("need", "size"),
    [({}, (2048, 1536)), ({"min_long": 1000}, (1024, 768)), ({"min_long": 1100}, (2048, 1536)),
     ({"min_short": 96}, (256, 192)), ({"min_short": 400}, (1024, 768)),
     ({"min_short": 96, "min_long": 1000}, (1024, 768))],
)
def test_a_large_jpeg_decodes_at_the_smallest_scale_that_keeps_what_is_needed(
    need: dict[str, int], size: tuple[int, int]
) -> None:
    photo = PORTRAIT.resize((2048, 1536))
    decoded = imaging.decode(saved(photo, "JPEG", quality=95), **need)
    assert decoded.size == size and decoded.mode == "RGB"
    small = np.asarray(decoded.resize((256, 192), Image.BOX).convert("L"), dtype=float)
    assert np.abs(small - np.asarray(photo.resize((256, 192), Image.BOX).convert("L"), dtype=float)).mean() < 2


def test_reduced_scale_leaves_other_formats_and_exif_turns_alone() -> None:
    photo = PORTRAIT.resize((1600, 1200))
    assert imaging.decode(saved(photo, "PNG"), min_short=96).size == (1600, 1200)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees: decoded upright, then its long side is the height
    assert imaging.decode(saved(photo, "JPEG", exif=exif.tobytes()), min_long=700).size == (600, 800)
