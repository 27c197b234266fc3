"""int8 paths for x86 CPUs against eager float32: PyTorch PT2E, ONNX Runtime, OpenVINO.

    .venv/bin/python bench/int8.py [--threads 1 2] [--runs 5] [--models bundled paper] [--no-sweep]

Measured 2026-11-30 on an AMD EPYC (family 25, model 1: Zen 3, AVX2, no
VNNI, no AVX-512, no bf16), 2 cores shared with a training run, torch 2.13.0,
torchao 0.18.0, onnxruntime 1.32.0, openvino 2026.4.1, nncf 3.4.0; 5 timed
calls per path in turns, median. Absolute times swing 2x with the load: read
the ratios. `of peak`: share of this CPU's 3x3-convolution peak of the
path's format, measured in the same turns (fp32 75-86 GFLOP/s through
torch; int8 134-161 GOP/s, best engine ONNX Runtime, OpenVINO 109-127,
PT2E 44-63). PSNR: whole photos / worst face box, against float32.

| model, threads | path (int8 layers) | ms/image | vs eager | of peak | PSNR dB | prepare s | check |
|---|---|---|---|---|---|---|---|
| bundled 96 px, 1 | eager fp32 | 155 | 1.00x | 28% | - | 0 | - |
| | PT2E x86 int8 (convs+linears, first conv float) | 75 | 2.06x | 34% | 38.6 / 37.8 | 30 | pass |
| | ONNX Runtime fp32 | 104 | 1.49x | 42% | - | 11 | pass |
| | ONNX Runtime int8 (convs, first float) | 87 | 1.79x | 29% | 34.6 / 33.1 | 14 | FAIL |
| | OpenVINO fp32 | 121 | 1.28x | 37% | - | 14 | pass |
| | OpenVINO int8 (all convs) | 65 | 2.40x | 39% | 38.4 / 37.4 | 18 | pass |
| | **OpenVINO int8 (convs, first float)** | 53 | **2.95x** | 48% | **39.8 / 38.6** | 19 | pass |
| bundled 96 px, 2 | eager fp32 (*) | 520 | 1.00x | 10% | - | 1 | - |
| | PT2E x86 int8 (*) | 261 | 1.99x | 9% | 39.1 / 38.8 | 37 | pass |
| | ONNX Runtime fp32 | 86 | 6.06x | 59% | - | 12 | pass |
| | ONNX Runtime int8 | 76 | 6.86x | 31% | 34.6 / 33.1 | 9 | FAIL |
| | OpenVINO fp32 | 104 | 4.98x | 48% | - | 18 | pass |
| | OpenVINO int8 (all convs) | 50 | 10.4x | 47% | 38.3 / 37.2 | 28 | pass |
| | **OpenVINO int8 (convs, first float)** | 62 | **8.41x** | 38% | **39.4 / 38.2** | 26 | pass |
| paper 256 px, 1 | eager fp32 | 2650 | 1.00x | 48% | - | 3 | - |
| | PT2E x86 int8 | 1304 | 2.03x | 52% | (37.7) | 51 | - |
| | ONNX Runtime fp32 | 1458 | 1.82x | 87% | - | 12 | - |
| | ONNX Runtime int8 | 1013 | 2.62x | 67% | (34.1) | 31 | - |
| | OpenVINO fp32 | 2029 | 1.31x | 62% | - | 32 | - |
| | OpenVINO int8 (all convs) | 1035 | 2.56x | 66% | (36.1) | 50 | - |
| | **OpenVINO int8 (convs, first float)** | 1062 | **2.50x** | 64% | (37.0) | 32 | - |
| paper 256 px, 2 | eager fp32 (*) | 3412 | 1.00x | 45% | - | 3 | - |
| | PT2E x86 int8 (*) | 1970 | 1.73x | 40% | (37.7) | 102 | - |
| | ONNX Runtime fp32 | 2092 | 1.63x | 74% | - | 16 | - |
| | ONNX Runtime int8 | 1410 | 2.42x | 55% | (34.1) | 29 | - |
| | OpenVINO fp32 | 2089 | 1.63x | 74% | - | 30 | - |
| | OpenVINO int8 (all convs) | 1096 | 3.11x | 71% | (36.2) | 45 | - |
| | **OpenVINO int8 (convs, first float)** | 1219 | **2.80x** | 64% | (36.9) | 53 | - |

(*) torch's OpenMP threads on 2 cores that the training run also holds
stall each other: 2 threads ran slower than 1. ORT and OpenVINO keep their
own thread pools and did not. (PSNR in brackets: random weights, no verdict.)

Layer sweep on the bundled style (1 thread), PSNR whole / worst face:

| engine | its default ops | all convs | convs but the first |
|---|---|---|---|
| PT2E X86InductorQuantizer | 20.2 / 19.3 | 20.3 / 19.3 | 38.6 / 37.8 |
| ONNX Runtime QDQ (min-max; percentile, entropy: same) | fails to run | 20.0 / 19.6 | 34.6 / 33.1 |
| OpenVINO NNCF, MIXED preset | 30.8 / 30.5 | 38.4 / 37.4 | 39.8 / 38.6 |

The norms stay float32 in every row (quantizing the tensors that feed their
statistics, as NNCF's default does, costs 7.6 dB; NNCF's default symmetric
activations give 12 dB). On AVX2 the int8 kernels multiply u8 by s8 into
saturating 16-bit pairs: the full-range RGB input of the first 7x7
convolution loses 18 dB in PT2E and ONNX Runtime (ONNX Runtime's 7-bit
`reduce_range` gets 33 dB back), and only 1.4 dB in OpenVINO.

Decision: serving's int8 path is PT2E (`acceleration.py`'s
`cpu-compiled-int8`: X86InductorQuantizer on every convolution but the
first, calibrated on the photos mirrored, compiled into the same
AOTInductor graph as the float32 path and cached beside it). OpenVINO is
1.2-1.6x faster still and needs no C++ compiler, but importing it costs
about 160 MB per process — and TorchServe's base handler imports
`openvino.torch` in every worker whenever it is installed — against a
600 MB budget for all eight styles; NNCF brings scikit-learn and SciPy.
PT2E needs nothing at run time beyond torch (torchao, 3.4 MB, only where
the graph is built) and reuses the compile, cache and check machinery every
other path already has. ONNX Runtime has the fastest int8 kernel but fails
the check even with the first convolution in float. Not measured: a VNNI or
AMX CPU (issue 17's Xeon), where int8 should gain more.

Models: the bundled styles' generator (selfie2anime's trained weights from
`model_store/`, U-GAT-IT light, 32 channels, 96 px) and the paper's light
generator at 256 px, 64 channels (`latency.light_generator`, random weights:
its speed is that of trained ones, its PSNR is not that of trained ones).

Each engine quantizes statically, calibrated on the photos every archive
ships (`photos.py`), and is checked on the same photos exactly as serving
checks a path (`acceleration.photo_quality`, floors 35 dB whole / 30 dB
faces). The norms (IN, AdaILN, ILN) stay float32 everywhere; what is int8 is
said per row. Per thread count: build and check each path, then time them in
turns (median of --runs, one image at a time), with the ratio to eager float32
and the share of this CPU's measured peak of the path's number format
(float32: `latency.peak_gflops`; int8: the best any engine here reaches on
the same large 3x3 convolution).

The layer sweep (bundled model, first thread count) shows what each choice
of int8 layers does to PSNR.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import io
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import latency  # noqa: E402  (puts the repository and the archive payload on sys.path)

import acceleration  # noqa: E402
from training.hardware import cpu_flags, cpu_name  # noqa: E402
from training.showcase import load_generator  # noqa: E402
from training.summary import gflops_per_image  # noqa: E402

ROOT = latency.ROOT
BUNDLED = ROOT / "model_store" / "selfie2anime.mar"
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
PAUSE = 0.05  # seconds between timed calls, so one runtime's spinning threads do not slow the next


CONV_OPS = {"Convolution", "Pad", "Parameter", "Result", "Constant"}  # what NNCF may touch


class ImageOnly(nn.Module):
    """The generator's picture alone (it also returns CAM logits and a heatmap): what gets exported."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)[0]
Run = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """Which layers go int8."""

    label: str
    convs_only: bool  # else the engine's default choice of ops
    float_first: bool  # the 7x7 input convolution stays float32


DEFAULT = Recipe("engine's default ops", False, False)
CONVS = Recipe("convs", True, False)
NO_FIRST = Recipe("convs but the first", True, True)


# --- engines ----------------------------------------------------------------------


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Engines log progress bars and advice at WARNING level: keep the table readable."""
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def first_conv(model: nn.Module) -> str:
    """Qualified name of the first Conv2d (the input layer of a U-GAT-IT generator)."""
    return next(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d))


def eager(model: nn.Module, calib: torch.Tensor, threads: int, recipe: Recipe | None) -> Run:
    """Plain float32: the baseline."""
    return model


def pt2e_int8(model: nn.Module, calib: torch.Tensor, threads: int, recipe: Recipe | None) -> Run:
    """torchao PT2E: X86InductorQuantizer (default: conv, linear and their fused adds; histogram
    observers for activations, per-channel weights), then Inductor with freezing."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    config = x86.get_default_x86_inductor_quantization_config()
    quantizer = x86.X86InductorQuantizer()
    if recipe and recipe.convs_only:
        quantizer.set_module_type_qconfig(nn.Conv2d, config)
    else:
        quantizer.set_global(config)
    if recipe and recipe.float_first:
        quantizer.set_module_name_qconfig(first_conv(model), None)
    with quiet():
        prepared = prepare_pt2e(torch.export.export(model, (calib[:1],)).module(), quantizer)
        for i in range(len(calib)):
            prepared(calib[i : i + 1])
        converted = convert_pt2e(prepared)
        torch._dynamo.reset()
        compiled = torch.compile(converted)
        with torch._inductor.config.patch(freezing=True):  # Inductor bakes the thread count in: build per count
            compiled(calib[:1])
    return compiled


def onnx_file(model: nn.Module, calib: torch.Tensor, folder: Path) -> Path:
    """The model exported to ONNX (opset 18) and pre-processed for quantization (shapes, folding)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw, out = folder / "raw.onnx", folder / "model.onnx"
    with quiet(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (calib[:1],), raw, dynamo=True, input_names=["x"], output_names=["y"])
        quant_pre_process(str(raw), str(out))
    return out


def first_onnx_conv(path: Path) -> str:
    """Name of the first Conv node in the (topologically sorted) ONNX graph."""
    import onnx

    return next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")


def _ort_run(path: Path, threads: int) -> Run:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # shape-merge warnings of the QDQ graph; errors still raise
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # cores are shared with requests
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def ort_fp32(model: nn.Module, calib: torch.Tensor, threads: int, recipe: Recipe | None) -> Run:
    """ONNX Runtime, float32 (the runtime's own speed, without int8)."""
    with tempfile.TemporaryDirectory() as tmp:
        return _ort_run(onnx_file(model, calib, Path(tmp)), threads)


def ort_int8(model: nn.Module, calib: torch.Tensor, threads: int, recipe: Recipe | None) -> Run:
    """ONNX Runtime static int8: QDQ (default: every op type it quantizes), per-channel s8 weights,
    u8 activations, min-max calibration."""
    import onnxruntime as ort
    from onnxruntime import quantization as oq

    ort.set_default_logger_severity(3)
    with tempfile.TemporaryDirectory() as tmp:
        source, quantized = onnx_file(model, calib, Path(tmp)), Path(tmp) / "int8.onnx"
        feeds = iter([{"x": calib[i : i + 1].numpy()} for i in range(len(calib))])
        reader = type("Photos", (oq.CalibrationDataReader,), {"get_next": lambda self: next(feeds, None)})()
        with quiet():
            oq.quantize_static(str(source), str(quantized), reader, quant_format=oq.QuantFormat.QDQ,
                               op_types_to_quantize=["Conv"] if recipe and recipe.convs_only else None,
                               per_channel=True,
                               activation_type=oq.QuantType.QUInt8, weight_type=oq.QuantType.QInt8,
                               nodes_to_exclude=[first_onnx_conv(source)] if recipe and recipe.float_first else [])
        return _ort_run(quantized, threads)


def _ov_convert(generator: nn.Module, example: torch.Tensor):  # -> openvino.Model
    """The generator as a float32 OpenVINO model, through torch.export (not the deprecated jit trace)."""
    import openvino as ov

    with torch.no_grad():
        return ov.convert_model(torch.export.export(ImageOnly(generator.eval()), (example,)))


def _ov_run(ov_model, threads: int) -> Run:
    """One image at a time on `threads`, float32 for the layers left in float."""
    import openvino as ov

    compiled = ov.Core().compile_model(ov_model, "CPU", {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",  # one request, all threads on it (THROUGHPUT would split them)
        "INFERENCE_PRECISION_HINT": "f32",  # else OpenVINO picks bf16 for the float layers where the CPU has it
    })
    request = compiled.create_infer_request()
    return lambda x: torch.cat([torch.from_numpy(request.infer([x[i : i + 1].numpy()])[0].copy())
                                for i in range(x.shape[0])])


def ov_fp32(model: nn.Module, calib: torch.Tensor, threads: int, recipe: Recipe | None) -> Run:
    """OpenVINO, float32 (the runtime's own speed, without int8)."""
    return _ov_run(_ov_convert(model.generator, calib[:1]), threads)


def ov_int8(model: nn.Module, calib: torch.Tensor, threads: int, recipe: Recipe | None) -> Run:
    """OpenVINO int8 by NNCF, MIXED preset (symmetric int8 weights per channel, asymmetric uint8
    activations); `recipe` limits it to convolutions and keeps the first in float."""
    import nncf

    float_model = _ov_convert(model.generator, calib[:1])
    ops = float_model.get_ordered_ops()
    first = next(op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution")
    others = sorted({op.get_type_name() for op in ops} - CONV_OPS)
    ignored = nncf.IgnoredScope(types=others if recipe and recipe.convs_only else [],
                                names=[first] if recipe and recipe.float_first else [])
    data = nncf.Dataset([calib[i : i + 1].numpy() for i in range(len(calib))])
    with quiet():
        quantized = nncf.quantize(float_model, data, preset=nncf.QuantizationPreset.MIXED, subset_size=len(calib),
                                  ignored_scope=ignored)
    return _ov_run(quantized, threads)


Builder = Callable[[nn.Module, torch.Tensor, int, "Recipe | None"], Run]
ENGINES: dict[str, tuple[Builder, tuple[str, ...]]] = {  # name -> (builder, packages it needs)
    "eager-fp32": (eager, ("torch",)),
    "pt2e-int8": (pt2e_int8, ("torchao",)),
    "ort-fp32": (ort_fp32, ("onnxruntime", "onnxscript")),
    "ort-int8": (ort_int8, ("onnxruntime", "onnxscript")),
    "openvino-fp32": (ov_fp32, ("openvino",)),
    "openvino-int8": (ov_int8, ("openvino", "nncf")),
}


def available(packages: tuple[str, ...]) -> str | None:
    """None where all `packages` are installed, else why the engine is skipped."""
    for package in packages:
        try:
            importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return f"{package} is not installed (.venv/bin/python -m pip install {package})"
    return None


# --- measuring ----------------------------------------------------------------------


@dataclass
class Row:
    """One path at one thread count."""

    name: str
    layers: str
    prepare_s: float
    whole_db: float
    face_db: float
    times: list[float]

    @property
    def ms(self) -> float:
        return statistics.median(self.times) * 1000


def each(run: Run, batch: torch.Tensor) -> torch.Tensor:
    """`run` on one image at a time (how the handler draws)."""
    return torch.cat([run(batch[i : i + 1]).float() for i in range(len(batch))])


@torch.no_grad()
def build_and_check(name: str, recipe: Recipe | None, model: nn.Module, photos: torch.Tensor,
                    reference: torch.Tensor, threads: int) -> tuple[Run, Row] | None:
    """Build one path (timed), check it on the photos; None (with the reason printed) if it cannot run here."""
    build, packages = ENGINES[name]
    if why := available(packages):
        print(f"  {name}: skipped, {why}")
        return None
    start = time.perf_counter()
    try:
        run = build(model, photos, threads, recipe)
        run(photos[:1])  # first call: kernels picked, graphs compiled
    except Exception as exc:  # an engine that cannot run here is reported, not fatal
        print(f"  {name}: failed, {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return None
    prepare = time.perf_counter() - start
    whole, face = acceleration.photo_quality(each(run, photos), reference)
    return run, Row(name, recipe.label if recipe else "none (float32)", prepare, whole, face, [])


@torch.no_grad()
def time_in_turns(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call, the calls taking turns so that a busy machine's drifting load falls on all alike."""
    times: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            times[key].append(latency._seconds(call))
            time.sleep(PAUSE)
    return times


class PeakConv(nn.Module):
    """`latency.PEAK_CONV`'s large 3x3 convolution, returning a tuple as a generator does."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(latency.PEAK_CONV[0], latency.PEAK_CONV[0], 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.conv(x),)


PEAK_GOP = 2 * latency.PEAK_CONV[0] ** 2 * 9 * latency.PEAK_CONV[1] ** 2 / 1e9  # one image of it


@torch.no_grad()
def int8_peak_calls(threads: int) -> dict[str, Callable[[], object]]:
    """Per int8 engine: one image through the peak convolution (calibrated on the batch), as a call to time."""
    c, side, n = latency.PEAK_CONV
    model, x = ImageOnly(PeakConv()).eval(), torch.randn(n, c, side, side)
    calls: dict[str, Callable[[], object]] = {}
    for name in ("pt2e-int8", "ort-int8", "openvino-int8"):
        build, packages = ENGINES[name]
        if available(packages):
            continue
        try:
            run = build(model, x, threads, CONVS)
            run(x[:1])
        except Exception as exc:  # reported, not fatal
            print(f"  int8 peak via {name} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        calls[name] = functools.partial(run, x[:1])
    return calls


PATHS = [("eager-fp32", None), ("pt2e-int8", NO_FIRST), ("ort-fp32", None), ("ort-int8", NO_FIRST),
         ("openvino-fp32", None), ("openvino-int8", CONVS), ("openvino-int8", NO_FIRST)]


def bench_model(label: str, model: nn.Module, size: int, threads: int, repeats: int,
                int8_peaks: dict[str, Callable[[], object]]) -> list[Row]:
    """Every path on one model at one thread count: built, checked, then timed in turns with the
    peak convolutions (float32 as `latency.peak_gflops` runs it; each int8 engine's), so the shares
    of peak come from the same moments of a busy machine."""
    photos = acceleration.photo_batch(size)
    with torch.no_grad():
        reference = each(model, photos)
    built: dict[str, Run] = {}
    rows: list[Row] = []
    for name, recipe in PATHS:
        result = build_and_check(name, recipe, model, photos, reference, threads)
        if result:
            built[f"{name} {recipe}"], row = result
            rows.append(row)
    fp32_rates: list[float] = []
    calls = {key: functools.partial(run, photos[:1]) for key, run in built.items()}
    calls |= {f"peak {name}": call for name, call in int8_peaks.items()}
    calls["peak fp32"] = lambda: fp32_rates.append(latency.peak_gflops(torch.float32, 1))
    times = time_in_turns(calls, repeats)
    for row, key in zip(rows, built):
        row.times = times[key]
    int8_rates = {name: PEAK_GOP / min(times[f"peak {name}"]) for name in int8_peaks}
    best = max(int8_rates, key=int8_rates.__getitem__, default="none")
    peaks = {"fp32": max(fp32_rates), "int8": int8_rates.get(best, math.nan)}
    print(f"\npeaks in the same turns: fp32 {peaks['fp32']:.0f} GFLOP/s (torch), int8 "
          + ", ".join(f"{n} {r:.0f}" for n, r in int8_rates.items()) + f" GOP/s (3x3 convolution {latency.PEAK_CONV})")
    print_rows(f"{label}, {threads} thread{'s' * (threads > 1)}", rows, gflops_per_image(model.generator, size), peaks)
    return rows


def print_rows(title: str, rows: list[Row], gflop: float, peaks: dict[str, float]) -> None:
    """One table: ms/image, ratio to eager float32, share of peak, PSNR, prepare time, verdict."""
    print(f"\n{title} ({gflop:.2f} GFLOP/image)")
    print(f"| path | int8 layers | ms/image | vs eager fp32 | of {'/'.join(peaks)} peak | PSNR dB | "
          f"worst face dB | prepare s | check |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = rows[0].ms
    for r in rows:
        peak = peaks["int8" if "int8" in r.name else "fp32"]
        share = gflop / (r.ms / 1000) / peak
        verdict = "pass" if acceleration.passes(r.whole_db, r.face_db) else "FAIL"
        print(f"| {r.name} | {r.layers} | {r.ms:.1f} | {base / r.ms:.2f}x | {share:.0%} | {r.whole_db:.1f} | "
              f"{r.face_db:.1f} | {r.prepare_s:.1f} | {verdict} |")


def sweep(model: nn.Module, size: int, threads: int) -> None:
    """What the choice of int8 layers does to PSNR, per int8 engine (bundled model)."""
    photos = acceleration.photo_batch(size)
    with torch.no_grad():
        reference = each(model, photos)
    print(f"\nlayer sweep on the bundled model ({threads} thread{'s' * (threads > 1)}): PSNR dB whole / worst face")
    for name in ("pt2e-int8", "ort-int8", "openvino-int8"):
        for recipe in (DEFAULT, CONVS, NO_FIRST):
            result = build_and_check(name, recipe, model, photos, reference, threads)
            if result:
                row = result[1]
                print(f"  {name:14} {recipe.label:22} {row.whole_db:5.1f} / {row.face_db:5.1f}")


def describe_cpu() -> None:
    """The CPU, the flags that decide the int8 kernels, and the versions."""
    flags = cpu_flags()
    print(f"CPU {cpu_name()}, {os.cpu_count()} cores; flags: "
          + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS))
    versions = []
    for package in ("torch", "torchao", "onnxruntime", "onnx", "onnxscript", "openvino", "nncf"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{package} {importlib.metadata.version(package)}")
    print(", ".join(versions) + f"; torch CPU capability {torch.backends.cpu.get_cpu_capability()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=5, help="timed calls per path (median)")
    parser.add_argument("--models", nargs="+", choices=("bundled", "paper"), default=["bundled", "paper"])
    parser.add_argument("--no-sweep", action="store_true", help="skip the layer sweep")
    args = parser.parse_args()
    describe_cpu()
    bundled, config = load_generator(BUNDLED)
    models = {"bundled": (f"{BUNDLED.stem} (trained, ch {bundled.ngf}, {config['img_size']} px)",
                          ImageOnly(bundled).eval(), int(config["img_size"])),
              "paper": (f"paper's light generator (random weights, ch 64, {latency.SIZE} px)",
                        ImageOnly(latency.light_generator()).eval(), latency.SIZE)}
    for threads in args.threads:
        torch.set_num_threads(threads)
        int8_peaks = int8_peak_calls(threads)
        for key in args.models:
            bench_model(*models[key], threads, args.runs, int8_peaks)
        if not args.no_sweep and threads == args.threads[0]:
            sweep(models["bundled"][1], models["bundled"][2], threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
