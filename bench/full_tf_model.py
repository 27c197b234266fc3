"""The authors' full model (tf_compat, 256 px) on the CPU: memory and time per picture by MLP weight format.

    .venv/bin/python bench/full_tf_model.py [--threads 2] [--runs 3]

279M parameters per direction, 268M of them in the MLP's first layer (a
1 x 1M by 1M x 256 product per picture: memory-bound). Each format runs in a
fresh process so its resident memory is its own: fp32 (what the handler
builds today), that layer's weight in bf16, and int8 per output channel
(torch's `_weight_int8pack_mm`). Random weights: times and memory, and the
output's difference from fp32, not picture quality.

Measured 2026-12-06 on an AMD EPYC (AVX-512 with bf16, no AMX), 2 threads,
torch 2.13.0, under a load average of 15-18 (a training run and other
developers on the 2 cores): the whole-picture times swing with the load and
are dominated by the convolutions (105 GFLOP); read the layer's own time and
the memory.

| MLP first layer | ms/picture | that layer ms | RSS GB after load | peak RSS GB | max abs diff |
|---|---|---|---|---|---|
| fp32 | 29232 | 473 | 1.33 | 1.46 | 0 |
| bf16 | 19558 | 598 | 0.87 | 1.87 | 6.9e-04 |
| int8 | 21560 | 186 | 0.62 | 3.37 | 1.2e-03 |

(peak RSS includes building the fp32 model first and converting it.)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import psutil
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, ".")
from styles.payload.networks import ResnetGenerator  # noqa: E402


class LowBitLinear(nn.Module):
    """FC.0 with its weight kept in bf16 or int8 (per output channel); activations in float32 or bf16."""

    def __init__(self, fc: nn.Linear, fmt: str) -> None:
        super().__init__()
        self.fmt, w = fmt, fc.weight.detach()
        self.bias = fc.bias.detach()
        if fmt == "bf16":
            self.weight = w.bfloat16()
        else:
            scale = w.abs().amax(dim=1) / 127
            self.weight = torch.round(w / scale[:, None]).to(torch.int8)
            self.scale = scale.bfloat16()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt == "bf16":
            y = F.linear(x.bfloat16(), self.weight).float()
        else:
            y = torch._weight_int8pack_mm(x.bfloat16(), self.weight, self.scale).float()
        return y + self.bias


def one(fmt: str, threads: int, runs: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    g = ResnetGenerator(img_size=256, tf_compat=True).eval()
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.inference_mode():
        ref = g(x)[0] if fmt != "fp32" else None
        if fmt != "fp32":
            g.FC[0] = LowBitLinear(g.FC[0], fmt)
        import gc
        gc.collect()
        rss_loaded = psutil.Process().memory_info().rss
        g(x)  # warm-up
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            y = g(x)[0]
            times.append(time.perf_counter() - t)
        fc_in = torch.rand(1, g.FC[0].weight.shape[1])
        t = time.perf_counter()
        for _ in range(5):
            g.FC[0](fc_in)
        fc_ms = (time.perf_counter() - t) / 5 * 1000
    return {"format": fmt, "ms": statistics.median(times) * 1000, "fc0_ms": fc_ms,
            "rss_gb": rss_loaded / 2**30, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "max_abs_diff": float((y - ref).abs().max()) if ref is not None else 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.threads, a.runs)))
        return
    print(f"{torch.__version__}, {a.threads} threads; peak includes the fp32 model built first")
    print("| MLP first layer | ms/picture | that layer ms | RSS GB after load | peak RSS GB | max abs diff |")
    print("|---|---|---|---|---|---|")
    for fmt in ("fp32", "bf16", "int8"):
        out = subprocess.run([sys.executable, __file__, "--one", fmt, "--threads", str(a.threads), "--runs",
                              str(a.runs)], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {fmt} | {r['ms']:.0f} | {r['fc0_ms']:.1f} | {r['rss_gb']:.2f} | {r['peak_rss_gb']:.2f} "
              f"| {r['max_abs_diff']:.1e} |")


if __name__ == "__main__":
    main()
