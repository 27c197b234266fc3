"""Device choice and `torchrun` (DDP) set-up."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    """Where this process trains and which rank it is."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 prints, samples and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(threads: int = 0) -> Runtime:
    """Join the process group when launched by torchrun; pick CUDA when available."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        if threads > 0:
            torch.set_num_threads(threads)
        elif world_size > 1:
            # Share the cores among the local processes instead of oversubscribing them.
            local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Runtime(device=device, rank=rank, world_size=world_size)


def teardown(finished: bool) -> None:
    """Leave the process group cleanly so torchrun sees a normal exit.

    After a finished run every rank first waits for the others at a barrier:
    the last save's collective can leave a gloo thread still releasing its
    work while a rank with nothing left to do is already in interpreter
    shutdown, which aborts it ("terminate called without an active
    exception") and makes torchrun kill the others. The caller drops its DDP
    wrappers before this, so nothing holds the group when it is destroyed.
    A run that failed skips the barrier: the other ranks may never reach it.
    """
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()
