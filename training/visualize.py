"""Sample grids and loss curves: what a person looks at to judge a run."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

ROW_LABELS = ("real", "CAM heatmap", "translation", "cycle")


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def heatmap_overlay(heatmap: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Colour the attention map (jet) and blend it with the input, both in [-1, 1]."""
    h = F.interpolate(heatmap.float(), size=real.shape[-2:], mode="bilinear", align_corners=False)
    h = h - h.amin(dim=(2, 3), keepdim=True)
    h = h / h.amax(dim=(2, 3), keepdim=True).clamp_min(1e-8)
    jet = torch.from_numpy(matplotlib.colormaps["jet"](h[:, 0].cpu().numpy())[..., :3]).float()
    jet = jet.permute(0, 3, 1, 2) * 2 - 1
    return 0.5 * jet + 0.5 * real.float().cpu()


def direction_grid(title: str, rows: list[torch.Tensor]) -> Image.Image:
    """One labelled block: a row per stage (ROW_LABELS), a column per image."""
    arrays = [to_uint8(r) for r in rows]
    n, size = arrays[0].shape[0], arrays[0].shape[1]
    label_w, title_h = 96, 18
    grid = Image.new("RGB", (label_w + n * size, title_h + len(rows) * size), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((4, 3), title, fill="black")
    for r, (label, arr) in enumerate(zip(ROW_LABELS, arrays)):
        y = title_h + r * size
        draw.text((4, y + size // 2 - 6), label, fill="black")
        for c in range(n):
            grid.paste(Image.fromarray(arr[c]), (label_w + c * size, y))
    return grid


def stack_vertically(images: list[Image.Image]) -> Image.Image:
    """Blocks one under the other, left-aligned."""
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height
    return out


def plot_losses(csv_path: Path, png_path: Path) -> None:
    """Loss curves from the run's losses.csv, one panel for D and one for the G terms."""
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    keys = [k for k in rows[0] if k != "step"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in keys:
        ax = axes[0] if key.startswith("D") else axes[1]
        ax.plot(steps, [float(r[key]) for r in rows], label=key, linewidth=1)
    for ax, title in zip(axes, ("discriminators", "generators")):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
