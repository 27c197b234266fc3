"""What the bots need from serving: one interface over TorchServe and the embedded engine.

Both `serving.client.TorchServeClient` and `serving.engine.EmbeddedEngine`
implement `Stylizer`; the bots only ever see this module's names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from styles.quality import Shortfall

ImageFormat = Literal["jpeg", "png", "webp"]

# The handler's reply headers (styles/payload/handler.py sets them), read alike by both runtimes.
FACES_HEADER = "X-Faces"  # how many faces were drawn
FRAMES_HEADER = "X-Frames"  # where they were framed, for a clip's next frame to follow


def request_headers(
    size: int | None, fmt: str, follow: str | None = None, compare: bool = False, upscale: bool = True
) -> dict[str, str]:
    """One request's options as the handler reads them (TorchServe passes no query string)."""
    headers = {"X-Format": fmt}
    if not upscale:
        headers["X-Upscale"] = "0"
    if size is not None:
        headers["X-Size"] = str(size)
    if follow is not None:
        headers["X-Follow"] = follow
    if compare:
        headers["X-Compare"] = "1"
    return headers


def faces_drawn(headers: Mapping[str, str]) -> int | None:
    """The handler's X-Faces count, where it gave one."""
    value = headers.get(FACES_HEADER)
    return int(value) if value is not None and value.isdigit() else None


@dataclass(frozen=True)
class StyleInfo:
    """One deployed style, as its `.mar`'s model-config.yaml describes it."""

    name: str  # TorchServe model name, e.g. "selfie2anime"
    title: str  # e.g. "Selfie to anime"
    description: str  # one line for /styles
    needs_face: bool
    version: str  # default model version, e.g. "1.0"
    # The style on a public-domain picture, before | after, as a JPEG (drawn at export);
    # None for an archive exported before previews.
    preview: bytes | None = field(default=None, repr=False)
    # Why the live version counts as experimental (below its catalogue bar on its test split), else None.
    experimental: Shortfall | None = None
    # The side of a square reply by default (the generator's, times its upscaler's scale); None: not said.
    output_size: int | None = None


class StylizeError(Exception):
    """Base of every failure a user can be told about; `message` is for the user."""

    kind = "error"

    def __init__(
        self, message: str = "", *, code: str | None = None, params: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        # What exactly was refused (the handler's JSON "error", e.g. "too_small") and the values in
        # `message`: the bots word it again in the user's language (bots/messages.py, REFUSALS).
        self.code = code or self.kind
        self.params = dict(params or {})


class BadInput(StylizeError):
    """Not an image, truncated, too big or too small (HTTP 4xx from the handler)."""

    kind = "bad_input"


class TooLarge(BadInput):
    """Too many pixels (or bytes) to draw, told from its headers before it is decoded (HTTP 413)."""

    kind = "too_big"


class NoFace(StylizeError):
    """A face style found no face in the photo."""

    kind = "no_face"


class UnknownStyle(StylizeError):
    """No deployed model has that name."""

    kind = "unknown_style"


class Overloaded(StylizeError):
    """The model is busy (HTTP 503 after retries, or the in-process queue is full)."""

    kind = "overloaded"


class Unavailable(StylizeError):
    """The model server cannot be reached at all."""

    kind = "unavailable"


@dataclass(frozen=True)
class Stylized:
    """A finished translation."""

    image: bytes  # encoded in the requested format
    style: str
    version: str  # the model version that answered
    content_type: str  # e.g. "image/jpeg"
    faces: int | None = None  # faces drawn by a face style; None where the runtime did not say
    frames: str | None = None  # where the faces were framed (X-Frames): a clip's next frame follows them


class Stylizer(Protocol):
    """The one interface the bots use, whichever runtime answers."""

    async def stylize(
        self, style: str, image: bytes, *, size: int | None = None, fmt: ImageFormat = "jpeg",
        follow: str | None = None, compare: bool = False, upscale: bool = True,
    ) -> Stylized:
        """Translate one image; raises a `StylizeError` subclass the user can be told about.

        `follow`: the previous frame's `Stylized.frames`, when `image` is a clip's next frame.
        `upscale`: False skips the style's learned upscaler (a clip's frames: its time is per frame).
        `compare`: the original (as the model saw it) on the left of the result, in one picture.
        """
        ...

    async def styles(self) -> list[StyleInfo]:
        """The styles deployed now, sorted by name."""
        ...

    async def health(self) -> bool:
        """True when the runtime can answer requests."""
        ...

    async def close(self) -> None:
        """Release sessions, threads and workers."""
        ...
