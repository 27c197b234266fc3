"""The product's own domain judge: a small CNN that tells a pair's domain A from domain B.

Its probability says whether a style's pictures land in the target domain; its
pooled features are the space KID is measured in (`training.kid`). It is
trained once per pair from the pair's train split (`python -m training judge`)
and committed as fp16 weights with its own test accuracy, so nothing is
downloaded at run time and every evaluation of a pair uses the same stick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

SIZE = 96  # pictures are judged on a centre square resized to this
WIDTHS = (32, 64, 96, 128, 192, 256)  # ~0.85 M weights: 1.7 MB in fp16 (the limit is 2 MB per pair)
JUDGES = Path(__file__).resolve().parent / "judges"  # <pair>.pt, committed


def _block(ci: int, co: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))


class JudgeNet(nn.Module):
    """Six conv-BN-ReLU blocks down to 1/16, global average pooling, one logit (> 0: domain B)."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, dropout: float = 0.2) -> None:
        super().__init__()
        w = widths
        self.features = nn.Sequential(
            _block(3, w[0], 2), _block(w[0], w[1], 2),  # 1/4: the big maps are the cost, so stride early
            _block(w[1], w[2]), nn.MaxPool2d(2),  # 1/8
            _block(w[2], w[3]), nn.MaxPool2d(2),  # 1/16
            _block(w[3], w[4]), _block(w[4], w[5]),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(w[-1], 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, SIZE, SIZE) in [-1, 1] -> (N, widths[-1]) pooled features: KID's space."""
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, SIZE, SIZE) -> (N,) logits of domain B."""
        return self.fc(self.drop(self.embed(x))).squeeze(1)


def centre_square(im: Image.Image, size: int = SIZE) -> Image.Image:
    """RGB, shorter side resized to `size`, centre crop: any picture becomes the judge's input."""
    im = im.convert("RGB")
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)


def to_tensor(im: Image.Image) -> torch.Tensor:
    """HWC uint8 RGB -> CHW float in [-1, 1]."""
    a = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


@dataclass(frozen=True)
class Judge:
    """A trained judge and what its file says about it (pair, seed, test accuracy)."""

    net: JudgeNet
    meta: dict[str, Any]

    @torch.inference_mode()
    def score(self, pictures: list[Image.Image], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(p(domain B) per picture, pooled features per picture) as float64 arrays."""
        probs, feats = [], []
        for i in range(0, len(pictures), batch):
            x = torch.stack([to_tensor(centre_square(p)) for p in pictures[i : i + batch]])
            f = self.net.embed(x)
            probs.append(torch.sigmoid(self.net.fc(f).squeeze(1)))
            feats.append(f)
        if not probs:
            return np.zeros(0), np.zeros((0, self.net.fc.in_features))
        return torch.cat(probs).double().numpy(), torch.cat(feats).double().numpy()


def judge_path(pair: str, folder: Path = JUDGES) -> Path:
    """Where a pair's judge is kept."""
    return folder / f"{pair}.pt"


def save_judge(net: JudgeNet, meta: dict[str, Any], path: Path) -> Path:
    """fp16 weights and the meta (pair, seed, widths, test accuracy) in one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"state": state, "meta": meta}, path)
    return path


def load_judge(path: Path) -> Judge:
    """A judge file as `Judge`, in eval mode; FileNotFoundError says how to train one."""
    if not path.is_file():
        raise FileNotFoundError(f"no judge at {path}: train one with `python -m training judge --data DATASET_DIR`")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net = JudgeNet(tuple(saved["meta"]["widths"]))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["state"].items()})
    return Judge(net.eval(), saved["meta"])
