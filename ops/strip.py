"""A retrained style beside the live one on its public-domain preview picture: before | live | new.

Both archives carry the same picture before and after their own generator
(`styles.preview`), so one row per style shows what a deploy would change.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

HEIGHT = 192
LABEL = 24
QUALITY = 85


def _halves(preview: bytes) -> tuple[Image.Image, Image.Image]:
    """A before|after preview's two pictures."""
    with Image.open(io.BytesIO(preview)) as im:
        im = im.convert("RGB")
        w, h = im.size
        return im.crop((0, 0, w // 2, h)), im.crop((w // 2, 0, w, h))


def strip(rows: Sequence[tuple[str, bytes | None, bytes]]) -> bytes:
    """One JPEG: a row per (label, live preview or None, new preview): before | live after | new after."""
    canvas = Image.new("RGB", (3 * HEIGHT, len(rows) * (HEIGHT + LABEL)), "white")
    pen = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=15)
    for i, (label, live, new) in enumerate(rows):
        y = i * (HEIGHT + LABEL)
        before, after = _halves(new)
        live_after = _halves(live)[1] if live is not None else None
        for j, picture in enumerate((before, live_after, after)):
            if picture is not None:
                canvas.paste(picture.resize((HEIGHT, HEIGHT), Image.LANCZOS), (j * HEIGHT, y + LABEL))
        pen.text((4, y + 4), label, fill="black", font=font)
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()
