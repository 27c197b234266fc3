"""Style names and their catalogue entries (title, one-line description, needs a face).

The exporter writes an entry into each `.mar`'s model-config.yaml; from then
on the archive, not this table, is what the bots read.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def split_pair(name: str) -> tuple[str, str]:
    """A training run's "a2b" name -> its two style names ("a2b", "b2a")."""
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
