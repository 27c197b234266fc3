"""One factory for the runtime a process talks to: TorchServe or the embedded engine.

Kept out of `serving/__init__.py` so that importing one serving module (the
catalogue, the archive reader) does not pull in aiohttp and TorchServe.
"""

from __future__ import annotations

from pathlib import Path

from serving.api import Stylizer
from serving.client import TorchServeClient
from serving.engine import EmbeddedEngine


def open_stylizer(
    torchserve_url: str | None,
    model_store: Path,
    token: str | None,
    *,
    management_url: str | None = None,
    management_token: str | None = None,
) -> Stylizer:
    """TorchServe when a URL is given, else the embedded engine over the model store."""
    if torchserve_url:
        return TorchServeClient(
            torchserve_url, token, management_url=management_url, management_token=management_token
        )
    return EmbeddedEngine(Path(model_store))
