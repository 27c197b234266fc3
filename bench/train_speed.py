"""Training images per second on this machine: every setting the trainer can choose, in one run.

    .venv/bin/python bench/train_speed.py [--img-size 128] [--steps 3] [--quick]

Compares batch 1/2/4, contiguous vs channels-last, 1 vs 2 threads and float32
vs bf16 autocast (bf16 only timed where the CPU has bf16 instructions unless
--bf16 forces it). Each row is the light generator at
`--ch` channels with 6/4-layer discriminators on random batches, which train
exactly as fast as real images. The last column is the speed-up over the
configuration the bundled demo styles were trained with (batch 1, contiguous,
float32, 1 thread, same image size), measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from itertools import product
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a fresh clone

from training.distributed import Runtime  # noqa: E402
from training.options import TrainOptions  # noqa: E402
from training.hardware import cpu_has_bf16, cpu_name  # noqa: E402
from training.speed import images_per_second  # noqa: E402

CPU = Runtime(device=torch.device("cpu"))


def base_options(img_size: int, ch: int) -> TrainOptions:
    """The bundled styles' network shape (light, 4 blocks, discriminators 6/4) at this size."""
    return TrainOptions(name="bench", data="", img_size=img_size, ch=ch, n_res=4, light=True,
                        n_dis_global=6, n_dis_local=4, precision="fp32", memory_format="contiguous",
                        iters=10**6)


def grid(args: argparse.Namespace) -> list[tuple[int, TrainOptions]]:
    """(threads, options) rows: the demo's configuration first, then every combination."""
    base = base_options(args.img_size, args.ch)
    threads = [1, 2] if (os.cpu_count() or 1) >= 2 else [1]
    batches = [1, 4] if args.quick else [1, 2, 4]
    precisions = ["fp32", "bf16"] if (cpu_has_bf16() or args.bf16) else ["fp32"]
    formats = ["contiguous", "channels_last"]
    rows = [(1, base)]
    for t, b, p, f in product(threads, batches, precisions, formats):
        opts = replace(base, batch_size=b, precision=p, memory_format=f)
        if (t, opts) != rows[0]:
            rows.append((t, opts))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--ch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (after one warm-up)")
    parser.add_argument("--quick", action="store_true", help="batch 1 and 4 only, 1 timed step")
    parser.add_argument("--bf16", action="store_true", help="time bf16 even without bf16 instructions")
    args = parser.parse_args()
    steps = 1 if args.quick else args.steps
    print(f"CPU {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 instructions {'yes' if cpu_has_bf16() else 'no'}")
    print(f"light generator ch {args.ch}, discriminators 6/4, {args.img_size} px; random batches, "
          f"{steps} timed steps per row")
    print(f"{'threads':>7} {'batch':>5} {'precision':>9} {'layout':>13} "
          f"{'images/s':>8} {'s/iter':>7} {'vs demo':>7}")
    demo = None
    for threads, opts in grid(args):
        torch.set_num_threads(threads)
        rate = images_per_second(opts, CPU, steps=steps)
        demo = demo or rate
        print(f"{threads:>7} {opts.batch_size:>5} {opts.precision:>9} {opts.memory_format:>13} "
              f"{rate:>8.2f} {opts.batch_size / rate:>7.2f} {rate / demo:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
