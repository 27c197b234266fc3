"""Training options: one typed record, saved next to every checkpoint."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Precision = Literal["auto", "fp32", "bf16", "fp16"]
MemoryFormat = Literal["auto", "contiguous", "channels_last"]


@dataclass
class TrainOptions:
    """Everything that defines a run; the defaults are the paper's (light off, 256 px)."""

    name: str
    data: str
    out_dir: str = "runs"
    # architecture
    img_size: int = 256
    ch: int = 64
    n_res: int = 4
    light: bool = False
    tf_compat: bool = False  # the authors' TensorFlow graph (an imported archive's arch); no flag: /retrain sets it
    n_dis_global: int = 7
    n_dis_local: int = 5
    # optimisation (paper: Adam 1e-4, betas (0.5, 0.999), weight decay 1e-4)
    iters: int = 1_000_000
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-4
    decay: bool = True
    adv_weight: float = 1.0
    cycle_weight: float = 10.0
    identity_weight: float = 10.0
    cam_weight: float = 1000.0
    # exponential moving averages of both generators' weights, one per decay (export picks one by measurement)
    ema_decay: tuple[float, ...] = (0.999, 0.9999)
    # run
    seed: int = 0
    precision: Precision = "auto"
    memory_format: MemoryFormat = "auto"
    threads: int = 0
    num_workers: int = -1
    log_every: int = 10
    sample_every: int = 1000
    save_every: int = 5000

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for checkpoints and `model-config.yaml`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainOptions:
        """Rebuild from a checkpoint, ignoring keys a newer or older version added."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if "ema_decay" in values:
            values["ema_decay"] = tuple(values["ema_decay"])
        return cls(**values)

    def describe(self) -> str:
        """One option per line; non-default values are marked, as CycleGAN prints them."""
        defaults = {f.name: f.default for f in fields(self)}
        lines = []
        for key, value in asdict(self).items():
            mark = "" if defaults.get(key) == value else f"\t[default: {defaults[key]}]"
            lines.append(f"{key:>16}: {value}{mark}")
        return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `fit` command line; every flag maps to one `TrainOptions` field."""
    d = TrainOptions("", "")
    parser.add_argument("--data", required=True, help="folder with trainA/ trainB/ testA/ testB/")
    parser.add_argument("--name", required=True, help="run name; A2B style names, e.g. selfie2anime")
    parser.add_argument("--out-dir", default=d.out_dir, help="runs are written to OUT_DIR/NAME/")
    parser.add_argument("--img-size", type=int, default=d.img_size)
    parser.add_argument("--ch", type=int, default=d.ch, help="base channel count")
    parser.add_argument("--n-res", type=int, default=d.n_res, help="residual blocks per half")
    parser.add_argument("--light", action="store_true", help="U-GAT-IT light (pooled MLP input)")
    parser.add_argument("--n-dis-global", type=int, default=d.n_dis_global)
    parser.add_argument("--n-dis-local", type=int, default=d.n_dis_local)
    parser.add_argument("--iters", type=int, default=None, help=f"default {d.iters}")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--no-decay", dest="decay", action="store_false",
                        help="keep the learning rate constant (default: linear decay in the 2nd half)")
    parser.add_argument("--adv-weight", type=float, default=d.adv_weight)
    parser.add_argument("--cycle-weight", type=float, default=d.cycle_weight)
    parser.add_argument("--identity-weight", type=float, default=d.identity_weight)
    parser.add_argument("--cam-weight", type=float, default=d.cam_weight)
    parser.add_argument("--ema-decay", type=float, nargs="*", default=list(d.ema_decay), metavar="DECAY",
                        help="keep a moving average of the generators' weights per decay (none: off); "
                             "`export --weights ema-DECAY` ships one")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=d.precision,
                        help="auto: fp16/bf16 autocast on CUDA; on a CPU, whichever of fp32 and "
                             "bf16 (where the CPU has bf16 instructions) trains faster, measured at start")
    parser.add_argument("--memory-format", choices=["auto", "contiguous", "channels_last"],
                        default=d.memory_format,
                        help="auto: channels-last on CUDA; on a CPU, the faster layout, measured at start")
    parser.add_argument("--threads", type=int, default=d.threads, help="CPU threads (0: every core)")
    parser.add_argument("--num-workers", type=int, default=d.num_workers,
                        help="data loader processes (-1: 0 on CPU, 4 on CUDA)")
    parser.add_argument("--log-every", type=int, default=d.log_every)
    parser.add_argument("--sample-every", type=int, default=d.sample_every)
    parser.add_argument("--save-every", type=int, default=d.save_every)


def from_args(args: argparse.Namespace) -> TrainOptions:
    """Map parsed flags onto the dataclass (`--iters` left out keeps the default)."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainOptions) if hasattr(args, f.name)}
    if values.get("iters") is None:
        values.pop("iters", None)
    if "ema_decay" in values:
        values["ema_decay"] = tuple(values["ema_decay"])
    return TrainOptions(**values)
