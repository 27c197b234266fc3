"""Every style shipped in model_store/ turns a public-domain photo into a new picture."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.engine import EmbeddedEngine
from styles import catalog
from styles.archive import PAYLOAD, read_archive
from styles.catalog import KNOWN

MODEL_STORE = Path(__file__).resolve().parents[1] / "model_store"
FIXTURES = Path(__file__).parent / "fixtures"
BUNDLED = sorted(p.name.removesuffix(".mar") for p in MODEL_STORE.glob("*.mar") if "-" not in p.name)


def test_the_repository_ships_every_catalogued_style_in_a_small_archive() -> None:
    assert len(KNOWN) == 8
    assert set(KNOWN) <= set(BUNDLED)
    for style in KNOWN:
        assert (MODEL_STORE / f"{style}.mar").stat().st_size < 15 * 2**20


@pytest.mark.parametrize("style", sorted(KNOWN))
def test_each_bundled_archive_carries_the_current_handler_payload(style: str) -> None:
    """The embedded engine and TorchServe both run the archive's own copy, so a fix in styles/payload
    reaches users only once the archives are re-packed."""
    with zipfile.ZipFile(MODEL_STORE / f"{style}.mar") as mar:
        stale = [p.name for p in sorted(PAYLOAD.glob("*.py")) if mar.read(p.name) != p.read_bytes()]
    assert not stale, (f"{style}.mar carries an older {', '.join(stale)}: "
                       f"python -m training export model_store/{style}.mar --out model_store --datasets DIR")


@pytest.mark.parametrize("style", sorted(KNOWN))
async def test_each_bundled_style_previews_its_catalogue_picture_as_a_request_draws_it(
    style: str, tmp_path: Path
) -> None:
    archive = read_archive(MODEL_STORE / f"{style}.mar")
    preview = archive.preview()
    # At the reply size (512 px wide halves for selfie2anime): a JPEG of about 100 KB at most.
    assert preview is not None and len(preview) < 150_000, "re-package: python -m training export ARCHIVE"
    source = catalog.preview(style)
    picture = (catalog.PREVIEW_PICTURES / source.picture).read_bytes()
    engine = EmbeddedEngine(MODEL_STORE, cache_dir=tmp_path)
    try:
        if source.through is not None:
            picture = (await engine.stylize(source.through, picture)).image
        drawn = await engine.stylize(style, picture, compare=True)
    finally:
        await engine.close()
    shown, expected = (np.asarray(Image.open(io.BytesIO(b)), dtype=np.float32) for b in (preview, drawn.image))
    side = archive.output_size
    assert shown.shape == expected.shape == (side, 2 * side, 3)  # before | after, at the size the style replies
    assert np.abs(shown - expected).mean() < 3  # the same picture, up to the inference path chosen


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
