"""Each archive's preview: a public-domain picture before and after the style, stored in it as preview.jpg.

Drawn at export by the archive's own handler, loaded as a TorchServe worker
loads it (`styles.loader`), so the preview shows what a request gets: the same
framing, the same generator, the same before|after picture as `compare`.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from styles import catalog, loader
from styles.archive import PREVIEW, Archive, read_archive

if TYPE_CHECKING:
    from ts.service import Service
    from ts.torch_handler.base_handler import BaseHandler

class _Drawer:
    """The handlers of the archives being previewed, each loaded once."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.loaded: dict[str, tuple[BaseHandler, Service]] = {}

    def draw(self, archive: Archive, picture: bytes, *, compare: bool) -> bytes:
        """`picture` through the archive's handler, as a JPEG at the size the model draws."""
        if archive.name not in self.loaded:
            self.loaded[archive.name] = loader.load_eager(archive, self.cache)
        headers = {"X-Format": "jpeg", **({"X-Compare": "1"} if compare else {})}
        (answer,) = loader.predict(*self.loaded[archive.name], [(picture, headers)])
        if answer.status != 200:
            raise ValueError(f"{archive.name} could not draw its preview: {answer.body[:200]!r}")
        return answer.body


def add_previews(paths: Sequence[Path]) -> None:
    """Draw each archive's preview from its catalogue picture and store it in the archive.

    A style previewed `through` another (no public-domain picture of its subject) draws that
    style's picture of it, so both directions of a pair are previewed together, as export writes them.
    """
    archives = {a.name: a for a in map(read_archive, paths)}
    order = sorted(archives.values(), key=lambda a: catalog.preview(a.name).through is not None)
    with tempfile.TemporaryDirectory(prefix="toonbot-preview-") as tmp:
        drawer = _Drawer(Path(tmp))
        for archive in order:
            source = catalog.preview(archive.name)
            picture = (catalog.PREVIEW_PICTURES / source.picture).read_bytes()
            if source.through is not None:
                if source.through not in archives:
                    raise ValueError(f"{archive.name}'s preview is {source.through}'s drawing: export them together")
                picture = drawer.draw(archives[source.through], picture, compare=False)
            preview = drawer.draw(archive, picture, compare=True)
            with zipfile.ZipFile(archive.path, "a") as z:
                z.writestr(PREVIEW, preview)
