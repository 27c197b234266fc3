"""bots.collage: every style's preview in one labelled picture, built once per catalogue."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from fakes.stylizer import MemoryStylizer
from PIL import Image

from bots import collage
from styles import catalog


def pixels(data: bytes | None) -> np.ndarray:
    assert data is not None
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


async def test_each_style_shows_its_own_preview_in_its_tile() -> None:
    styles = await MemoryStylizer(catalog.KNOWN).styles()
    picture = pixels(collage.collage(styles))
    rows = -(-len(styles) // collage.COLUMNS)
    assert picture.shape[0] == rows * (collage.TILE_HEIGHT + collage.LABEL_HEIGHT + collage.GAP) + collage.GAP
    width, height = 2 * collage.TILE_HEIGHT, collage.TILE_HEIGHT
    for i, style in enumerate(styles):
        x = collage.GAP + (i % collage.COLUMNS) * (width + collage.GAP)
        y = collage.GAP + (i // collage.COLUMNS) * (height + collage.LABEL_HEIGHT + collage.GAP)
        assert style.preview is not None
        with Image.open(io.BytesIO(style.preview)) as preview:
            expected = np.asarray(preview.convert("RGB").resize((width, height), Image.LANCZOS), dtype=np.int16)
        assert np.abs(picture[y : y + height, x : x + width] - expected).mean() < 6


async def test_built_once_per_catalogue() -> None:
    styles = await MemoryStylizer(("cat2dog", "dog2cat")).styles()
    first = collage.collage(styles)
    assert first is not None and collage.collage(list(styles)) is first  # the same catalogue: the cached picture
    deployed = [styles[0], dataclasses.replace(styles[1], version="2.0")]
    assert collage.collage(deployed) is not first  # a deploy changes the catalogue


async def test_a_style_without_a_preview_gets_a_grey_tile() -> None:
    with_preview, without = await MemoryStylizer(("cat2dog", "dog2cat")).styles()
    without = dataclasses.replace(without, preview=None)  # an archive exported before previews
    picture = pixels(collage.collage([with_preview, without]))
    x = collage.GAP + 2 * collage.TILE_HEIGHT + collage.GAP  # the second column
    tile = picture[collage.GAP : collage.GAP + 20, x : x + 20]
    assert np.abs(tile - 0xE6).max() < 8
    assert collage.collage([without]) is None  # no previews at all: the list alone
