"""Training iterations per second for a few U-GAT-IT configurations on this machine.

Run on purpose (`python bench/train_speed.py [--threads N] [--steps S]`); it
prints one line per configuration. Used to choose the bundled styles' settings.
"""

from __future__ import annotations

import argparse
import time

import torch

from training.distributed import Runtime
from training.options import TrainOptions
from training.trainer import Trainer

CONFIGS = [
    # img_size, ch, n_res, n_dis_global, n_dis_local, precision
    (128, 64, 4, 7, 5, "fp32"),
    (128, 32, 4, 7, 5, "fp32"),
    (128, 32, 4, 6, 4, "fp32"),
    (128, 32, 4, 6, 4, "bf16"),
    (96, 32, 4, 6, 4, "fp32"),
    (96, 48, 4, 6, 4, "fp32"),
]


def measure(img: int, ch: int, n_res: int, ng: int, nl: int, precision: str, steps: int) -> float:
    """Seconds per iteration (batch 1) after two warm-up steps."""
    opts = TrainOptions(name="bench", data="", img_size=img, ch=ch, n_res=n_res, light=True,
                        n_dis_global=ng, n_dis_local=nl, precision=precision, iters=10**6)
    trainer = Trainer(opts, Runtime(device=torch.device("cpu")))
    a, b = torch.rand(1, 3, img, img) * 2 - 1, torch.rand(1, 3, img, img) * 2 - 1
    for _ in range(2):
        trainer.train_step(a, b)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(a, b)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; light generator, batch 1")
    print(f"{'img':>4} {'ch':>3} {'n_res':>5} {'D glob/loc':>10} {'precision':>9} {'s/it':>7} {'it/s':>6}")
    for cfg in CONFIGS:
        s = measure(*cfg, steps=args.steps)
        img, ch, n_res, ng, nl, prec = cfg
        print(f"{img:>4} {ch:>3} {n_res:>5} {f'{ng}/{nl}':>10} {prec:>9} {s:>7.3f} {1 / s:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
