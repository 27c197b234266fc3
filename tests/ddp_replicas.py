"""Run under torchrun by tests/test_training_trainer.py: train a few DDP steps, then write this rank's weights.

The test compares the ranks' files tensor by tensor, so it sees the replicas
themselves rather than the trainer's own check of them; then rank 1 nudges one
weight and every rank must see `check_replicas_in_sync` fail.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from training import distributed
from training.options import TrainOptions
from training.trainer import Trainer


def main(data: str, out: str) -> None:
    rt = distributed.setup(threads=1)
    opts = TrainOptions(name="ddp", data=data, out_dir=out, img_size=32, ch=4, n_res=1, light=True,
                        n_dis_global=5, n_dis_local=4, iters=3, precision="fp32",
                        memory_format="contiguous", sample_every=100, save_every=100)
    trainer = Trainer(opts, rt)
    trainer.fit()
    nets = {k: m.state_dict() for k, m in trainer.nets.items()}
    nets.update({f"{key}.{k}": m.state_dict() for key, gens in trainer.ema.items() for k, m in gens.items()})
    torch.save(nets, Path(out) / f"rank{rt.rank}.pt")
    if rt.rank == 1:
        with torch.no_grad():
            next(trainer.nets["genB2A"].parameters()).view(-1)[0] += 1e-6
    try:
        trainer.check_replicas_in_sync()
    except RuntimeError as exc:
        (Path(out) / f"rank{rt.rank}.drift").write_text(str(exc))
    trainer.release_process_group()
    distributed.teardown(finished=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
