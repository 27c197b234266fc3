"""`python -m training judge --data DATASET_DIR`: train a pair's domain judge (`training.judge_net`).

Once per pair, from its train split only; the test split is kept for the
judge's own accuracy (written into its file) and for the styles' evaluation.
Seeded and single-process, so the same data, seed and thread count give the
same file. Minutes on 2 cores: the pictures are decoded once, small.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.data import list_images, open_rgb
from training.judge_net import JUDGES, SIZE, WIDTHS, JudgeNet, centre_square, judge_path, save_judge, to_tensor

log = logging.getLogger(__name__)

MARGIN = 8  # pictures are kept at SIZE + MARGIN and cropped at random: a little shift invariance
DEFAULT_STEPS, DEFAULT_BATCH, DEFAULT_LR = 600, 32, 2e-3


def load_domain(folder: Path, size: int) -> torch.Tensor:
    """Every picture of a folder as its centre square at `size`, uint8 (N, 3, size, size)."""
    pictures = [np.asarray(centre_square(open_rgb(p), size)) for p in list_images(folder)]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()


def batch(
    domains: tuple[torch.Tensor, torch.Tensor], per_domain: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """As many pictures of A as of B (the splits are unbalanced), randomly cropped and flipped."""
    xs, ys = [], []
    for label, pics in enumerate(domains):
        for i in rng.integers(0, len(pics), per_domain):
            top, left = rng.integers(0, MARGIN + 1, 2)
            x = pics[i, :, top : top + SIZE, left : left + SIZE]
            xs.append(x.flip(2) if rng.random() < 0.5 else x)
            ys.append(label)
    return torch.stack(xs).float() / 127.5 - 1.0, torch.tensor(ys, dtype=torch.float32)


@torch.inference_mode()
def accuracy(net: JudgeNet, data: Path) -> tuple[float, int]:
    """Share of testA judged A and testB judged B (pictures as the evaluator sees them), and their count."""
    net.eval()
    right, seen = 0, 0
    for label, split in enumerate(("testA", "testB")):
        pictures = [to_tensor(centre_square(open_rgb(p))) for p in list_images(data / split)]
        for i in range(0, len(pictures), 64):
            logits = net(torch.stack(pictures[i : i + 64]))
            right += int(((logits > 0).float() == label).sum())
            seen += len(logits)
    return right / seen, seen


def train_judge(data: Path, *, steps: int, per_domain: int, seed: int, lr: float) -> tuple[JudgeNet, dict]:
    """A trained judge and its meta: what it was trained on, how, and its test accuracy."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    domains = (load_domain(data / "trainA", SIZE + MARGIN), load_domain(data / "trainB", SIZE + MARGIN))
    net = JudgeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    for step in range(steps):
        for group in opt.param_groups:  # cosine decay to zero
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        net.train()
        x, y = batch(domains, per_domain, rng)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log.info("step %d/%d loss %.4f", step, steps, loss.item())
    acc, tested = accuracy(net, data)
    meta = {
        "pair": data.name, "widths": list(WIDTHS), "size": SIZE, "seed": seed, "steps": steps,
        "batch": 2 * per_domain, "lr": lr, "threads": torch.get_num_threads(),
        "train_pictures": [len(d) for d in domains], "test_accuracy": round(acc, 4), "test_pictures": tested,
        "minutes": round((time.monotonic() - started) / 60, 1), "date": date.today().isoformat(),
    }
    return net.eval(), meta


def run(args: argparse.Namespace) -> int:
    """Train, save, and say how accurate the judge is on the pair's test split."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    net, meta = train_judge(args.data, steps=args.steps, per_domain=args.batch // 2, seed=args.seed, lr=args.lr)
    path = save_judge(net, meta, judge_path(args.data.name, args.out))
    print(f"{meta['pair']} judge: test accuracy {meta['test_accuracy']:.3f} on {meta['test_pictures']} pictures, "
          f"{path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `judge`."""
    p = sub.add_parser("judge", help="train a pair's domain judge (for `evaluate`)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the pair's dataset: DIR/{trainA,trainB,testA,testB}")
    p.add_argument("--out", type=Path, default=JUDGES, help="folder for <pair>.pt (default %(default)s)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="pictures per step, half of each domain")
    p.add_argument("--lr", type=float, default=DEFAULT_LR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the file records it: results may "
                                                           "differ in the last bits with another count)")
    p.set_defaults(func=run)

