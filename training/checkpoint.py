"""Checkpoint files: one dict saved with `torch.save`, loaded on the CPU.

Layout (keys):
  format           "toonbot-ugatit/1"
  options          the full training options (dict), see `training.options`
  generator_arch   ResnetGenerator constructor arguments (same for both directions)
  step             iterations done
  networks         {genA2B, genB2A, disGA, disGB, disLA, disLB}: state dicts
  optimizers, schedulers, scaler, rng   present in training checkpoints only
  upscalers, fc0_weight   how `export` serves it unless told otherwise (imported checkpoints)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "toonbot-ugatit/1"
NETWORKS = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write atomically (temp file, then rename) so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load on the CPU whatever device wrote it (the authors' loader lacked map_location)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a toonbot checkpoint; for the authors' files use "
            "`python -m training import-official FILE.pt --out CKPT`"
        )
    return state
