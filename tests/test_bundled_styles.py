"""Every style shipped in model_store/ turns a public-domain photo into a new picture."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styles.catalog import KNOWN
from serving.engine import EmbeddedEngine

MODEL_STORE = Path(__file__).resolve().parents[1] / "model_store"
FIXTURES = Path(__file__).parent / "fixtures"
BUNDLED = sorted(p.name.removesuffix(".mar") for p in MODEL_STORE.glob("*.mar") if "-" not in p.name)


def test_the_repository_ships_every_catalogued_style_in_a_small_archive() -> None:
    assert len(KNOWN) == 8
    assert set(KNOWN) <= set(BUNDLED)
    for style in KNOWN:
        assert (MODEL_STORE / f"{style}.mar").stat().st_size < 15 * 2**20


@pytest.mark.parametrize("style", BUNDLED)
async def test_bundled_style_stylizes_a_public_domain_photo(style: str, tmp_path: Path) -> None:
    photo = FIXTURES / ("grace_hopper_256.jpg" if style == "selfie2anime" else "chelsea_256.jpg")
    engine = EmbeddedEngine(MODEL_STORE, cache_dir=tmp_path)
    try:
        result = await engine.stylize(style, photo.read_bytes(), size=256, fmt="png")
    finally:
        await engine.close()
    out = Image.open(io.BytesIO(result.image))
    assert (out.format, out.size, out.mode) == ("PNG", (256, 256), "RGB")
    original = np.asarray(Image.open(photo).convert("RGB").resize((256, 256)), dtype=np.float32)
    assert np.abs(np.asarray(out, dtype=np.float32) - original).mean() > 5, "output looks like the input"
