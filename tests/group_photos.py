"""Synthetic group photos from public-domain portraits (tests/fixtures/faces), for the face tests."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

PORTRAITS = sorted(Path(__file__).with_name("fixtures").joinpath("faces").glob("[A-Z]*.jpg"))  # 200 x 250
GROUND = (40, 120, 60)


def group_photo(count: int, width: int, columns: int | None = None, gap: int = 20) -> Image.Image:
    """`count` portraits (repeating the four), each `width` px wide, in a grid on a green ground."""
    columns = columns or count
    height = round(width * 1.25)
    rows = math.ceil(count / columns)
    photo = Image.new("RGB", (columns * (width + gap) + gap, rows * (height + gap) + gap), GROUND)
    for i in range(count):
        face = Image.open(PORTRAITS[i % len(PORTRAITS)]).convert("RGB").resize((width, height), Image.LANCZOS)
        photo.paste(face, (gap + (i % columns) * (width + gap), gap + (i // columns) * (height + gap)))
    return photo
