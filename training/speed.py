"""Training speed on this machine: measure, and settle `auto` options by what measured faster.

CPUs differ in what pays off: bf16 autocast is faster only where the CPU has
bf16 instructions (AVX512-BF16, AMX), and ~1.45x *slower* on an AVX-512 Xeon
without AMX; channels-last helps some convolution kernels and not others. So a
CPU run with `--precision auto` or `--memory-format auto` times a few real
training steps of each candidate at start (a few seconds) and keeps the fastest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from itertools import product

import torch

from training.distributed import Runtime
from training.hardware import cpu_has_bf16, cpu_name
from training.options import TrainOptions
from training.trainer import Trainer

log = logging.getLogger(__name__)


def images_per_second(opts: TrainOptions, runtime: Runtime, steps: int = 3, warmup: int = 1) -> float:
    """Training images per second of `opts` on random batches (an A and a B image count as one).

    Builds its own trainer (which reseeds torch), so build the real one afterwards.
    """
    trainer = Trainer(opts, runtime)
    shape = (opts.batch_size, 3, opts.img_size, opts.img_size)
    real_A, real_B = torch.rand(shape) * 2 - 1, torch.rand(shape) * 2 - 1
    for _ in range(warmup):
        trainer.train_step(real_A, real_B)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(real_A, real_B)
    return opts.batch_size * steps / (time.perf_counter() - start)


def cpu_candidates(opts: TrainOptions) -> list[TrainOptions]:
    """Concrete (precision, memory format) settings to try for the `auto` fields of `opts`."""
    precisions = [opts.precision] if opts.precision != "auto" else (
        ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    )
    formats = [opts.memory_format] if opts.memory_format != "auto" else ["contiguous", "channels_last"]
    return [replace(opts, precision=p, memory_format=f) for p, f in product(precisions, formats)]


def settle_auto(opts: TrainOptions, runtime: Runtime, steps: int = 2) -> TrainOptions:
    """Options with `auto` precision and memory format replaced by this machine's fastest.

    On CUDA the choice is fixed (bf16 or fp16 autocast, channels-last) and nothing is timed.
    """
    if runtime.device.type == "cuda":
        return opts
    candidates = cpu_candidates(opts)
    if len(candidates) == 1 or runtime.distributed:
        # Ranks timing separately could choose differently; DDP replicas must compute alike.
        return candidates[0]
    timed = []
    for candidate in candidates:
        rate = images_per_second(candidate, runtime, steps=steps)
        log.info("speed check: %s, %s: %.2f images/s", candidate.precision, candidate.memory_format, rate)
        timed.append((rate, candidate))
    rate, best = max(timed, key=lambda t: t[0])
    log.info("training with %s, %s (%.2f images/s on %s, %d threads)",
             best.precision, best.memory_format, rate, cpu_name(), torch.get_num_threads())
    return best
