"""`python -m training showcase`: a before/after strip of public-domain pictures through archived styles.

Each column is one archive's generator alone (a style at one version, at
the size it draws, before any upscaler), labelled with its training record
(iterations, size, hours), so the training log shows how a style changed
between stretches; `python -m serving stylize --compare` shows the whole
reply. Inputs are public-domain pictures, never dataset images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from styles.payload.networks import ResnetGenerator
from training.warm_start import read_archive

GAP = 6
LABEL_HEIGHT = 44  # three lines of caption
MIN_WIDTH = 130  # room for a caption beside a 96 px picture


def label(config: dict) -> list[str]:
    """The column's caption lines, e.g. ['3,100 it', '128 px, drawn 256'] (from the archive's training record)."""
    record = config.get("training") or {}
    size = config.get("draw_size", config["img_size"])
    its = f"{record['iterations']:,} it, {record['hours']:.1f} h" if record else "no training record"
    return [its, f"{config['img_size']} px, drawn {size}"]


def load_generator(archive: Path) -> tuple[ResnetGenerator, dict]:
    """The archive's generator (float32, eval mode) and the handler section of its model-config.yaml."""
    weights, config = read_archive(archive)
    net = ResnetGenerator(**config["arch"])
    net.load_state_dict(weights)
    return net.eval(), config


@torch.inference_mode()
def translate(net: ResnetGenerator, picture: Image.Image, size: int) -> Image.Image:
    """The generator run on `picture` resized to size x size."""
    x = torch.from_numpy(np.asarray(picture.convert("RGB").resize((size, size), Image.LANCZOS), dtype=np.float32))
    y = net(x.permute(2, 0, 1)[None] / 127.5 - 1.0)[0][0]
    return Image.fromarray(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())


def draw(archive: Path, pictures: list[Image.Image]) -> tuple[list[Image.Image], list[str]]:
    """The archive's generator on each picture, at the archive's draw size."""
    net, config = load_generator(archive)
    size = int(config.get("draw_size", config["img_size"]))
    return [translate(net, p, size) for p in pictures], [archive.stem, *label(config)]


def strip(archives: list[Path], inputs: list[Path], shown: int = 192) -> Image.Image:
    """Rows: inputs; columns: the input, then each archive's picture at 100 % (no resampling)."""
    pictures = [Image.open(p).convert("RGB") for p in inputs]
    columns = [([p.resize((shown, shown), Image.LANCZOS) for p in pictures], ["public-domain input"])]
    columns += [draw(a, pictures) for a in archives]
    widths = [max(MIN_WIDTH, *(im.width for im in col)) for col, _ in columns]
    heights = [max(col[r].height for col, _ in columns) for r in range(len(pictures))]
    canvas = Image.new("RGB", (sum(widths) + GAP * (len(widths) - 1), LABEL_HEIGHT + sum(heights)
                               + GAP * (len(heights) - 1)), "white")
    pen = ImageDraw.Draw(canvas)
    x = 0
    for (col, title), width in zip(columns, widths):
        for i, line in enumerate(title):
            pen.text((x + 2, 2 + 13 * i), line, fill="black")
        y = LABEL_HEIGHT
        for im, height in zip(col, heights):
            canvas.paste(im, (x, y))
            y += height + GAP
        x += width + GAP
    return canvas


def run(args: argparse.Namespace) -> int:
    image = strip(args.archives, args.inputs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(f"{args.out}: {image.width} x {image.height}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `showcase`."""
    p = sub.add_parser("showcase", help="before/after strip of public-domain pictures through archives")
    p.add_argument("--archives", type=Path, nargs="+", required=True, help=".mar files, one column each")
    p.add_argument("--inputs", type=Path, nargs="+", required=True, help="public-domain pictures, one row each")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.set_defaults(func=run)
