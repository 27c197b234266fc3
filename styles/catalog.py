"""Style names and their catalogue entries (title, one-line description, needs a face) and previews.

The exporter writes an entry into each `.mar`'s model-config.yaml, and draws
the style's preview from the picture named here into it; from then on the
archive, not this table, is what the bots read.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

# Names reach file names (<style>-<version>.mar, datasets/<pair>/), URLs and
# database columns: one short word, never a path. TorchServe model names allow
# the same characters.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
VERSION = re.compile(r"[A-Za-z0-9]+(?:[._+-][A-Za-z0-9]+){0,7}")
MAX_VERSION = 32
SHOWN_MAX = 40  # how much of a name a reply repeats


@dataclass(frozen=True)
class Entry:
    """What a user is told about a style, and how its input is framed."""

    title: str
    description: str
    needs_face: bool


KNOWN: dict[str, Entry] = {
    "selfie2anime": Entry("Selfie to anime", "Turns a selfie into an anime portrait.", True),
    # Anime faces: OpenCV's photo face detector misses most of them; the training
    # data is centred anime faces, so a centre crop frames them like it.
    "anime2selfie": Entry("Anime to selfie", "Turns a centred anime face into a photo-like portrait.", False),
    "cat2dog": Entry("Cat to dog", "Turns a cat's face into a dog's.", False),
    "dog2cat": Entry("Dog to cat", "Turns a dog's face into a cat's.", False),
    "horse2zebra": Entry("Horse to zebra", "Paints zebra stripes on horses.", False),
    "zebra2horse": Entry("Zebra to horse", "Turns zebras into horses.", False),
    "photo2vangogh": Entry("Photo to Van Gogh", "Repaints a landscape photo in Van Gogh's style.", False),
    "vangogh2photo": Entry("Van Gogh to photo", "Turns a Van Gogh painting into a photo-like picture.", False),
}


@dataclass(frozen=True)
class Bar:
    """What a style's live version must reach on its test split (`styles.quality`) not to be called experimental:
    the share of pictures its pair's judge takes for the target domain, at most this KID x100, and at least
    this sharpness (relative to real target pictures)."""

    min_judged: float = 0.5
    max_kid: float | None = None
    min_sharpness: float = 0.0


# Thresholds per style, on its own pair's judge (training/judges/, 94-99 % accurate on real pictures).
# A stripe painter must convince the judge nearly as often as real zebras do (0.93 of them) and come as
# near real zebras as the working styles come to their targets (KID 2-25): the 96 px horse2zebra painted
# a blurred checkerboard the judge took for stripes two times in three (judged 0.67-0.72, KID 90-94); the
# 128 px one of stretch 6 paints stripes (0.95, KID 44).
BARS: dict[str, Bar] = {
    "horse2zebra": Bar(min_judged=0.8, max_kid=50.0),
}


def bar(style: str) -> Bar:
    """The style's bar; styles without their own get the default (half the pictures judged as the target)."""
    return BARS.get(style, Bar())


# Preview pictures: public domain, never dataset images. grace_hopper.jpg (US Navy photo, via
# scikit-image), chelsea.jpg (scikit-image's cat, CC0), astronaut.jpg (Eileen Collins, NASA, via scikit-image).
PREVIEW_PICTURES = Path(__file__).resolve().parent / "previews"


@dataclass(frozen=True)
class Preview:
    """What a style's preview shows: a picture from `PREVIEW_PICTURES`, first drawn by the style
    `through` where no public-domain picture of the style's subject is at hand."""

    picture: str
    through: str | None = None


PREVIEWS: dict[str, Preview] = {
    "selfie2anime": Preview("grace_hopper.jpg"),
    "anime2selfie": Preview("grace_hopper.jpg", through="selfie2anime"),  # no public-domain anime face
    "cat2dog": Preview("chelsea.jpg"),
    "dog2cat": Preview("chelsea.jpg", through="cat2dog"),  # no public-domain dog
    "horse2zebra": Preview("chelsea.jpg"),  # no public-domain horse: stripes on a cat's coat instead
    "zebra2horse": Preview("chelsea.jpg", through="horse2zebra"),
    "photo2vangogh": Preview("astronaut.jpg"),  # a photo, though not a landscape
    "vangogh2photo": Preview("astronaut.jpg", through="photo2vangogh"),  # no Van Gogh at hand
}


def preview(style: str) -> Preview:
    """The preview source of a style; styles the table does not know show a portrait (face styles need one)."""
    return PREVIEWS.get(style, Preview("grace_hopper.jpg"))


def shown(text: str) -> str:
    """`text` as safe to repeat back to a user: no control characters, at most `SHOWN_MAX` long."""
    kept = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cs"))
    return kept if len(kept) <= SHOWN_MAX else kept[: SHOWN_MAX - 1] + "…"


def check_name(name: str, what: str = "style") -> str:
    """`name` if it is a valid style or pair name (letters, digits, _ and -, up to 64); else ValueError."""
    if not NAME.fullmatch(name):
        raise ValueError(f"{shown(name)!r} is not a {what} name: use up to 64 letters, digits, '_' or '-'")
    return name


def check_version(version: str) -> str:
    """`version` if it is a valid version such as 1.0 or 2.1-rc1 (up to 32 characters); else ValueError."""
    if len(version) > MAX_VERSION or not VERSION.fullmatch(version):
        raise ValueError(f"{shown(version)!r} is not a version: use numbers and letters such as 1.0 or 2.1")
    return version


def check_job(pair: str, from_version: str | None) -> tuple[str, str]:
    """A retraining request's names, checked once for the bots, the CLI and the worker: its two styles."""
    if from_version is not None:
        check_version(from_version)
    return split_pair(pair)


def split_pair(name: str) -> tuple[str, str]:
    """A training run's "a2b" name -> its two style names ("a2b", "b2a"); ValueError for a bad name."""
    check_name(name, "pair")
    parts = name.split("2")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"cannot split {name!r} into two domains at a single '2'; name the styles explicitly")
    a, b = parts
    return f"{a}2{b}", f"{b}2{a}"


def entry(style: str) -> Entry:
    """The catalogue entry of a style; unknown names get a generic one from the name."""
    if style in KNOWN:
        return KNOWN[style]
    source, _, target = style.partition("2")
    if not target:
        return Entry(style, f"The {style} style.", False)
    return Entry(
        f"{source.capitalize()} to {target}",
        f"Turns a {source} picture into a {target} picture.",
        False,
    )
