"""`python -m training import-official`: the authors' PyTorch checkpoints as ours.

Their TensorFlow checkpoints (`--tf PREFIX`) go through `training.official_tf`.

The authors save `{'genA2B': state_dict, 'genB2A': ..., 'disGA': ..., 'disGB': ...,
'disLA': ..., 'disLB': ...}`. Our networks keep their module names, so the
weights load key for key; only the architecture must be read off the tensors.

Their `networks.py` changed twice in August 2019 in ways that change what the
same weights translate to: on 7 August the gamma/beta MLP gained its ReLUs
(their issue #11), and late in August (answered on the 27th, issues #29 and
#30) the AdaILN blocks gained their residual skip and AdaILN/ILN their per-axis
variance. We reproduce the code from late August on. Files from before 7 August
are told apart by their keys (the MLP's second layer is `FC.1`, not `FC.2`) and
refused; files from 7 August to late August have today's keys and shapes, so
nothing in them shows which code trained them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from training import official_tf
from training.checkpoint import NETWORKS, save_checkpoint
from styles.payload.networks import FC0_WEIGHTS, N_DOWNSAMPLING, Discriminator, ResnetGenerator
from training.options import TrainOptions

REPRODUCES = (
    "note: our networks reproduce the authors' networks.py from late August 2019 on (AdaILN "
    "residual skip, per-axis variance); a file trained by their code of 7 to late August 2019 "
    "has the same keys, cannot be told apart, and would translate differently"
)
PRE_RELU_MLP = (
    "{gen} was saved by the authors' code of before 7 August 2019 (no ReLUs in the gamma/beta "
    "MLP, so its second layer is FC.1), which also lacked the AdaILN residual skip and computed "
    "another AdaILN variance: our networks would translate it differently, so it is not imported"
)
NO_IMG_SIZE = (
    "a light generator does not record its image size: pass --img-size with the size it was "
    "trained at (the authors' default is 256)"
)


def check_code_version(nets: dict[str, dict[str, torch.Tensor]]) -> None:
    """Refuse generators whose keys show the pre-7-August code (see the module docstring)."""
    for gen in ("genA2B", "genB2A"):
        if "FC.1.weight" in nets[gen]:
            raise ValueError(PRE_RELU_MLP.format(gen=gen))


def generator_arch(state: dict[str, torch.Tensor], img_size: int | None) -> dict[str, Any]:
    """Read ngf, n_blocks, light and img_size off a generator state dict."""
    ngf = state["DownBlock.1.weight"].shape[0]
    n_blocks = len({k.split(".")[0] for k in state if k.startswith("UpBlock1_")})
    bottleneck = ngf * 2**N_DOWNSAMPLING
    fc_in = state["FC.0.weight"].shape[1]
    light = fc_in == bottleneck
    if not light:
        side = math.isqrt(fc_in // bottleneck)
        img_size = side * 2**N_DOWNSAMPLING
    elif img_size is None:
        raise ValueError(NO_IMG_SIZE)
    out_conv = state[f"UpBlock2.{5 * N_DOWNSAMPLING + 1}.weight"]  # after the up-sampling blocks
    return {"input_nc": state["DownBlock.1.weight"].shape[1], "output_nc": out_conv.shape[0],
            "ngf": ngf, "n_blocks": n_blocks, "img_size": img_size, "light": light}


def discriminator_layers(state: dict[str, torch.Tensor]) -> int:
    """n_layers of a discriminator: its `model` holds n_layers - 1 convolutions."""
    return sum(1 for k in state if k.startswith("model.") and k.endswith(".weight_orig")) + 1


def import_official(path: Path, out: Path, name: str, img_size: int | None = None,
                    upscalers: list[str] | None = None, fc0_weight: str | None = None) -> dict[str, Any]:
    """Convert and verify (strict loading into our networks); returns the written state, which records
    how `export` serves it (`official_tf.serving`)."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in NETWORKS if k not in raw]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not a U-GAT-IT checkpoint")
    nets = {k: raw[k] for k in NETWORKS}
    check_code_version(nets)
    arch = generator_arch(nets["genA2B"], img_size)
    n_global, n_local = discriminator_layers(nets["disGA"]), discriminator_layers(nets["disLA"])
    ndf = nets["disGA"]["model.1.weight_orig"].shape[0]
    for k in NETWORKS:
        net = ResnetGenerator(**arch) if k.startswith("gen") else Discriminator(
            ndf=ndf, n_layers=n_global if k.startswith("disG") else n_local)
        net.load_state_dict(nets[k], strict=True)
        nets[k] = net.state_dict()
    opts = TrainOptions(name=name, data="", img_size=arch["img_size"], ch=arch["ngf"],
                        n_res=arch["n_blocks"], light=arch["light"],
                        n_dis_global=n_global, n_dis_local=n_local)
    state = {"options": opts.to_dict(), "generator_arch": arch, "step": 0, "networks": nets,
             "imported_from": path.name, **official_tf.serving(name, arch, upscalers, fc0_weight)}
    save_checkpoint(out, state)
    return state


def run(args: argparse.Namespace) -> int:
    """Convert, then say what was found; a file we cannot convert ends in one line, not a traceback."""
    if args.tf is not None:
        return official_tf.run(args)
    if args.file is None or args.out is None:
        raise SystemExit("import-official: give the authors' .pt FILE and --out CKPT, or --tf PREFIX")
    try:
        state = import_official(args.file, args.out, args.name or args.file.stem, args.img_size, args.upscaler,
                                args.fc0_weight)
    except ValueError as e:
        raise SystemExit(f"import-official: {e}") from None
    a = state["generator_arch"]
    print(f"imported {args.file} -> {args.out}: {'light' if a['light'] else 'full'} generator, "
          f"img_size {a['img_size']}, ch {a['ngf']}, n_res {a['n_blocks']}")
    print(f"`export {args.out}` writes archives {official_tf.describe_serving(state)}")
    print(REPRODUCES)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `import-official`."""
    p = sub.add_parser("import-official", help="convert an authors' U-GAT-IT checkpoint (PyTorch .pt, or --tf)")
    p.add_argument("file", type=Path, nargs="?", help="the authors' PyTorch checkpoint (.pt)")
    p.add_argument("--out", type=Path, default=None, help="the toonbot checkpoint to write")
    p.add_argument("--name", default=None, help="pair name, e.g. selfie2anime (default: file name)")
    p.add_argument("--img-size", type=int, default=None, help="training size; needed for light generators")
    p.add_argument("--upscaler", nargs=2, metavar=("A2B", "B2A"),
                   help="each direction's learned upscaler, as for export (none or NAME:SCALE:DENOISE); default for "
                        f"selfie2anime: the bundled pair's Real-CUGAN models, selfie2anime's at the scale that gives "
                        f"{official_tf.SELFIE_REPLY} px (2x denoise3x for 256 px), anime2selfie 2x no-denoise; "
                        "other pairs none")
    p.add_argument("--fc0-weight", choices=FC0_WEIGHTS, default=None,
                   help="how the archives store the MLP's first layer (default: int8 for a full model, whose "
                        "268M-parameter layer it is; float for a light one)")
    official_tf.add_arguments(p)
    p.set_defaults(func=run)
