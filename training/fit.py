"""`python -m training fit`: train (or resume) a U-GAT-IT run."""

from __future__ import annotations

import argparse
import logging
import signal
import time
from dataclasses import replace
from pathlib import Path

from training import distributed, speed, warm_start
from training.checkpoint import load_checkpoint
from training.options import TrainOptions, add_arguments, from_args
from training.trainer import Trainer

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `fit`."""
    p = sub.add_parser("fit", help="train a U-GAT-IT model on unpaired image folders")
    add_arguments(p)
    p.add_argument("--resume", action="store_true",
                   help="continue OUT_DIR/NAME/checkpoints/latest.pt with its saved options")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this checkpoint's weights (e.g. an imported official one)")
    p.add_argument("--init-from", type=Path, default=None, metavar="ARCHIVE",
                   help="continue a run from the repository: generators from this .mar and its pair's, "
                        "discriminators from training/warm_start/NAME.pt where it exists")
    p.add_argument("--discriminator-warmup", type=int, default=500, metavar="BATCHES",
                   help="with --init-from and no warm-start file: train only the fresh discriminators "
                        "for this many batches first (default 500; 0 skips)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="train this many iterations now, save, and exit (resume later)")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="save and exit this many minutes after the start, speed check and warm-up included "
                        "(end a stretch before its machine goes)")
    p.set_defaults(func=run)


def resolve_options(args: argparse.Namespace) -> tuple[TrainOptions, Path | None]:
    """Options for a new run, or the saved ones (with a longer --iters if given) on --resume."""
    opts = from_args(args)
    if not args.resume:
        return opts, args.init
    path = Path(opts.out_dir) / opts.name / "checkpoints" / "latest.pt"
    if not path.exists():
        raise SystemExit(f"nothing to resume: {path} does not exist")
    saved = TrainOptions.from_dict(load_checkpoint(path)["options"])
    if args.iters is not None:
        saved = replace(saved, iters=args.iters)
    return replace(saved, threads=opts.threads, num_workers=opts.num_workers), path


def interrupt_on_signals() -> None:
    """SIGTERM (docker stop, a job's cancel) and SIGINT save a checkpoint like Ctrl-C does.

    A process started in the background inherits SIGINT ignored; install it anyway.
    """

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, raise_interrupt)


def run(args: argparse.Namespace) -> int:
    """Build the trainer, restore if asked, and train."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    interrupt_on_signals()
    opts, start_from = resolve_options(args)
    if args.init_from is not None and (args.resume or args.init is not None):
        raise SystemExit("--init-from starts a run from archives; it cannot be combined with --resume or --init")
    rt = distributed.setup(opts.threads)
    # counted from the start: the speed check and a discriminator warm-up take half an hour on 2 cores
    deadline = None if args.time_limit is None else time.monotonic() + 60 * args.time_limit
    trainer: Trainer | None = None
    finished = False
    try:
        if args.time_limit is not None and rt.distributed:
            raise SystemExit("--time-limit would stop ranks at different steps; use --stop-after under torchrun")
        opts = speed.settle_auto(opts, rt)
        trainer = Trainer(opts, rt)
        if args.init_from is not None:
            initial = warm_start.initial_state(args.init_from, opts.name, warm_start.warm_start_path(opts.name))
            trainer.load(initial)
            if not initial["discriminators_warm"]:
                trainer.warm_up_discriminators(args.discriminator_warmup)
        elif start_from is not None:
            trainer.load(start_from)
            if not args.resume:
                trainer.step = 0
        try:
            trainer.fit(stop_after=args.stop_after, deadline=deadline)
        except KeyboardInterrupt:
            return 130
        finished = True
    finally:
        if trainer is not None:
            trainer.release_process_group()
        distributed.teardown(finished)
    return 0
