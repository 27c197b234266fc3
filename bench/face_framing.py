"""Where faces sit in the training pictures: the constants in styles/payload/framing.py.

    .venv/bin/python bench/face_framing.py [--limit 500]

Selfies (selfie2anime trainA): MTCNN's five landmarks, averaged over the
pictures where it finds exactly one face, as fractions of the side. Cats
(cat2dog trainA, OpenCV's cat cascade as framing.CatFramer runs it): the
largest face box's side and centre, as fractions of the side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "styles" / "payload"))  # the handler's flat imports

import framing  # noqa: E402

DATASETS = ROOT.parent / "shared" / "data" / "datasets"


def pictures(folder: Path, limit: int) -> list[Image.Image]:
    """The first `limit` pictures of a folder, in name order, as RGB."""
    return [Image.open(p).convert("RGB") for p in sorted(folder.iterdir())[:limit]]


def selfie_landmarks(images: list[Image.Image]) -> tuple[np.ndarray, int]:
    """Mean landmarks as fractions of the side, and how many pictures they come from."""
    people = framing.PeopleFramer()
    found = []
    for img in images:
        faces = people.faces(img)
        if len(faces) == 1:
            found.append(faces[0].landmarks / np.array(img.size))
    return np.mean(found, axis=0), len(found)


def box_stats(boxes: list[tuple[float, float, float, float, int, int]]) -> str:
    """Mean side and centre of boxes (left, top, right, bottom, width, height) as fractions of the side."""
    rows = np.array([(max(r - l, b - t) / min(w, h), (l + r) / 2 / w, (t + b) / 2 / h) for l, t, r, b, w, h in boxes])
    side, cx, cy = rows.mean(axis=0)
    return f"face side {side:.3f}, centre ({cx:.3f}, {cy:.3f}) from {len(rows)} pictures"


def cat_boxes(images: list[Image.Image]) -> list[tuple[float, float, float, float, int, int]]:
    """The cat cascade's largest box per picture, where it finds one."""
    cats = framing.CatFramer()
    return [(*box, img.width, img.height) for img in images if (box := cats.largest(img)) is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=500, help="pictures per folder (default %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mean, count = selfie_landmarks(pictures(DATASETS / "selfie2anime" / "trainA", args.limit))
    print(f"selfie landmarks from {count} pictures:\n{np.array2string(mean, precision=4, separator=', ')}")
    print("cats:", box_stats(cat_boxes(pictures(DATASETS / "cat2dog" / "trainA", args.limit))))


if __name__ == "__main__":
    main()
