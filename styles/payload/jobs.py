"""One request's state between the handler's steps (TorchServe wants one class in handler.py).

Ships inside every `.mar` beside `handler.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

import framing
from imaging import Options


@dataclass
class Job:
    """One request between the steps: its crops, and where they go back for a group photo."""

    crops: torch.Tensor  # (k, 3, S, S) in [-1, 1]
    options: Options
    faces: int  # faces drawn; 0 for a style that needs none
    photo: Image.Image | None = None  # a group photo, to paste the faces back into
    frames: list[framing.Frame] = field(default_factory=list)
    drawn: torch.Tensor | None = None  # the generator's output, once it ran
