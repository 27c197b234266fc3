"""An in-memory `serving.api.Stylizer` for the fast test lane: no torch, no archive, no worker.

It reads and writes pictures with the handler's own `imaging` module, so bad
input gets the very words (and exceptions) the real runtimes give, and it
honours the requested size and format; instead of a generator it draws a
deterministic picture (the photo, square-cropped and posterised), and each
style's preview is that drawing of its catalogue picture. It also
answers the `Management` calls, so the admin side of a core can sit on it.
Tests that exist to check the engine or TorchServe use those, not this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from PIL import Image, ImageOps

from db.models import ServingRuntime
from ops.management import DeployError, StyleVersions
from serving import replies
from serving.api import BadInput, ImageFormat, StyleInfo, Stylized, TooLarge
from styles import catalog
from styles.payload import imaging

DRAW_SIDE = 32  # what the tiny test archives draw at (their training size)


class MemoryStylizer:
    """`Stylizer` (and `Management`) over a fixed list of catalogue styles."""

    runtime: ServingRuntime = "embedded"  # in process, as far as the deployments log is concerned

    def __init__(
        self, names: Iterable[str] = ("anime2selfie", "selfie2anime"), *, version: str = "1.0", delay_s: float = 0.0
    ) -> None:
        self._styles = {
            name: StyleInfo(name, entry.title, entry.description, entry.needs_face, version, _preview(name))
            for name in sorted(names)
            for entry in [catalog.KNOWN[name]]
        }
        self.requests = 0  # stylize calls answered, for tests that count them
        self.delay_s = delay_s  # each picture takes at least this long (e.g. for a clip's progress to show)

    async def stylize(
        self, style: str, image: bytes, *, size: int | None = None, fmt: ImageFormat = "jpeg",
        follow: str | None = None, compare: bool = False, upscale: bool = True,
    ) -> Stylized:
        """A posterised square of the photo (with `compare`, the square it came from on its
        left), checked and encoded as the handler would."""
        info = self._styles.get(style)
        if info is None:
            raise replies.unknown_style(style)
        try:
            options = imaging.parse_options(size, fmt, compare)
            picture = imaging.decode(image)
        except imaging.Rejected as rejected:
            raise (TooLarge if rejected.status == 413 else BadInput)(rejected.message, code=rejected.kind) from None
        drawn = _drawn(picture, options.size or DRAW_SIDE, options.compare)
        await asyncio.sleep(self.delay_s)  # a real runtime always yields to the event loop
        self.requests += 1
        return Stylized(
            imaging.encode(drawn, options.fmt), style, info.version, options.content_type, int(info.needs_face)
        )

    async def styles(self) -> list[StyleInfo]:
        """The styles given at construction, sorted by name."""
        return list(self._styles.values())

    async def health(self) -> bool:
        """Always ready."""
        return True

    async def versions(self) -> list[StyleVersions]:
        """Each style with its one version, as `Management` reports them."""
        return [StyleVersions(s.name, (s.version,), s.version) for s in self._styles.values()]

    async def make_default(self, archive: object) -> None:
        """Deploys are the real runtimes' business (tests/test_deploy.py): refused, changing nothing."""
        raise DeployError("the in-memory stylizer has one version per style")

    async def close(self) -> None:
        """Nothing to release."""


def _drawn(picture: Image.Image, side: int, compare: bool) -> Image.Image:
    """The fake's drawing: a posterised square of `picture`, with `compare` the square on its left."""
    square = ImageOps.fit(picture, (side, side))
    drawn = ImageOps.posterize(square, 2)
    return imaging.side_by_side(square, drawn) if compare else drawn


def _preview(style: str) -> bytes:
    """The style's preview, as the fake draws: its catalogue picture before | after."""
    with Image.open(catalog.PREVIEW_PICTURES / catalog.preview(style).picture) as picture:
        return imaging.encode(_drawn(picture.convert("RGB"), DRAW_SIDE, True), "jpeg")
