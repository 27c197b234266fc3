"""Prototype of the int8 path for x86 CPUs: OpenVINO, quantized by NNCF on the archive's photos.

Chosen by `bench/int8.py` (see its docstring for the measurements). To join
`acceleration.candidates` it needs: `openvino` at run time and `nncf` where
the path is built; the build (conversion, calibration: 10-50 s on 2 busy
cores) in the child process that compiles today (`convert` runs
torch.export); the quantized model saved with `save` into the compile cache and
read back with `load` on the next start (about a second); the photo check
as for every path. The int8 kernels are oneDNN's, which use VNNI where the
CPU has it (AVX512-VNNI, AVX-VNNI) and AVX2 otherwise; only AVX2 has been
measured (OpenVINO lists INT8 among its capabilities there).

What goes int8: the inputs and weights of every convolution but the first
(7x7 on the RGB input: 2-3 % of the FLOPs; on AVX2 the other engines lose
18 dB on it, OpenVINO 1.4 dB); the norms, residual adds, CAM products, MLP and upsampling stay
float32. NNCF's own choice also quantizes the tensors feeding the norms'
statistics and drops the bundled style to 30 dB; its default symmetric
activations (PERFORMANCE preset) to 12 dB. MIXED: symmetric int8 weights per
channel, asymmetric uint8 activations.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import torch
from torch import nn

Run = Callable[[torch.Tensor], torch.Tensor]
CONV_OPS = {"Convolution", "Pad", "Parameter", "Result", "Constant"}  # what the quantizer may touch


class ImageOnly(nn.Module):
    """The generator's picture alone (it also returns CAM logits and a heatmap): what gets exported."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)[0]


def convert(generator: nn.Module, example: torch.Tensor):  # -> openvino.Model
    """The generator as a float32 OpenVINO model taking inputs shaped like `example`, (1, 3, S, S).

    Through torch.export (OpenVINO would otherwise trace with the deprecated torch.jit.trace),
    which swaps process-wide state while it runs: in serving, convert in the compiling child.
    """
    import openvino as ov

    with torch.no_grad():
        return ov.convert_model(torch.export.export(ImageOnly(generator.eval()), (example,)))


def quantize(ov_model, photos: torch.Tensor, convs_only: bool = True, float_first: bool = True):
    """`ov_model` with int8 convolutions, calibrated on `photos` (N, 3, S, S) in [-1, 1].

    `convs_only=False` lets NNCF choose the ops; `float_first=False` quantizes the input layer too.
    """
    import nncf

    ops = ov_model.get_ordered_ops()
    first = next(op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution")
    others = sorted({op.get_type_name() for op in ops} - CONV_OPS)
    ignored = nncf.IgnoredScope(types=others if convs_only else [], names=[first] if float_first else [])
    data = nncf.Dataset([photos[i : i + 1].numpy() for i in range(len(photos))])
    return nncf.quantize(ov_model, data, preset=nncf.QuantizationPreset.MIXED, subset_size=len(photos),
                         ignored_scope=ignored)


def runner(ov_model, threads: int | None = None) -> Run:
    """(N, 3, S, S) -> (N, 3, S, S) float32, one image at a time, on `threads` (default: torch's count)."""
    import openvino as ov

    compiled = ov.Core().compile_model(ov_model, "CPU", {
        "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",  # one request, all threads on it (THROUGHPUT would split them)
        "INFERENCE_PRECISION_HINT": "f32",  # else OpenVINO picks bf16 for the float layers where the CPU has it
    })
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        out = [torch.from_numpy(request.infer([x[i : i + 1].numpy()])[0].copy()) for i in range(x.shape[0])]
        return torch.cat(out)

    return run


def save(ov_model, path: pathlib.Path) -> None:
    """`path` (.xml, weights beside it as .bin), written whole before readers can see it."""
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.xml")
    ov.save_model(ov_model, partial, compress_to_fp16=False)
    partial.with_suffix(".bin").replace(path.with_suffix(".bin"))
    partial.replace(path)


def load(path: pathlib.Path):  # -> openvino.Model
    """A model `save` wrote."""
    import openvino as ov

    return ov.Core().read_model(path)


def build(generator: nn.Module, photos: torch.Tensor, threads: int | None = None) -> Run:
    """The whole path: convert, quantize on `photos` (the archive's, at the draw size), compile."""
    return runner(quantize(convert(generator, photos[:1]), photos), threads)
