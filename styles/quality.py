"""quality.json: what an archive's evaluation found on its pair's test split, and what it means for a deploy.

`python -m training evaluate` writes it into the `.mar`; deploys compare a
version with the live one (`worse_than`), and the front ends mark a style
experimental when its live version falls below its catalogue bar
(`below_bar`). Every figure carries its own spread (the std the evaluator
estimated), so a difference counts only when it is larger than the noise.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from styles import catalog
from styles.catalog import Bar

QUALITY = "quality.json"
MARGIN_SPREADS = 2.0  # a version is worse when it trails by more than this many combined spreads


@dataclass(frozen=True)
class Figure:
    """A measured figure and its spread (std over half-samples of the test split)."""

    value: float
    spread: float


@dataclass(frozen=True)
class Quality:
    """One archive's evaluation. `split` names the test folder, `split_id` its pictures and the judge:
    two evaluations compare only when both match."""

    pair: str
    split: str
    split_id: str
    offered: int  # test pictures handed to the style
    drawn: Figure  # share of them it drew (the rest were refused, e.g. no face found)
    judged: Figure  # share of drawn pictures the judge takes for the target domain
    kid: Figure  # KID x100 to real target pictures on the judge's features; lower is better
    sharpness: Figure  # Laplacian variance relative to real target pictures; 1.0 is as crisp
    untranslated_judged: float  # the test pictures as they were: where the style started from
    untranslated_kid: float
    seconds_per_picture: float
    judge_accuracy: float
    date: str
    machine: str

    def to_json(self) -> str:
        """The file's text."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Quality:
        """Parse quality.json's fields; KeyError/TypeError for a file that is not one."""
        figures = {k: Figure(**data[k]) for k in ("drawn", "judged", "kid", "sharpness")}
        return cls(**{**data, **figures})

    def summary(self) -> str:
        """One line: the figures people read, with their spreads."""
        return (f"judged {self.judged.value:.2f}±{self.judged.spread:.2f}, "
                f"KID {self.kid.value:.1f}±{self.kid.spread:.1f}, "
                f"sharpness {self.sharpness.value:.2f}±{self.sharpness.spread:.2f}, "
                f"drawn {self.drawn.value:.0%}, {self.seconds_per_picture:.2f} s/picture")


def read_quality(path: Path) -> Quality | None:
    """The archive's quality.json; None when it has none (or an unreadable one)."""
    try:
        with zipfile.ZipFile(path) as z:
            if QUALITY not in z.namelist():
                return None
            return Quality.from_dict(json.loads(z.read(QUALITY)))
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None


def write_quality(path: Path, quality: Quality) -> None:
    """Store quality.json in the archive, replacing an older one (the archive is rewritten, then swapped in)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
            for item in src.infolist():
                if item.filename != QUALITY:
                    dst.writestr(item, src.read(item.filename))
            dst.writestr(QUALITY, quality.to_json(), compress_type=zipfile.ZIP_DEFLATED)
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _margin(a: Figure, b: Figure) -> float:
    return MARGIN_SPREADS * math.hypot(a.spread, b.spread)


def worse_than(new: Quality, live: Quality) -> list[str]:
    """How `new` measures worse than `live`, one phrase per figure that trails by more than the margin;
    [] when it does not (or when the two were measured on different splits or judges: see `comparable`)."""
    if not comparable(new, live):
        return []
    found = []
    for name, higher_is_better in (("drawn", True), ("judged", True), ("kid", False)):
        a, b = getattr(new, name), getattr(live, name)
        by = (b.value - a.value) if higher_is_better else (a.value - b.value)
        if by > _margin(a, b):
            found.append(f"{name} {a.value:.2f} vs {b.value:.2f} (worse by {by:.2f}, margin {_margin(a, b):.2f})")
    # Sharpness: nearer 1.0 (as crisp as real pictures) is better; noise can be "sharper" than real.
    a, b = new.sharpness, live.sharpness
    by = abs(math.log(max(a.value, 1e-6))) - abs(math.log(max(b.value, 1e-6)))
    margin = MARGIN_SPREADS * math.hypot(a.spread / max(a.value, 1e-6), b.spread / max(b.value, 1e-6))
    if by > margin:
        found.append(f"sharpness {a.value:.2f} vs {b.value:.2f} (further from 1.0 by a factor {math.exp(by):.2f})")
    return found


def comparable(new: Quality, live: Quality) -> bool:
    """Measured on the same test pictures with the same judge."""
    return new.split_id == live.split_id


@dataclass(frozen=True)
class Shortfall:
    """Which figure of a live version misses its style's bar: "judged", "kid" or "sharpness"."""

    figure: str
    value: float
    bar: float


def below_bar(quality: Quality | None, bar: Bar) -> Shortfall | None:
    """Why a live version is experimental, or None when it meets its bar or was never measured."""
    if quality is None:
        return None
    if quality.judged.value < bar.min_judged:
        return Shortfall("judged", quality.judged.value, bar.min_judged)
    if bar.max_kid is not None and quality.kid.value > bar.max_kid:
        return Shortfall("kid", quality.kid.value, bar.max_kid)
    if quality.sharpness.value < bar.min_sharpness:
        return Shortfall("sharpness", quality.sharpness.value, bar.min_sharpness)
    return None


def experimental(store: Path, style: str, version: str) -> Shortfall | None:
    """Whether the model store's `style` `version` falls below the style's catalogue bar."""
    from styles.archive import find  # styles.archive imports torch: only callers that list styles pay for it

    archive = find(store, style, version)
    return below_bar(read_quality(archive.path), catalog.bar(style)) if archive is not None else None
