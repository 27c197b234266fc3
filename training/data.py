"""Unpaired image folders and the paper's augmentation, as deterministic batches.

A batch is a pure function of (seed, rank, step): each domain is read in
epoch-wise shuffled order and every random choice comes from a generator
seeded by the step. A resumed run therefore sees exactly the images and crops
an uninterrupted run would, whatever the number of loader workers.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import IterableDataset, get_worker_info

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
RESIZE_MARGIN = 30  # the paper resizes to img_size + 30, then crops img_size


def open_rgb(path: Path) -> Image.Image:
    """Decode fully (so truncated files fail here, not mid-run) and convert to RGB."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im.load()
        return im.convert("RGB")


def list_images(folder: Path) -> list[Path]:
    """Readable images in `folder`, sorted; unreadable or empty files are skipped with a warning."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: a dataset needs trainA/ trainB/ testA/ testB/")
    good = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            open_rgb(path)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            log.warning("skipping unreadable image %s: %s", path, exc)
            continue
        good.append(path)
    if not good:
        raise ValueError(f"{folder} holds no readable images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return good


def to_tensor(im: Image.Image) -> torch.Tensor:
    """HWC uint8 RGB -> CHW float in [-1, 1]."""
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def train_transform(im: Image.Image, img_size: int, rng: np.random.Generator) -> torch.Tensor:
    """Random horizontal flip, resize to img_size + 30, random img_size crop."""
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    big = img_size + RESIZE_MARGIN
    im = im.resize((big, big), Image.Resampling.BILINEAR)
    x, y = rng.integers(0, RESIZE_MARGIN + 1, size=2)
    return to_tensor(im.crop((int(x), int(y), int(x) + img_size, int(y) + img_size)))


def test_transform(im: Image.Image, img_size: int) -> torch.Tensor:
    """Resize to img_size x img_size, no randomness."""
    return to_tensor(im.resize((img_size, img_size), Image.Resampling.BILINEAR))


class UnpairedBatches(IterableDataset):
    """Yields (step, real_A, real_B) for steps [start, stop); workers take every k-th step."""

    def __init__(
        self, root: Path, img_size: int, batch_size: int, seed: int, rank: int, start: int, stop: int
    ) -> None:
        super().__init__()
        self.files = {d: list_images(root / f"train{d}") for d in "AB"}
        self.img_size, self.batch_size = img_size, batch_size
        self.seed, self.rank, self.start, self.stop = seed, rank, start, stop

    @lru_cache(maxsize=4)
    def _permutation(self, domain: str, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.rank, epoch, ord(domain)])
        return rng.permutation(len(self.files[domain]))

    def batch(self, domain: str, step: int) -> torch.Tensor:
        """The batch of `domain` for `step`: a pure function of (seed, rank, step)."""
        n = len(self.files[domain])
        rng = np.random.default_rng([self.seed, self.rank, step, ord(domain), 1])
        images = []
        for j in range(self.batch_size):
            k = step * self.batch_size + j
            index = self._permutation(domain, k // n)[k % n]
            images.append(train_transform(open_rgb(self.files[domain][index]), self.img_size, rng))
        return torch.stack(images)

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.start + worker, self.stop, workers):
            yield step, self.batch("A", step), self.batch("B", step)


def fixed_images(folder: Path, img_size: int, count: int) -> torch.Tensor:
    """The first `count` images of a folder, for sample grids that stay comparable over a run."""
    files = list_images(folder)[:count]
    return torch.stack([test_transform(open_rgb(p), img_size) for p in files])


SAMPLE_IMAGES = 4  # the trainer's sample grid shows this many per split
PACK_QUALITY = 80  # WebP: ~3 KB per 128 px image, indistinguishable at training size


def pack_images(source: Path, out: Path, img_size: int) -> int:
    """trainA/ and trainB/ (and the first test images, the sample grids' inputs) shrunk to at
    most img_size px and re-encoded as WebP.

    A compact copy of a dataset to carry to a machine that cannot read
    ../shared (a lent GPU): selfie2anime's 4,000 training images (128 px
    already) take 12 MB. Research-use data: write it to an ignored folder,
    never commit it.
    """
    count = 0
    for domain, limit in (("trainA", None), ("trainB", None), ("testA", SAMPLE_IMAGES), ("testB", SAMPLE_IMAGES)):
        if not (source / domain).is_dir():
            continue
        (out / domain).mkdir(parents=True, exist_ok=True)
        for path in list_images(source / domain)[:limit]:
            im = open_rgb(path)
            if max(im.size) > img_size:
                im.thumbnail((img_size, img_size), Image.Resampling.LANCZOS)
            im.save(out / domain / f"{path.stem}.webp", "WEBP", quality=PACK_QUALITY)
            count += 1
    return count


def run_pack_data(args: argparse.Namespace) -> int:
    n = pack_images(args.source, args.out, args.img_size)
    print(f"{n} images in {args.out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `pack-data`."""
    p = sub.add_parser("pack-data", help="a compact WebP copy of a dataset's train folders")
    p.add_argument("source", type=Path, help="folder with trainA/ and trainB/")
    p.add_argument("out", type=Path)
    p.add_argument("--img-size", type=int, default=128, help="the training size it will be used at")
    p.set_defaults(func=run_pack_data)
