"""Which output a style should return by default: native, x2 Lanczos + unsharp mask, or the generator at 2x.

    .venv/bin/python bench/output_size.py [--styles selfie2anime cat2dog] [--out docs/output_size.jpg]

A model trained at S px draws S px pictures; blowing them up to 512 px adds no
detail. On public-domain faces (and a cat), per style and method: the
picture (written side by side, each at its own size) and the variance of the
Laplacian of its grey 256 px centre square — the sharpness the domain judge
reports — as a ratio to real target-domain images from the test split (1.0 = as crisp).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone

from styles.payload.networks import ResnetGenerator  # noqa: E402
from training.showcase import load_generator, translate  # noqa: E402

PUBLIC = ROOT.parent / "shared" / "data" / "public_domain"
DATASETS = ROOT.parent / "shared" / "data" / "datasets"
INPUTS = {
    "selfie2anime": sorted((PUBLIC / "public_domain_faces" / "crops_256").glob("*.jpg")),
    "cat2dog": sorted((PUBLIC / "public_domain_cat" / "crops_256").glob("*.jpg")),
}
TARGETS = {"selfie2anime": DATASETS / "selfie2anime" / "testB", "cat2dog": DATASETS / "cat2dog" / "testB"}
UNSHARP = ImageFilter.UnsharpMask(radius=2, percent=80, threshold=2)


def sharpness(img: Image.Image) -> float:
    """Variance of the Laplacian of the grey 256 px centre square (as the domain judge measures it)."""
    w, h = img.size
    c = min(w, h)
    sq = img.crop(((w - c) // 2, (h - c) // 2, (w + c) // 2, (h + c) // 2)).resize((256, 256), Image.LANCZOS)
    kernel = ImageFilter.Kernel((3, 3), [0, 1, 0, 1, -4, 1, 0, 1, 0], 1, 128)
    return float(np.asarray(sq.convert("L").filter(kernel), dtype=np.float64).var())


def methods(net: ResnetGenerator, s: int) -> dict[str, Callable[[Image.Image], Image.Image]]:
    return {
        f"native {s} px": lambda im: translate(net, im, s),
        f"x2 Lanczos + unsharp ({2 * s} px)": lambda im: translate(net, im, s)
        .resize((2 * s, 2 * s), Image.LANCZOS).filter(UNSHARP),
        f"generator at {2 * s} px": lambda im: translate(net, im, 2 * s),
        f"x4 Lanczos ({4 * s} px, the old default 512)": lambda im: translate(net, im, s).resize(
            (512, 512), Image.LANCZOS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", nargs="+", default=sorted(INPUTS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "output_size.jpg")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[list[Image.Image]] = []
    for style in args.styles:
        net, config = load_generator(ROOT / "model_store" / f"{style}.mar")
        s = int(config["img_size"])
        real = [Image.open(p).convert("RGB") for p in sorted(TARGETS[style].iterdir())[:50]]
        reference = statistics.median(sharpness(im) for im in real)
        print(f"{style} (trained at {s} px): sharpness as a ratio to {len(real)} real target images")
        inputs = [Image.open(p).convert("RGB") for p in INPUTS[style]]
        results = {name: [f(im) for im in inputs] for name, f in methods(net, s).items()}
        for name, pics in results.items():
            ratio = statistics.median(sharpness(p) for p in pics) / reference
            print(f"  {name:<44} {ratio:.2f}")
        rows += [[im.resize((256, 256), Image.LANCZOS), *(results[n][i] for n in results)]
                 for i, im in enumerate(inputs)]
        names = list(results)
    heights = [max(p.height for p in row) for row in rows]
    widths = [max(row[c].width for row in rows) for c in range(len(rows[0]))]
    canvas = Image.new("RGB", (sum(widths) + 8 * len(widths), sum(heights) + 8 * len(rows) + 24), "white")
    label = ImageDraw.Draw(canvas)
    x = 0
    for c, title in enumerate(["input", *names]):
        label.text((x + 4, 6), title.split(" (")[0], fill="black")
        y = 24
        for r, row in enumerate(rows):
            canvas.paste(row[c], (x, y))
            y += heights[r] + 8
        x += widths[c] + 8
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, quality=88)
    print(f"comparison: {args.out}")


if __name__ == "__main__":
    main()
