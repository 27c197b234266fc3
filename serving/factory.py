"""One factory for the runtime a process talks to: TorchServe or the embedded engine.

Every process builds its stylizer here from the one `Settings` (the bots,
`python -m serving`, `python -m ops`); `ops.management.open_management` adds
the deploy side over the same runtime. Kept out of `serving/__init__.py` so
that importing one serving module does not pull in aiohttp and TorchServe.
"""

from __future__ import annotations

from config import Settings, reveal
from serving.api import Stylizer
from serving.client import TorchServeClient
from serving.engine import EmbeddedEngine


def open_stylizer(settings: Settings) -> Stylizer:
    """TorchServe when `TORCHSERVE_URL` is set, else the embedded engine over `MODEL_STORE`."""
    if settings.torchserve_url:
        return TorchServeClient(
            settings.torchserve_url, reveal(settings.torchserve_token),
            management_urls=settings.torchserve_management_urls,
            management_token=reveal(settings.torchserve_management_token), model_store=settings.model_store,
        )
    return EmbeddedEngine(settings.model_store)
