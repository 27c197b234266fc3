"""One picture of every style's preview, labelled: what `/styles` shows in the chats.

Each style's archive carries a before|after of a public-domain picture (drawn
at export); the chats show them all at once, each over its title and the name
to type. Built once per catalogue (the styles themselves are the cache key),
not once per `/styles`.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from bots import messages
from serving.api import StyleInfo

COLUMNS = 2
TILE_HEIGHT = 192  # a preview is drawn at the model's size (96 px) and shown twice as large
LABEL_HEIGHT = 46
GAP = 12
QUALITY = 85


def collage(styles: Sequence[StyleInfo]) -> bytes | None:
    """A JPEG grid of the styles' previews, each above its title and name (the same bytes for the same
    styles); None when no style has a preview (archives exported before previews)."""
    return _collage(tuple(styles)) if any(s.preview is not None for s in styles) else None


@functools.lru_cache(maxsize=4)
def _collage(styles: tuple[StyleInfo, ...]) -> bytes:
    tile_width = 2 * TILE_HEIGHT  # before | after
    rows = -(-len(styles) // COLUMNS)
    canvas = Image.new("RGB", (COLUMNS * (tile_width + GAP) + GAP, rows * (TILE_HEIGHT + LABEL_HEIGHT + GAP) + GAP),
                       "white")
    pen = ImageDraw.Draw(canvas)
    title_font, name_font = ImageFont.load_default(size=20), ImageFont.load_default(size=15)
    for i, style in enumerate(styles):
        x = GAP + (i % COLUMNS) * (tile_width + GAP)
        y = GAP + (i // COLUMNS) * (TILE_HEIGHT + LABEL_HEIGHT + GAP)
        if style.preview is not None:
            with Image.open(io.BytesIO(style.preview)) as preview:
                canvas.paste(preview.convert("RGB").resize((tile_width, TILE_HEIGHT), Image.LANCZOS), (x, y))
        else:
            pen.rectangle((x, y, x + tile_width - 1, y + TILE_HEIGHT - 1), fill="#e6e6e6")
            pen.text((x + tile_width // 2, y + TILE_HEIGHT // 2), messages.NO_PREVIEW, fill="#666666", font=name_font,
                     anchor="mm")
        pen.text((x, y + TILE_HEIGHT + 4), style.title, fill="black", font=title_font)
        pen.text((x, y + TILE_HEIGHT + 27), style.name, fill="#555555", font=name_font)
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=QUALITY, optimize=True)
    return out.getvalue()
