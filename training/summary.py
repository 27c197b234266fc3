"""`python -m training summary`: parameters and GFLOPs per image of each network."""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from styles.payload.networks import Discriminator, ResnetGenerator


def count_parameters(module: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in module.parameters())


def gflops_per_image(module: nn.Module, img_size: int) -> float:
    """FLOPs of one forward pass (2 per multiply-add), counted by PyTorch's flop counter."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(torch.zeros(1, 3, img_size, img_size))
    return counter.get_total_flops() / 1e9


def summarize(light: bool, img_size: int, ch: int, n_res: int, n_dis_global: int,
              n_dis_local: int) -> list[tuple[str, int, float]]:
    """(network, parameters, GFLOPs/image) for the generator and both discriminators."""
    nets = {
        "generator (each direction)": ResnetGenerator(ngf=ch, n_blocks=n_res, img_size=img_size, light=light),
        f"global discriminator ({n_dis_global} layers)": Discriminator(ndf=ch, n_layers=n_dis_global),
        f"local discriminator ({n_dis_local} layers)": Discriminator(ndf=ch, n_layers=n_dis_local),
    }
    return [(name, count_parameters(m), gflops_per_image(m.eval(), img_size)) for name, m in nets.items()]


def run(args: argparse.Namespace) -> int:
    """Print the table."""
    rows = summarize(args.light, args.img_size, args.ch, args.n_res, args.n_dis_global, args.n_dis_local)
    kind = "light" if args.light else "full"
    print(f"U-GAT-IT {kind}, img_size {args.img_size}, ch {args.ch}, n_res {args.n_res}")
    print(f"{'network':<36} {'parameters':>14} {'GFLOPs/image':>14}")
    for name, params, gflops in rows:
        print(f"{name:<36} {params:>14,} {gflops:>14.2f}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `summary`."""
    p = sub.add_parser("summary", help="parameter counts and GFLOPs per image")
    p.add_argument("--light", action="store_true")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--ch", type=int, default=64)
    p.add_argument("--n-res", type=int, default=4)
    p.add_argument("--n-dis-global", type=int, default=7)
    p.add_argument("--n-dis-local", type=int, default=5)
    p.set_defaults(func=run)
