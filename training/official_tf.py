"""`python -m training import-official --tf PREFIX`: the authors' TensorFlow checkpoints as styles.

The paper's results, and the only weights the authors released (selfie2anime,
50 and 100 epochs, full model), come from their TensorFlow code
(taki0112/UGATIT, TF 1.14). Its generator differs from the PyTorch port our
networks follow, so the weights go into `ResnetGenerator(tf_compat=True)`,
which computes the TensorFlow graph, not an approximation of it:

- scopes: `generator_B` is A -> B (their `generate_a2b`), `generator_A` B -> A;
- kernels HWIO -> OIHW, dense kernels (in, out) -> (out, in); the full MLP's first
  layer flattens a (S/4, S/4, 4ch) NHWC map, so its input axis is permuted into
  our NCHW flattening order;
- the CAM's logits use `CAM_logit/dense/*`, its attention `CAM_logit/kernel + bias`;
- `smoothing` (the default, named in their checkpoint folder as `_smoothing`)
  makes AdaLIN use clip(rho - 0.1, 0, 1): that value is stored as our rho.

Discriminators are not imported: only generators serve (their TF padding and
spectral-norm state would need a discriminator of their own to train on).
"""

from __future__ import annotations

import argparse
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from styles import archive as archives
from styles import catalog, loader
from styles.payload.networks import N_DOWNSAMPLING, ResnetGenerator
from training import export
from training.checkpoint import save_checkpoint
from training.options import TrainOptions
from training.tf_checkpoint import Checkpoint

SCOPES = {"genA2B": "generator_B", "genB2A": "generator_A"}  # their generate_a2b builds generator_B
SMOOTHING_SHIFT = np.float32(0.1)
NO_SMOOTHING_HINT = (
    "cannot tell whether the checkpoint was trained with --smoothing: its folder is not named as the "
    "authors' code names it (..._smoothing); pass --smoothing or --no-smoothing"
)
NO_IMG_SIZE = (
    "a light generator does not record its image size: pass --img-size with the size it was trained at "
    "(the authors' default is 256)"
)
SELFIE_REPLY = 512  # px: the bundled selfie2anime's reply (its 128 px drawing upscaled 4x)
MLP_WIDTH = (
    "the MLP is {width} wide but the bottleneck has {bottleneck} channels: the authors' graph only builds "
    "when ch * n_res == 4 * ch (n_res 4)"
)


def smoothing_from_folder(prefix: Path) -> bool | None:
    """Their `model_dir` names the run: UGATIT[_light]_<data>_<gan>_<n>resblock_..._sn_smoothing."""
    folder = prefix.parent.name
    if not re.match(r"UGATIT(_light)?_.+_\d+resblock_\d+dis_", folder):
        return None
    return folder.endswith("_smoothing")


def generator_arch(ckpt: Checkpoint, scope: str, img_size: int | None) -> dict[str, Any]:
    """Read ch, n_res, light and img_size off the variables' shapes, refusing graphs ours cannot build."""
    first = ckpt.shape(f"{scope}/conv/conv2d/kernel")  # (7, 7, in, ch)
    ngf = first[3]
    n_res = len({n.split("/")[1] for n in ckpt.names() if re.match(rf"{scope}/resblock_\d+/", n)})
    n_ada = len({n.split("/")[1] for n in ckpt.names() if re.match(rf"{scope}/adaptive_resblock\d+/", n)})
    if n_res != n_ada:
        raise ValueError(f"{scope}: {n_res} encoder but {n_ada} decoder residual blocks")
    bottleneck = ngf * 2**N_DOWNSAMPLING
    fc_in, width = ckpt.shape(f"{scope}/MLP/linear_0/dense/kernel")
    if width != bottleneck:
        raise ValueError(MLP_WIDTH.format(width=width, bottleneck=bottleneck))
    light = fc_in == bottleneck
    if not light:
        img_size = math.isqrt(fc_in // bottleneck) * 2**N_DOWNSAMPLING
    elif img_size is None:
        raise ValueError(NO_IMG_SIZE)
    return {"input_nc": first[2], "output_nc": ckpt.shape(f"{scope}/G_logit/conv2d/kernel")[3], "ngf": ngf,
            "n_blocks": n_res, "img_size": img_size, "light": light, "tf_compat": True}


def _conv(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # HWIO -> OIHW


def _dense(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.T))  # (in, out) -> (out, in)


def _vector(x: np.ndarray, norm: bool = False) -> torch.Tensor:
    t = torch.from_numpy(np.array(x))
    return t.reshape(1, -1, 1, 1) if norm else t


def generator_state(ckpt: Checkpoint, scope: str, arch: dict[str, Any], smoothing: bool) -> dict[str, torch.Tensor]:
    """Our state dict from the variables under `scope`; every variable of theirs must find a place."""
    used: set[str] = set()

    def var(name: str) -> np.ndarray:
        used.add(f"{scope}/{name}")
        return ckpt.read(f"{scope}/{name}")

    s: dict[str, torch.Tensor] = {}

    def conv(ours: str, theirs: str) -> None:
        s[f"{ours}.weight"], s[f"{ours}.bias"] = _conv(var(f"{theirs}/conv2d/kernel")), _vector(var(f"{theirs}/conv2d/bias"))

    def inorm(ours: str, theirs: str) -> None:
        s[f"{ours}.weight"], s[f"{ours}.bias"] = _vector(var(f"{theirs}/gamma")), _vector(var(f"{theirs}/beta"))

    def dense(ours: str, theirs: str) -> None:
        s[f"{ours}.weight"], s[f"{ours}.bias"] = _dense(var(f"{theirs}/dense/kernel")), _vector(var(f"{theirs}/dense/bias"))

    # Encoder: conv 7x7, then N_DOWNSAMPLING stride-2 convs, each followed by an affine IN
    conv("DownBlock.1", "conv")
    inorm("DownBlock.2", "ins_norm")
    for i in range(N_DOWNSAMPLING):
        conv(f"DownBlock.{5 + 4 * i}", f"conv_{i}")
        inorm(f"DownBlock.{6 + 4 * i}", f"ins_norm_{i}")
    for j in range(arch["n_blocks"]):
        block = f"DownBlock.{4 + 4 * N_DOWNSAMPLING + j}.conv_block"
        for half, (c, n) in (("res1", (1, 2)), ("res2", (5, 6))):
            conv(f"{block}.{c}", f"resblock_{j}/{half}/conv_0")
            inorm(f"{block}.{n}", f"resblock_{j}/{half}/instance_norm")

    # CAM: logits from the dense layer both poolings share; attention from its own kernel + bias
    for fc in ("gap_fc", "gmp_fc"):
        dense(fc, "CAM_logit")
    s["attention_fc.weight"], s["attention_fc.bias"] = _dense(var("CAM_logit/kernel")), _vector(var("CAM_logit/bias"))
    conv("conv1x1", "conv_1x1")

    # Gamma/beta MLP; the full model's first layer takes the NHWC-flattened map
    w = var("MLP/linear_0/dense/kernel")  # (in, width)
    if not arch["light"]:  # in = (h, w, c) flattened: reorder to (c, h, w)
        side = arch["img_size"] // 2**N_DOWNSAMPLING
        w = w.reshape(side, side, -1, w.shape[1]).transpose(2, 0, 1, 3).reshape(-1, w.shape[1])
    s["FC.0.weight"], s["FC.0.bias"] = _dense(w), _vector(var("MLP/linear_0/dense/bias"))
    dense("FC.2", "MLP/linear_1")
    dense("gamma", "MLP/gamma")
    dense("beta", "MLP/beta")

    # Decoder: AdaLIN residual blocks (rho as the graph uses it), then up-sampling with LIN
    for j in range(arch["n_blocks"]):
        for k, half in ((1, "res1"), (2, "res2")):
            conv(f"UpBlock1_{j + 1}.conv{k}", f"adaptive_resblock{j}/{half}/conv_0")
            rho = var(f"adaptive_resblock{j}/{half}/instance_layer_norm/rho")
            if smoothing:
                rho = np.clip(rho - SMOOTHING_SHIFT, np.float32(0), np.float32(1))
            s[f"UpBlock1_{j + 1}.norm{k}.rho"] = _vector(rho, norm=True)
    for i in range(N_DOWNSAMPLING):
        conv(f"UpBlock2.{2 + 5 * i}", f"up_conv_{i}")
        for p in ("rho", "gamma", "beta"):
            s[f"UpBlock2.{3 + 5 * i}.{p}"] = _vector(var(f"layer_ins_norm_{i}/{p}"), norm=True)
    conv(f"UpBlock2.{5 * N_DOWNSAMPLING + 1}", "G_logit")

    mine = {n for n in ckpt.names() if n.startswith(f"{scope}/") and "/Adam" not in n}
    if mine - used:
        raise ValueError(f"{scope}: variables this converter does not know: {', '.join(sorted(mine - used)[:5])}")
    with torch.device("meta"):  # no second gigabyte of random weights for the full model
        net = ResnetGenerator(**arch)
    net.load_state_dict(s, strict=True, assign=True)  # every parameter of ours filled, shapes checked
    return net.state_dict()


def import_tf(prefix: Path, name: str, img_size: int | None = None, smoothing: bool | None = None) -> dict[str, Any]:
    """Both generators of a TensorFlow U-GAT-IT checkpoint as a toonbot checkpoint's state (no discriminators)."""
    ckpt = Checkpoint(prefix)
    if f"{SCOPES['genA2B']}/conv/conv2d/kernel" not in ckpt.entries:
        raise ValueError(f"{ckpt.prefix} has no {SCOPES['genA2B']}/conv/conv2d/kernel: not a U-GAT-IT checkpoint")
    if smoothing is None:
        smoothing = smoothing_from_folder(ckpt.prefix)
        if smoothing is None:
            raise ValueError(NO_SMOOTHING_HINT)
    arch = generator_arch(ckpt, SCOPES["genA2B"], img_size)
    if generator_arch(ckpt, SCOPES["genB2A"], img_size) != arch:
        raise ValueError("the two generators differ in shape")
    nets = {ours: generator_state(ckpt, scope, arch, smoothing) for ours, scope in SCOPES.items()}
    opts = TrainOptions(name=name, data="", img_size=arch["img_size"], ch=arch["ngf"], n_res=arch["n_blocks"],
                        light=arch["light"])
    return {"options": opts.to_dict(), "generator_arch": arch, "step": 0, "networks": nets,
            "imported_from": str(ckpt.prefix.name), "tf_smoothing": smoothing}


def default_upscalers(pair: str, img_size: int) -> list[str]:
    """Each direction's upscaler unless `--upscaler` names them: the bundled selfie2anime pair's (Real-CUGAN se;
    denoise3x at the scale that gives selfie2anime's 512 px reply, 2x for the paper's 256 px; anime2selfie 2x
    without denoising); other pairs none."""
    if pair != "selfie2anime":
        return ["none", "none"]
    scale = min(4, max(2, -(-SELFIE_REPLY // img_size)))
    return [f"realcugan-se:{scale}:denoise3x", "realcugan-se:2:no-denoise"]


def serving(pair: str, arch: dict[str, Any], upscalers: list[str] | None, fc0_weight: str | None) -> dict[str, Any]:
    """What `export` serves the imported generators with (recorded in the checkpoint; export's own options still
    override): each direction's upscaler, and a full model's 268M-parameter first MLP layer in int8, which keeps
    the paper's model within a 2-core server's memory (bench/full_tf_model.py)."""
    specs = upscalers or default_upscalers(pair, int(arch["img_size"]))
    return {"upscalers": [export.parse_upscaler(spec) for spec in specs],
            "fc0_weight": fc0_weight or ("float" if arch["light"] else "int8")}


def describe_serving(state: dict[str, Any]) -> str:
    """One line on what the archives will serve with."""
    ups = ", ".join("none" if u is None else f"{u['name']} {u['scale']}x {u['denoise']}"
                    for u in state["upscalers"])
    return f"served with the upscalers {ups} (A2B, B2A) and the first MLP layer in {state['fc0_weight']}"


def run(args: argparse.Namespace) -> int:
    """Convert, save the checkpoint, then export both directions through `training.export`."""
    try:
        state = import_tf(args.tf, args.name or "selfie2anime", args.img_size, args.smoothing)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"import-official: {e}") from None
    state.update(serving(state["options"]["name"], state["generator_arch"], args.upscaler, args.fc0_weight))
    out = args.out or Path("runs") / f"{state['options']['name']}-tf-{args.tf.name}.pt"
    save_checkpoint(out, state)
    a = state["generator_arch"]
    print(f"imported {args.tf} -> {out}: {'light' if a['light'] else 'full'} generator (TensorFlow graph), "
          f"img_size {a['img_size']}, ch {a['ngf']}, n_res {a['n_blocks']}, smoothing {state['tf_smoothing']}; "
          f"{describe_serving(state)}")
    if args.no_export:
        return 0
    names = tuple(args.names) if args.names else catalog.split_pair(state["options"]["name"])
    del state  # both float32 generators (2.2 GB for the paper's full model): export reads them from `out`
    parser = argparse.ArgumentParser()
    export.add_parser(parser.add_subparsers())
    argv = ["export", str(out), "--out", str(args.model_store), "--version", args.version]
    code = int(export.export(parser.parse_args(argv + (["--names", *args.names] if args.names else []))))
    if code or args.no_compile:
        return code
    build_paths([archives.find(args.model_store, style, args.version) for style in names])
    return 0


def build_paths(exported: list[archives.Archive | None]) -> None:
    """Build each archive's serving paths now, as a server on this machine would at its first start, so that it
    only loads them: compiling the paper's full generator takes the compiler ~0.9 GB beside the eager model
    that answers meanwhile (bench/full_tf_model.py), more than a server should add at any moment."""
    with tempfile.TemporaryDirectory(prefix="toonbot-import-") as tmp:
        for archive in filter(None, exported):
            print(f"{archive.name} {archive.version}: building its serving paths on this machine "
                  "(minutes; --no-compile skips this and leaves it to the server)", flush=True)
            chosen = loader.build_paths(archive, Path(tmp))
            print(f"{archive.name} {archive.version}: serves on " + ", ".join(f"{k} {v}" for k, v in chosen.items()))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`import-official`'s options for TensorFlow checkpoints."""
    p.add_argument("--tf", type=Path, default=None, metavar="PREFIX",
                   help="a TensorFlow checkpoint of the authors' code (PREFIX.index + PREFIX.data-*), e.g. "
                        "checkpoint/UGATIT_selfie2anime_..._sn_smoothing/UGATIT.model-1000000: converted, then "
                        "exported as a new version of both styles")
    p.add_argument("--smoothing", action=argparse.BooleanOptionalAction, default=None,
                   help="whether it was trained with --smoothing (default: read from its folder's name)")
    p.add_argument("--model-store", type=Path, default=Path("model_store"), help="where --tf writes the .mar files")
    p.add_argument("--version", default="2.0", help="model version of the --tf styles (default %(default)s)")
    p.add_argument("--names", nargs=2, metavar=("A2B", "B2A"), help="style names (default: split --name)")
    p.add_argument("--no-export", action="store_true", help="--tf: write the checkpoint only")
    p.add_argument("--no-compile", action="store_true",
                   help="--tf: do not build the archives' serving paths into this machine's compile cache "
                        "(a server then builds them at its first start, the compiler beside it)")
