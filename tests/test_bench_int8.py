"""bench/openvino_int8.py, the int8 path bench/int8.py chose: it passes the photo check on a bundled
style, survives a save and load, and leaves the float32 generator as it was.

Skipped where openvino and nncf are not installed (they are not project dependencies yet).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("openvino")
pytest.importorskip("nncf")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import openvino_int8  # noqa: E402
from latency import acceleration  # noqa: E402  (latency puts styles/payload on sys.path)
from styles.payload.networks import ResnetGenerator  # noqa: E402
from training.showcase import load_generator  # noqa: E402

pytestmark = pytest.mark.full  # converts and calibrates real generators (seconds each)


@pytest.fixture(scope="module")
def bundled() -> tuple[ResnetGenerator, torch.Tensor, torch.Tensor]:
    """selfie2anime's trained generator, the archive's photos at its size, and its float32 pictures of them."""
    torch.set_num_threads(1)
    generator, config = load_generator(ROOT / "model_store" / "selfie2anime.mar")
    photos = acceleration.photo_batch(int(config["img_size"]))
    with torch.no_grad():
        return generator, photos, generator(photos)[0]


@pytest.fixture(scope="module")
def quantized(bundled):
    generator, photos, _ = bundled
    return openvino_int8.quantize(openvino_int8.convert(generator, photos[:1]), photos)


def test_int8_path_passes_the_photo_check_on_a_bundled_style(bundled, quantized) -> None:
    _, photos, reference = bundled
    out = openvino_int8.runner(quantized, threads=1)(photos)
    assert out.shape == reference.shape and out.dtype == torch.float32
    whole, face = acceleration.photo_quality(out, reference)
    assert acceleration.passes(whole, face), (whole, face)


def test_saved_and_loaded_model_draws_the_same(bundled, quantized, tmp_path) -> None:
    _, photos, _ = bundled
    path = tmp_path / "cache" / "cpu-openvino-int8.xml"
    openvino_int8.save(quantized, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["cpu-openvino-int8.bin", "cpu-openvino-int8.xml"]
    before = openvino_int8.runner(quantized, threads=1)(photos[:2])
    after = openvino_int8.runner(openvino_int8.load(path), threads=1)(photos[:2])
    assert torch.equal(before, after)


def test_float32_generator_is_left_as_it_was(bundled, quantized) -> None:
    """Unlike quantize_dynamic, which swaps gap_fc for a packed module that code reading
    `list(gap_fc.parameters())[0]` (the CAM weight) cannot use."""
    generator, photos, reference = bundled
    cam_weight = list(generator.gap_fc.parameters())[0]
    assert cam_weight.dtype == torch.float32 and cam_weight.shape == (1, generator.ngf * 4)
    assert all(type(m).__module__.startswith(("torch.nn.modules", "styles")) for m in generator.modules())
    with torch.no_grad():
        assert torch.equal(generator(photos)[0], reference)


def test_any_batch_comes_back_one_picture_per_input() -> None:
    torch.manual_seed(0)
    generator = ResnetGenerator(ngf=8, n_blocks=1, img_size=32, light=True).eval()
    photos = acceleration.photo_batch(32)
    run = openvino_int8.build(generator, photos, threads=1)
    out = run(photos[:3])
    assert out.shape == (3, 3, 32, 32) and torch.isfinite(out).all() and out.abs().max() <= 1
