"""The fast inference paths: each one this CPU supports stays within PSNR 35 dB of float32."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ARCHIVE = Path(__file__).resolve().parents[1] / "serving" / "archive"
sys.path.insert(0, str(ARCHIVE))  # the module ships flat inside each .mar

import acceleration  # noqa: E402
from training.networks import ResnetGenerator  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
SIZE = 32


@pytest.fixture(scope="module")
def generator() -> ResnetGenerator:
    torch.manual_seed(0)
    return ResnetGenerator(ngf=8, n_blocks=2, img_size=SIZE, light=True).eval()


def fixture_batch() -> torch.Tensor:
    """The public-domain photos at the generator's size, in [-1, 1]."""
    images = []
    for name in ("grace_hopper_256.jpg", "obama_256.jpg", "chelsea_256.jpg"):
        im = Image.open(FIXTURES / name).convert("RGB").resize((SIZE, SIZE), Image.LANCZOS)
        images.append(torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1)
    return torch.stack(images)


def test_psnr() -> None:
    a = torch.zeros(1, 3, 4, 4)
    assert acceleration.psnr(a, a) == float("inf")
    assert acceleration.psnr(a, a + 0.02) == pytest.approx(10 * np.log10(4 / 0.0004))


def test_every_supported_path_stays_within_the_quality_floor(generator) -> None:
    batch = fixture_batch()
    with torch.inference_mode():
        reference = generator(batch)[0]
    names = []
    for name, build in acceleration.candidates(generator, torch.device("cpu")):
        out = build()(batch)
        assert out.shape == reference.shape and out.dtype == torch.float32
        assert acceleration.psnr(out, reference) >= acceleration.PSNR_FLOOR_DB, name
        names.append(name)
    assert "cpu-eager-channels-last" in names
    if acceleration.cpu_has_bf16():
        assert "cpu-eager-bf16" in names
    if acceleration.can_compile():
        assert "cpu-compiled-fp32" in names


def test_chosen_path_is_warm_and_never_recompiles(generator, caplog) -> None:
    caplog.set_level("INFO")
    path = acceleration.choose(generator, SIZE, torch.device("cpu"))
    assert "inference path:" in caplog.text and path.psnr_db >= acceleration.PSNR_FLOOR_DB
    from torch._dynamo.utils import counters

    frames_before = counters["stats"]["unique_graphs"]
    batch = fixture_batch()
    for n in (1, 3, 2):  # the handler's batches vary; each image runs at one static shape
        out = path.run(batch[:n])
        assert out.shape == (n, 3, SIZE, SIZE)
    assert counters["stats"]["unique_graphs"] == frames_before


def test_eager_preference_skips_the_search(generator) -> None:
    assert acceleration.choose(generator, SIZE, torch.device("cpu"), prefer="eager").name == "eager-fp32"


async def test_the_handler_serves_through_the_chosen_path(
    serving_model_store, serving_mar_cache, monkeypatch, caplog
) -> None:
    """The archives' default (`inference: auto`) in the embedded engine: same picture as eager."""
    from serving.engine import EmbeddedEngine

    face = (FIXTURES / "obama_256.jpg").read_bytes()
    outputs = {}
    for mode in ("eager", "auto"):
        monkeypatch.setenv("TOONBOT_INFERENCE", mode)
        caplog.clear()
        caplog.set_level("INFO")
        engine = EmbeddedEngine(serving_model_store, cache_dir=serving_mar_cache)
        try:
            outputs[mode] = np.asarray(Image.open(io.BytesIO(
                (await engine.stylize("cat2dog", face, size=64, fmt="png")).image)), dtype=np.float32)
        finally:
            await engine.close()
        if mode == "auto":
            assert "inference path:" in caplog.text
    mse = np.mean((outputs["auto"] - outputs["eager"]) ** 2)
    assert mse == 0 or 10 * np.log10(255**2 / mse) >= acceleration.PSNR_FLOOR_DB


async def test_engine_warm_up_loads_every_style_before_any_request(serving_model_store, serving_mar_cache) -> None:
    from serving.engine import EmbeddedEngine

    engine = EmbeddedEngine(serving_model_store, cache_dir=serving_mar_cache)
    try:
        await engine.warm_up(first="cat2dog")
        assert sorted(engine._workers) == sorted(s.name for s in await engine.styles())
    finally:
        await engine.close()
