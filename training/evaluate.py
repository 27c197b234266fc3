"""`python -m training evaluate ARCHIVE...`: measure a style on its pair's test split and store it as quality.json.

The archive's own handler (eager generator, as a TorchServe worker would load
it) draws every test picture of the source domain; the pair's judge
(`training.judge_net`) says which look like the target domain and gives the
features KID compares with the real target test pictures; sharpness compares
Laplacian variances with them (`training.sharpness`). Every figure gets its
spread (`training.spread`), so a deploy can tell a real difference from noise
(`styles.quality.worse_than`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from config import get_settings
from styles import catalog, loader
from styles.archive import read_archive
from styles.quality import Figure, Quality, write_quality
from training import kid, sharpness
from training.data import list_images, open_rgb
from training.hardware import cpu_name
from training.judge import DEFAULT_BATCH, DEFAULT_LR, DEFAULT_STEPS, train_judge
from training.judge_net import JUDGES, Judge, judge_path, load_judge, save_judge
from training.spread import half_sample_std

log = logging.getLogger(__name__)


def direction(style: str, datasets: Path) -> tuple[Path, str, str]:
    """(pair's dataset folder, source split, target split) of a style: a2b draws testA as B, b2a testB as A."""
    a2b, b2a = catalog.split_pair(style)
    if (datasets / a2b).is_dir():
        return datasets / a2b, "testA", "testB"
    if (datasets / b2a).is_dir():
        return datasets / b2a, "testB", "testA"
    raise FileNotFoundError(f"no dataset for {style} in {datasets}: expected {a2b}/ or {b2a}/")


def split_id(pictures: Sequence[Path], judge_file: Path) -> str:
    """Names the test pictures and the judge: evaluations compare only when they share it."""
    digest = hashlib.sha256(judge_file.read_bytes())
    for p in pictures:
        digest.update(f"{p.parent.name}/{p.name}\n".encode())
    return digest.hexdigest()[:16]


def draw_all(archive_path: Path, pictures: Sequence[Path]) -> tuple[list[Image.Image | None], float]:
    """Each picture through the archive's handler (None where it refused); mean seconds per picture."""
    archive = read_archive(archive_path)
    drawn: list[Image.Image | None] = []
    seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="toonbot-evaluate-") as tmp:
        handler, service = loader.load_eager(archive, Path(tmp))
        for path in pictures:
            started = time.perf_counter()
            (answer,) = loader.predict(handler, service, [(path.read_bytes(), {"X-Format": "png"})])
            seconds += time.perf_counter() - started
            drawn.append(Image.open(io.BytesIO(answer.body)).convert("RGB") if answer.status == 200 else None)
    return drawn, seconds / max(len(pictures), 1)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x))


def measure(
    archive_path: Path, datasets: Path, *, judges: Path = JUDGES, limit: int | None = None
) -> Quality:
    """Draw the test split with the archive and measure what came out (nothing is written)."""
    style = read_archive(archive_path).name
    data, source, target = direction(style, datasets)
    judge_file = judge_path(data.name, judges)
    judge: Judge = load_judge(judge_file)
    pictures = list_images(data / source)[:limit]
    outputs, seconds = draw_all(archive_path, pictures)
    drawn = [im for im in outputs if im is not None]
    if len(drawn) < 2:
        raise ValueError(f"{style} drew {len(drawn)} of {len(pictures)} test pictures: nothing to measure")
    real = [open_rgb(p) for p in list_images(data / target)]
    p_b, feats = judge.score(drawn)
    _, real_feats = judge.score(real)
    untouched_p_b, untouched_feats = judge.score([open_rgb(p) for p in pictures])

    def on_target(p: np.ndarray) -> np.ndarray:
        return (p > 0.5) if target == "testB" else (p < 0.5)

    hits = on_target(p_b)
    ok = np.array([im is not None for im in outputs], dtype=np.float64)
    lap = np.array([sharpness.laplacian_variance(im) for im in drawn])
    real_lap = np.array([sharpness.laplacian_variance(im) for im in real])
    return Quality(
        pair=data.name, split=source, split_id=split_id(pictures, judge_file), offered=len(pictures),
        drawn=Figure(_mean(ok), half_sample_std(_mean, [ok])),
        judged=Figure(_mean(hits), half_sample_std(_mean, [hits.astype(np.float64)])),
        kid=Figure(kid.kid100(feats, real_feats), half_sample_std(kid.kid100, [feats, real_feats])),
        sharpness=Figure(sharpness.relative(lap, real_lap), half_sample_std(sharpness.relative, [lap, real_lap])),
        untranslated_judged=_mean(on_target(untouched_p_b)), untranslated_kid=kid.kid100(untouched_feats, real_feats),
        seconds_per_picture=round(seconds, 4), judge_accuracy=float(judge.meta["test_accuracy"]),
        date=date.today().isoformat(), machine=cpu_name(),
    )


def evaluate_archive(archive_path: Path, datasets: Path, *, judges: Path = JUDGES, limit: int | None = None) -> Quality:
    """Measure the archive and store the result in it as quality.json."""
    quality = measure(archive_path, datasets, judges=judges, limit=limit)
    write_quality(archive_path, quality)
    return quality


def ensure_judge(style: str, datasets: Path, judges: Path = JUDGES) -> Path:
    """The judge of the style's pair, trained first (minutes, `training.judge` defaults) if there is none."""
    data, _, _ = direction(style, datasets)
    path = judge_path(data.name, judges)
    if not path.is_file():
        log.info("no judge for %s yet: training one from %s", data.name, data)
        net, meta = train_judge(data, steps=DEFAULT_STEPS, per_domain=DEFAULT_BATCH // 2, seed=0, lr=DEFAULT_LR)
        save_judge(net, meta, path)
    return path


def evaluate_exported(paths: Sequence[Path], datasets: Path | None) -> None:
    """After an export: measure each archive when its pair's test split and judge are at hand, else say why not."""
    for path in paths:
        try:
            if datasets is None:
                raise FileNotFoundError("no --datasets or DATASETS_DIR")
            quality = evaluate_archive(path, datasets)
        except (FileNotFoundError, ValueError) as error:
            print(f"{path.name}: not measured ({error}); deploys will warn. Later: python -m training evaluate {path}")
            continue
        print(f"{path.name}: {quality.summary()}")


def datasets_dir(given: Path | None) -> Path | None:
    """--datasets, else DATASETS_DIR; None when neither says where the datasets are."""
    return given or get_settings().datasets_dir


def run(args: argparse.Namespace) -> int:
    """Evaluate each archive and print its figures."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    datasets = datasets_dir(args.datasets)
    if datasets is None:
        raise SystemExit("evaluate needs --datasets DIR or DATASETS_DIR (folders DIR/<pair>/testA ...)")
    for path in args.archives:
        quality = evaluate_archive(path, datasets, judges=args.judges, limit=args.limit)
        print(f"{path.name}: {quality.summary()} on {quality.offered} {quality.pair}/{quality.split} pictures")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `evaluate`."""
    p = sub.add_parser("evaluate", help="measure archives on their pair's test split (writes quality.json)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("archives", nargs="+", type=Path, help=".mar files")
    p.add_argument("--datasets", type=Path, default=None, help="dataset root holding <pair>/testA ... "
                                                               "(default: $DATASETS_DIR)")
    p.add_argument("--judges", type=Path, default=JUDGES, help="folder of <pair>.pt judges (default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="draw only the first N test pictures (for a quick look)")
    p.set_defaults(func=run)
