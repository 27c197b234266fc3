"""CPU time per photo, stage by stage, as the page's uploads cost it in the embedded engine.

    .venv/bin/python bench/request_cost.py [--style selfie2anime] [--rounds 5] [--only stages|detection|lanes]

Counts CPU-seconds (`time.process_time`), not wall time: on a machine that
something else keeps busy the CPU a request takes stays put while its wall time
follows the load. Before/after candidates take turns in one run. The handler is
this source tree's payload, repacked around the style's archive in a temporary
store, so a change is measured before the archives are exported again.

- stages (one thread): each photo bench/load.py sends, then a 12-megapixel
  one, through the handler's own steps: decode (EXIF included), the working
  copy, face detection, the crops, the generator, the reply picture, JPEG
  encode, and the rest (the TorchServe request plumbing). Before: the whole
  JPEG decoded and MTCNN's whole pyramid from 20 px; now: a large JPEG decoded
  at reduced scale, MTCNN's first look at the faces worth drawing.
- detection (one thread): the same two on the fixtures' faces, the public-domain
  portraits, the 120 congressional portraits, those turned 30 degrees,
  synthetic group photos and 70 pictures without a person: the same outcome
  (faces drawn, "too small", none), the box IoU of each face drawn, CPU per picture.
- lanes: bursts of USERS photos at once through `EmbeddedEngine`, one lane on
  torch's N threads (before) and N lanes on one thread each (now): CPU-seconds
  per photo, and the burst's wall time, which means something only on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("TOONBOT_COMPILE", "never")  # eager float32: a background compile would share the CPU

import cv2
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic group photos of the face tests
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "styles" / "payload"))  # the handler's flat imports

import handler as payload  # noqa: E402

from group_photos import group_photo  # noqa: E402
from load import with_payload  # noqa: E402

from serving.api import request_headers  # noqa: E402
from serving.engine import EmbeddedEngine  # noqa: E402
from styles import loader  # noqa: E402
from styles.archive import read_archive  # noqa: E402
from styles.payload import framing, imaging  # noqa: E402
from training.hardware import cpu_name  # noqa: E402

FACES = sorted((ROOT / "tests" / "fixtures" / "faces").glob("*.jpg"))  # what bench/load.py uploads
PUBLIC = ROOT.parent / "shared" / "data" / "public_domain"
DATASETS = ROOT.parent / "shared" / "data" / "datasets"
STAGES = ("decode", "job", "detection", "crops", "generator", "picture", "encode")
ROWS = {"decode": "decode (EXIF too)", "working copy": "working copy (at most 2,048 px)", "detection": "detection",
        "crops": "crops", "generator": "generator", "picture": "reply picture", "encode": "JPEG encode",
        "rest": "rest (request plumbing)", "total": "total"}
BEFORE, NOW = "before", "now"
Box = tuple[float, float, float, float]


def process_seconds(call: Callable[[], Any]) -> tuple[Any, float]:
    """`call()`'s result and the CPU-seconds the process spent on it."""
    start = time.process_time()
    result = call()
    return result, time.process_time() - start


# --- stages ---------------------------------------------------------------------


class StageClock:
    """Wraps the handler's steps so each call adds its CPU-seconds to its stage ("job" holds the
    working copy, detection and crops)."""

    def __init__(self, handler: Any, imaging: Any) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        for stage, owner, name in (("decode", imaging, "decode"), ("encode", imaging, "encode"),
                                   ("job", handler, "_job"), ("detection", handler.framer, "frames"),
                                   ("crops", handler, "_crops"), ("generator", handler, "generate"),
                                   ("picture", handler, "_picture")):
            setattr(owner, name, self._timed(stage, getattr(owner, name)))

    def _timed(self, stage: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            result, seconds = process_seconds(lambda: call(*args, **kwargs))
            self.seconds[stage] += seconds
            return result

        return timed

    def rows(self, total: float) -> dict[str, float]:
        """CPU-seconds by table row."""
        s = self.seconds
        rows = {k: s[k] for k in ("decode", "detection", "crops", "generator", "picture", "encode")}
        rows["working copy"] = s["job"] - s["detection"] - s["crops"]
        rows["rest"] = total - sum(s.values()) + s["detection"] + s["crops"]  # both inside "job"
        rows["total"] = total
        return rows


def detect_as(framer: Any, when: str) -> None:
    """Make `framer` (this tree's or an archive's PeopleFramer) detect faces as it did before, or as now."""
    framer.__dict__.pop("faces", None)
    if when == BEFORE:  # the whole pyramid from 20 px on the detection copy at once
        framer.faces = partial(type(framer).faces, framer, first_look=0)


def phone_photo() -> bytes:
    """A 12-megapixel JPEG as phones take them (4032 x 3024), one face: Grace Hopper's portrait enlarged."""
    ground = Image.new("RGB", (4032, 3024), (96, 110, 128))
    ground.paste(Image.open(FACES[-1]).convert("RGB").resize((1536, 1800), Image.LANCZOS), (1250, 600))
    out = io.BytesIO()
    ground.save(out, "JPEG", quality=90)
    return out.getvalue()


def bench_stages(archive: Path, rounds: int) -> None:
    """Median over rounds of the CPU ms per photo by stage: the handler as it was (whole JPEG decode,
    MTCNN's whole pyramid) against now, in turns."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="toonbot-cost-") as tmp:
        repacked = read_archive(with_payload(archive, Path(tmp) / "store"))
        handler, service = loader.load_service(repacked, loader.unpack(repacked, Path(tmp) / "cache"))
    if type(handler.framer).__name__ != "PeopleFramer":  # the archive's own framing module
        raise SystemExit(f"{archive.stem} detects no people's faces: pick a face style")
    imaging = type(handler).initialize.__globals__["imaging"]  # the archive's own modules
    clock = StageClock(handler, imaging)
    framer, whole = handler.framer, imaging.decode  # before: no reduced scale asked for
    headers = request_headers(None, "jpeg")
    sizes = ", ".join(sorted({"x".join(map(str, Image.open(p).size)) for p in FACES}))
    for title, photos in ((f"the {len(FACES)} photos bench/load.py sends ({sizes})", [p.read_bytes() for p in FACES]),
                          ("a 4032x3024 JPEG, one face (Grace Hopper enlarged)", [phone_photo()])):
        results: dict[str, dict[str, list[float]]] = {BEFORE: {}, NOW: {}}
        loader.predict(handler, service, [(photos[0], headers)])  # warm up
        for _ in range(rounds):
            for name, row in results.items():
                detect_as(framer, name)
                handler.__dict__.pop("_decode", None)
                if name == BEFORE:
                    handler._decode = whole
                clock.seconds = dict.fromkeys(STAGES, 0.0)
                _, total = process_seconds(lambda: [loader.predict(handler, service, [(p, headers)]) for p in photos])
                for key, seconds in clock.rows(total).items():
                    row.setdefault(key, []).append(seconds / len(photos))
        print(f"\nCPU ms per photo, one thread, {title}, {archive.stem}, median of {rounds} rounds:\n")
        print(f"| stage | {BEFORE} | {NOW} |\n|---|---|---|")
        for key, label in ROWS.items():
            cells = " | ".join(f"{1000 * statistics.median(results[c][key]):.1f}" for c in results)
            print(f"| {label} | {cells} |")


# --- detection --------------------------------------------------------------------


def pictures(folder: Path, count: int | None = None) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(folder.iterdir())[:count]]


def detection_sets() -> dict[str, list[Image.Image]]:
    """The pictures each candidate must agree on."""
    congress = pictures(PUBLIC / "pd_faces_congress_gray" / "all")
    faces = [Image.open(p).convert("RGB") for p in FACES]
    turned = [img.rotate(30 if i % 2 else -30, Image.BICUBIC, expand=True, fillcolor=(128, 128, 128))
              for i, img in enumerate(faces + congress[:40])]
    groups = [group_photo(n, w, columns=c) for n, w, c in
              ((3, 200, None), (6, 300, 3), (8, 60, 4), (12, 48, 4), (20, 100, 5), (20, 40, 5))]
    return {
        "tests/fixtures/faces": faces,
        "public-domain portraits": pictures(PUBLIC / "public_domain_faces" / "originals"),
        "congressional portraits": congress,
        "turned 30 degrees": turned,
        "group photos": groups,
        "no person (cats, horses)": pictures(DATASETS / "cat2dog" / "testA", 35)
        + pictures(DATASETS / "horse2zebra" / "testA", 35),
    }


def outcome(framer: framing.PeopleFramer, img: Image.Image) -> tuple[str, list[Box], float]:
    """What the handler would do ("draw", "too small", "none"), the boxes of the faces it would draw
    (all of them, before the MAX_FACES cut), and the CPU-seconds detection took."""
    faces, seconds = process_seconds(lambda: framer.faces(img))
    drawn = [f.box for f in faces if framing.face_size(f) >= framing.MIN_FACE]
    return ("draw" if drawn else "too small" if faces else "none"), drawn, seconds


def large_jpegs(count: int = 12) -> list[bytes]:
    """Phone-sized JPEGs (12-24 MP): 1-6 congressional portraits, 110-700 px wide, on an enlarged landscape."""
    rng = random.Random(0)
    portraits = sorted((PUBLIC / "pd_faces_congress_gray" / "all").iterdir())
    grounds = sorted((DATASETS / "horse2zebra" / "testB").iterdir())
    photos = []
    for k in range(count):
        width, height = rng.choice([(4032, 3024), (3024, 4032), (4000, 3000), (4624, 3472), (6000, 4000)])
        photo = Image.open(grounds[k]).convert("RGB").resize((width, height), Image.BICUBIC)
        for j in range(rng.randint(1, 6)):
            side = rng.randint(110, 700)
            face = Image.open(portraits[(6 * k + j) % len(portraits)]).convert("RGB")
            face = face.resize((side, side * 5 // 4), Image.LANCZOS)
            photo.paste(face, (rng.randrange(width - side), rng.randrange(height - side * 5 // 4)))
        out = io.BytesIO()
        photo.save(out, "JPEG", quality=88)
        photos.append(out.getvalue())
    return photos


def bench_large_decode(framer: framing.PeopleFramer) -> None:
    """The faces drawn from a large JPEG decoded whole (before) and at reduced scale (now)."""
    kept, drawn, ious = 0, 0, []
    for data in large_jpegs():
        before = payload._shrunk(imaging.decode(data), payload.GROUP_SIDE)
        now = payload._shrunk(imaging.decode(data, min_long=payload.DECODE_SIDE), payload.GROUP_SIDE)
        scale = before.width / now.width
        boxes_b, boxes_n = outcome(framer, before)[1], outcome(framer, now)[1]
        matched = [max((iou(a, tuple(v * scale for v in b)) for b in boxes_n), default=0.0) for a in boxes_b]
        drawn, kept, ious = drawn + len(boxes_b), kept + sum(m > 0.5 for m in matched), ious + matched
    print(f"\nLarge JPEGs ({len(large_jpegs())}, 12-24 MP, portraits pasted on enlarged landscapes), decoded whole "
          f"then shrunk to 2,048 px ({BEFORE}) or at reduced scale ({NOW}): {kept} of the {drawn} faces drawn "
          f"before are drawn now (IoU > 0.5), box IoU worst {min(ious):.3f}, median {statistics.median(ious):.3f}")


def bench_centre_crops(draw_size: int = 96) -> None:
    """A centre-crop style's square from a JPEG decoded whole, and at reduced scale keeping 2x or
    DECODE_MARGIN x the square on the short side: PSNR, worst over the photos that get reduced."""
    photos = large_jpegs() + [p.read_bytes() for p in sorted((PUBLIC / "public_domain_faces" / "originals").iterdir())]

    def square(img: Image.Image) -> np.ndarray:
        return np.asarray(framing.crop(img, framing.centre_square(img), draw_size), dtype=np.float64)

    for margin in sorted({2, payload.DECODE_MARGIN}):
        worst, reduced = math.inf, 0
        for data in photos:
            whole, small = imaging.decode(data), imaging.decode(data, min_short=margin * draw_size)
            if small.size != whole.size:
                reduced += 1
                error = np.mean((square(whole) - square(small)) ** 2)
                worst = min(worst, 10 * math.log10(255**2 / error) if error else math.inf)
        print(f"centre crop at {draw_size} px, short side kept {margin} x: {reduced} of {len(photos)} photos "
              f"decoded at reduced scale, worst PSNR {worst:.1f} dB against the whole decode")


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def bench_detection() -> None:
    """Before and now on every set: agreement, and CPU ms per picture."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    framers = {BEFORE: framing.PeopleFramer(), NOW: framing.PeopleFramer()}
    for when, framer in framers.items():
        detect_as(framer, when)
    print(f"\nFace detection, {BEFORE} (the whole pyramid from 20 px on the 1,024 px copy) against {NOW} "
          f"(faces of {framing.FIRST_LOOK * framing.MIN_FACE:.0f} px or more in the working picture first), "
          "one thread:\n")
    print("| pictures | same outcome | faces drawn | worst / median box IoU | CPU ms before | CPU ms now |")
    print("|---|---|---|---|---|---|")
    for name, images in detection_sets().items():
        same, drawn, ious, before_s, now_s = 0, 0, [], 0.0, 0.0
        for img in images:
            kind_b, boxes_b, sec_b = outcome(framers[BEFORE], img)
            kind_n, boxes_n, sec_n = outcome(framers[NOW], img)
            before_s, now_s = before_s + sec_b, now_s + sec_n
            drawn += len(boxes_b)
            if kind_b == kind_n and len(boxes_b) == len(boxes_n):
                same += 1
                ious += [max((iou(a, b) for b in boxes_n), default=0.0) for a in boxes_b]
            else:
                print(f"  {name}: {kind_b} ({len(boxes_b)}) before, {kind_n} ({len(boxes_n)}) now")
        agreement = f"{min(ious):.3f} / {statistics.median(ious):.3f}" if ious else "-"
        print(f"| {name} ({len(images)}) | {same} | {drawn} | {agreement} | "
              f"{1000 * before_s / len(images):.1f} | {1000 * now_s / len(images):.1f} |", flush=True)
    bench_large_decode(framers[NOW])
    bench_centre_crops()
    sizes = [f.size / framing.face_size(f) for img in detection_sets()["congressional portraits"]
             for f in framers[NOW].faces(img)]
    print(f"\nbox side / face size (2.2 x eye-to-mouth), congressional portraits: min {min(sizes):.2f}, "
          f"median {np.median(sizes):.2f} (the first look starts at {framing.FIRST_LOOK} x {framing.MIN_FACE} px)")


# --- lanes ------------------------------------------------------------------------


async def bursts(archive: Path, users: int, rounds: int, cores: int) -> None:
    """USERS photos at once, candidates in turns: CPU-seconds per photo and the burst's wall time."""
    cv2.setNumThreads(-1)  # OpenCV's own default, as in a server (the other sections set one thread)
    photos = [p.read_bytes() for p in FACES]
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="toonbot-lanes-") as tmp:
        store = Path(tmp) / "store"
        with_payload(archive, store)
        candidates = {f"1 lane x {cores} threads (before)": (1, cores),
                      f"{cores} lanes x 1 thread (now)": (cores, 1)}
        engines = {}
        for name, (lanes, threads) in candidates.items():
            torch.set_num_threads(threads)
            engines[name] = EmbeddedEngine(store, cache_dir=Path(tmp) / "cache", lanes=lanes)
            await engines[name].stylize(archive.stem, photos[0])  # loads the style
        try:
            for _ in range(rounds):
                for name, engine in engines.items():
                    torch.set_num_threads(candidates[name][1])
                    cpu, wall = time.process_time(), time.perf_counter()
                    await asyncio.gather(*(engine.stylize(archive.stem, photos[i % len(photos)])
                                           for i in range(users)))
                    results.setdefault(name, []).append(
                        ((time.process_time() - cpu) / users, time.perf_counter() - wall))
        finally:
            await asyncio.gather(*(e.close() for e in engines.values()))
    print(f"\n{users} photos at once through the embedded engine ({archive.stem}), median of {rounds} bursts:\n")
    print("| lanes x torch threads | CPU ms per photo | burst wall s (idle machine only) |")
    print("|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {1000 * statistics.median(r[0] for r in runs):.1f} | "
              f"{statistics.median(r[1] for r in runs):.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", default="selfie2anime", help="a face style of model_store/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=30, help="photos per burst (lanes)")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)), help="lanes: threads to share")
    parser.add_argument("--only", choices=("stages", "detection", "lanes"))
    args = parser.parse_args()
    archive = ROOT / "model_store" / f"{args.style}.mar"
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.1f} at start (CPU-seconds hold on a shared machine, wall time does not)")
    if args.only in (None, "stages"):
        bench_stages(archive, args.rounds)
    if args.only in (None, "detection"):
        bench_detection()
    if args.only in (None, "lanes"):
        asyncio.run(bursts(archive, args.users, args.rounds, args.cores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
