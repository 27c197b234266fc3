"""The fastest generator path this machine supports, chosen and checked at load time.

Ships inside every `.mar` (flat import, torch only). Candidates, in order:
bf16 autocast where the CPU has bf16 instructions (AVX512-BF16 or AMX) or on
CUDA, a frozen `torch.compile` graph, channels-last eager, plain eager float32.
Each candidate is built and warmed up on a probe image before any request
(so compilation never happens during one), its output is compared with eager
float32 (PSNR >= 35 dB or it is dropped), and the fastest survivor wins. The
choice is logged. Inputs always have the same shape (the handler frames every
image to img_size and runs one image at a time on the CPU), so compiled graphs
never recompile.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

PSNR_FLOOR_DB = 35.0
TIMING_RUNS = 3
Run = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Path:
    """One way to run the generator: (N, 3, S, S) in [-1, 1] -> float32 on the input's device."""

    name: str
    run: Run
    psnr_db: float = math.inf
    seconds: float = math.nan


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (peak-to-peak 2)."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def cpu_has_bf16() -> bool:
    """bf16 matmul/convolution instructions (AVX512-BF16 or AMX), not emulation."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def can_compile() -> bool:
    """Inductor needs a C++ compiler on the CPU (Triton on CUDA)."""
    return shutil.which(os.environ.get("CXX", "g++")) is not None or shutil.which("c++") is not None


def _image_only(model: nn.Module) -> Run:
    def run(x: torch.Tensor) -> torch.Tensor:
        # Frozen graphs hold inference tensors: every path runs in inference mode.
        with torch.inference_mode():
            return model(x)[0]

    return run


def _one_at_a_time(run: Run) -> Run:
    """Batch of N -> N calls of batch 1: one static shape, and on a few cores no slower."""
    return lambda x: torch.cat([run(x[i : i + 1]) for i in range(x.shape[0])])


def _autocast(run: Run, device: torch.device, dtype: torch.dtype) -> Run:
    def wrapped(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return run(x).float()

    return wrapped


def _channels_last(run: Run) -> Run:
    return lambda x: run(x.contiguous(memory_format=torch.channels_last))


def _compiled(model: nn.Module) -> Run:
    import torch._inductor.config as inductor_config

    # Freezing folds the weights into the graph as constants (inference only).
    inductor_config.freezing = True
    return _image_only(torch.compile(model, dynamic=False))


def candidates(model: nn.Module, device: torch.device) -> list[tuple[str, Callable[[], Run]]]:
    """(name, builder) pairs this machine can run, fastest-expected first.

    On the CPU this converts `model`'s weights to channels-last in place (a
    copy would double the memory of a full 1 GB generator); every path,
    plain eager included, gives the same results with either layout.
    """
    if device.type == "cuda":
        return [("cuda-fp16", lambda: _autocast(_image_only(model), device, torch.float16))]
    cl = model.to(memory_format=torch.channels_last)
    out: list[tuple[str, Callable[[], Run]]] = []
    compile_ok = can_compile() and os.environ.get("TOONBOT_NO_COMPILE") != "1"
    if cpu_has_bf16():
        if compile_ok:
            out.append(("cpu-compiled-bf16", lambda: _one_at_a_time(
                _autocast(_channels_last(_compiled(cl)), device, torch.bfloat16))))
        out.append(("cpu-eager-bf16", lambda: _one_at_a_time(
            _autocast(_channels_last(_image_only(cl)), device, torch.bfloat16))))
    if compile_ok:
        out.append(("cpu-compiled-fp32", lambda: _one_at_a_time(_channels_last(_compiled(cl)))))
    out.append(("cpu-eager-channels-last", lambda: _one_at_a_time(_channels_last(_image_only(cl)))))
    return out


def _median_seconds(run: Run, probe: torch.Tensor) -> float:
    times = []
    for _ in range(TIMING_RUNS):
        start = time.perf_counter()
        run(probe)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def probe_image(img_size: int, device: torch.device) -> torch.Tensor:
    """A deterministic smooth test pattern with edges: gradients, rings and a bright disc."""
    ramp = torch.linspace(-1, 1, img_size, device=device)
    y, x = torch.meshgrid(ramp, ramp, indexing="ij")
    r = torch.sqrt(x**2 + y**2)
    channels = [x, torch.cos(6 * math.pi * r), torch.where(r < 0.5, 0.8, -0.6) + 0.1 * y]
    return torch.stack(channels).clamp(-1, 1).unsqueeze(0)


@torch.inference_mode()
def choose(model: nn.Module, img_size: int, device: torch.device, prefer: str = "auto") -> Path:
    """Build, warm up, check and time each candidate; return the fastest within the PSNR floor.

    `prefer` names one candidate to use if it passes the check ("eager" skips all of this).
    """
    model.eval()
    baseline = Path("eager-fp32", _image_only(model))
    if prefer == "eager":
        return baseline
    probe = probe_image(img_size, device)
    reference = baseline.run(probe).float()
    survivors = [Path(baseline.name, baseline.run, math.inf, _median_seconds(baseline.run, probe))]
    for name, build in candidates(model, device):
        if prefer not in ("auto", name):
            continue
        try:
            run = build()
            quality = psnr(run(probe), reference)  # also the warm-up (compilation) call
        except Exception as exc:  # a backend that cannot run here is skipped, not fatal
            logger.warning("inference path %s unavailable: %s", name, exc)
            continue
        if quality < PSNR_FLOOR_DB:
            logger.warning("inference path %s dropped: PSNR %.1f dB < %.0f dB", name, quality, PSNR_FLOOR_DB)
            continue
        survivors.append(Path(name, run, quality, _median_seconds(run, probe)))
    best = min(survivors, key=lambda p: p.seconds) if prefer == "auto" else survivors[-1]
    summary = ", ".join(f"{p.name} {p.seconds * 1000:.0f} ms" for p in survivors)
    logger.info("inference path: %s (PSNR %.1f dB vs float32; measured %s; cpu %s)",
                best.name, best.psnr_db, summary, torch.backends.cpu.get_cpu_capability())
    return best
