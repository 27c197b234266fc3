"""aiohttp client for TorchServe's REST APIs, behind the same `Stylizer` interface.

Predictions go to the inference API; the style list comes from the
management API, whose `?customized=true` describe asks each handler for the
catalogue entry and preview it carries. 503s, worker deaths (500/507) and refused connections
are retried with exponential backoff; every other outcome maps to one `StylizeError` subclass.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from serving import replies
from serving.api import (
    FRAMES_HEADER,
    BadInput,
    ImageFormat,
    Overloaded,
    StyleInfo,
    Stylized,
    StylizeError,
    Unavailable,
    faces_drawn,
    request_headers,
)
from styles.payload import refusals
from styles.quality import experimental

logger = logging.getLogger(__name__)

# 503: the model is busy or its handler failed; 500 or 507: the worker died
# mid-request (TorchServe restarts it). A prediction has no side effects, so
# all are retried.
RETRY_STATUSES = {500, 503, 507}
VERSION_HEADER = "X-Model-Version"


def default_management_url(inference_url: str) -> str:
    """TorchServe's layout: the management API listens one port above inference (8080/8081)."""
    parts = urlsplit(inference_url)
    port = (parts.port or 8080) + 1
    return urlunsplit((parts.scheme, f"{parts.hostname}:{port}", "", "", ""))


class TorchServeHTTP:
    """One aiohttp session to TorchServe's APIs, each call with its API's bearer key.

    The client (predictions, the style list) and the management calls of a
    deploy both talk to TorchServe through it.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self, method: str, url: str, token: str | None, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Mapping[str, str], bytes]:
        """(status, headers, body) of one call; aiohttp's errors pass through to the caller."""
        if self._session is None or self._session.closed:  # opened inside the running loop
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        async with self._session.request(method, url, headers=headers, **kwargs) as resp:
            return resp.status, resp.headers.copy(), await resp.read()  # headers: case-insensitive

    async def close(self) -> None:
        """Close the session, if one was opened."""
        if self._session is not None:
            await self._session.close()


class TorchServeClient:
    """`Stylizer` over a running TorchServe."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        management_urls: Sequence[str] = (),
        management_token: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.25,
        model_store: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model_store = model_store  # where the served archives' quality.json can be read, if at hand
        # Every TorchServe replica's management API behind the balancer at `url` (none: the inference port + 1).
        self.management_urls = [u.rstrip("/") for u in management_urls] or [default_management_url(url)]
        self.token = token
        self.management_token = management_token or token
        self.retries = retries
        self.backoff = backoff
        self._http = TorchServeHTTP(timeout)

    async def _request(
        self, method: str, url: str, token: str | None, *, headers: dict[str, str] | None = None, **kwargs
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send, retrying RETRY_STATUSES and refused connections; (status, headers, body)."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                status, resp_headers, body = await self._http.request(method, url, token, headers=headers, **kwargs)
                if status not in RETRY_STATUSES or last:
                    return status, resp_headers, body
            except aiohttp.ClientConnectionError as err:
                if last:
                    logger.warning("TorchServe unreachable at %s: %s", url, err)
                    raise Unavailable(replies.UNAVAILABLE) from err
            except asyncio.TimeoutError as err:
                raise Overloaded(replies.OVERLOADED) from err
            await asyncio.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    async def stylize(
        self, style: str, image: bytes, *, size: int | None = None, fmt: ImageFormat = "jpeg",
        follow: str | None = None, compare: bool = False, upscale: bool = True,
    ) -> Stylized:
        """POST the image to /predictions/STYLE; options travel as headers (`request_headers`)."""
        if len(image) > refusals.MAX_BYTES:  # TorchServe would refuse it after the whole upload
            raise BadInput(refusals.TOO_LARGE)
        headers = {"Content-Type": "application/octet-stream", **request_headers(size, fmt, follow, compare, upscale)}
        status, resp_headers, body = await self._request(
            "POST", f"{self.url}/predictions/{style}", self.token, data=image, headers=headers
        )
        if status == 200:
            return Stylized(body, style, resp_headers.get(VERSION_HEADER, ""), resp_headers.get("Content-Type", ""),
                            faces_drawn(resp_headers), resp_headers.get(FRAMES_HEADER))
        raise self._error(status, body, style)

    @staticmethod
    def _error(status: int, body: bytes, style: str) -> StylizeError:
        """The exception for a non-200 prediction answer."""
        if 400 <= status < 500 and b'"error"' in body:  # the handler's own rejection
            return replies.rejection(body)
        if status == 404:
            return replies.unknown_style(style)
        if status == 413:
            return BadInput(refusals.TOO_LARGE)
        if status in (503, 507):
            return Overloaded(replies.OVERLOADED)
        logger.error("TorchServe answered %d for %s: %.200r", status, style, body)
        if status in (400, 401, 403):  # TorchServe's own refusals: a wrong token, mostly
            return Unavailable(replies.UNAVAILABLE)
        return StylizeError(replies.FAILED)

    async def styles(self) -> list[StyleInfo]:
        """Every registered model whose handler describes itself as a toonbot style, on every replica:
        the balancer may send a photo to any. A replica that does not answer is left out, unless none does."""
        listed = await asyncio.gather(*(self._models(url) for url in self.management_urls), return_exceptions=True)
        answered = [(url, n) for url, n in zip(self.management_urls, listed, strict=True) if isinstance(n, list)]
        for url, error in zip(self.management_urls, listed, strict=True):
            if isinstance(error, BaseException):
                if not isinstance(error, StylizeError) or not answered:
                    raise error
                logger.warning("TorchServe at %s left out of the style list: %s", url, error)
        url, names = answered[0]
        everywhere = [name for name in names if all(name in others for _, others in answered[1:])]
        found = await asyncio.gather(*(self._describe(url, name) for name in everywhere))
        return sorted((s for s in found if s is not None), key=lambda s: s.name)

    async def _models(self, management_url: str) -> list[str]:
        """The names of the models registered with one replica."""
        names: list[str] = []
        page: str | None = ""
        while page is not None:
            status, _, body = await self._request(
                "GET", f"{management_url}/models", self.management_token,
                params={"limit": "100", **({"next_page_token": page} if page else {})},
            )
            if status != 200:
                raise self._error(status, body, "")
            listing = json.loads(body)
            names += [m["modelName"] for m in listing.get("models", [])]
            page = listing.get("nextPageToken")
        return names

    async def _describe(self, management_url: str, name: str) -> StyleInfo | None:
        """The default version's catalogue entry and preview, or None for a model that is no toonbot style."""
        status, _, body = await self._request(
            "GET", f"{management_url}/models/{name}", self.management_token, params={"customized": "true"}
        )
        if status != 200:
            return None
        try:
            model = json.loads(body)[0]
            meta = model["customizedMetadata"]
            meta = json.loads(meta) if isinstance(meta, str) else meta
            preview = base64.b64decode(meta["preview"], validate=True) if "preview" in meta else None
            version = model["modelVersion"]
            output_size = int(meta["output_size"]) if "output_size" in meta else None
        except (ValueError, KeyError, IndexError, TypeError):  # binascii.Error is a ValueError
            return None
        store = self.model_store
        short = await asyncio.to_thread(experimental, store, name, version) if store is not None else None
        return StyleInfo(name, meta["title"], meta["description"], bool(meta["needs_face"]), version, preview, short,
                         output_size)

    async def health(self) -> bool:
        """True when TorchServe's /ping says Healthy."""
        try:
            status, _, body = await self._request("GET", f"{self.url}/ping", self.token)
        except StylizeError:
            return False
        return status == 200 and b"Healthy" in body

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._http.close()
