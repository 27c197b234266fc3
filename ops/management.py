"""Switching a style's default version, on TorchServe or the embedded engine.

Both runtimes take the same steps: load the new version beside the one
serving now, stylize a sample image with it, and only then make it the
default. Any failure raises `DeployError` with a reason for the admin, and
the old default keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from config import Settings, reveal
from db.models import ServingRuntime
from serving.api import Stylizer
from serving.client import TorchServeHTTP, default_management_url
from serving.engine import EmbeddedEngine
from styles.archive import Archive, find, store_versions, version_order

logger = logging.getLogger(__name__)

# A public-domain portrait (Grace Hopper, US Navy): face styles need a face to draw.
SAMPLE = Path(__file__).with_name("samples") / "face.jpg"
SAMPLE_SIZE = 64  # small: the check is that the version answers, not how well


class DeployError(Exception):
    """Why a version could not become the default; `message` is for the admin."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class StyleVersions:
    """A style's versions the runtime can serve, and the one it serves by default."""

    style: str
    versions: tuple[str, ...]
    default: str | None  # None: TorchServe replicas that serve different defaults (`ReplicatedManagement`)


class Management(Protocol):
    """What deploy and rollback need from a runtime."""

    runtime: ServingRuntime

    async def versions(self) -> list[StyleVersions]:
        """Every style's versions, sorted by style name."""
        ...

    async def make_default(self, archive: Archive) -> None:
        """Load, check on the sample, then switch; raises `DeployError`, changing nothing."""
        ...

    async def close(self) -> None:
        """Release sessions."""
        ...


def find_archive(store: Path, style: str, version: str) -> Archive:
    """The `.mar` of that style and version in the model store."""
    archive = find(store, style, version)
    if archive is None:
        raise DeployError(f"There is no {style} {version} in the model store.")
    return archive


class EmbeddedManagement:
    """The in-process engine: the model store's archives, one default pinned per style."""

    runtime: ServingRuntime = "embedded"

    def __init__(self, engine: EmbeddedEngine) -> None:
        self.engine = engine

    async def versions(self) -> list[StyleVersions]:
        """The store's versions; the default is what the engine serves."""
        found = await asyncio.to_thread(store_versions, self.engine.model_store)
        defaults = {s.name: s.version for s in await self.engine.styles()}
        return [
            StyleVersions(style, tuple(sorted(found[style], key=version_order)), defaults[style])
            for style in sorted(found)
            if style in defaults
        ]

    async def make_default(self, archive: Archive) -> None:
        """The engine loads it on its own worker, tries it, then swaps it in."""
        try:
            await self.engine.make_default(archive, SAMPLE.read_bytes(), size=SAMPLE_SIZE)
        except Exception as error:  # whatever the packaged handler raises: the admin must hear why
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise DeployError(f"{archive.name} {archive.version} did not work: {first_line}") from error

    async def close(self) -> None:
        """The engine belongs to whoever opened it."""


class TorchServeManagement:
    """TorchServe's management API (register, scale, set-default) and inference API (the check)."""

    runtime: ServingRuntime = "torchserve"

    def __init__(
        self, inference_url: str, management_url: str, *, token: str | None = None,
        management_token: str | None = None, timeout: float = 300.0,
    ) -> None:
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/")
        self.token = token
        self.management_token = management_token or token
        self._http = TorchServeHTTP(timeout)

    async def _call(
        self, method: str, url: str, token: str | None, *, headers: dict[str, str] | None = None, **kwargs: object
    ) -> tuple[int, bytes]:
        try:
            status, _, body = await self._http.request(method, url, token, headers=headers, **kwargs)
            return status, body
        except (aiohttp.ClientError, TimeoutError) as error:
            raise DeployError(f"TorchServe did not answer: {error or type(error).__name__}") from error

    async def _manage(self, method: str, path: str, **kwargs: object) -> tuple[int, bytes]:
        return await self._call(method, f"{self.management_url}{path}", self.management_token, **kwargs)

    async def versions(self) -> list[StyleVersions]:
        """Registered models and versions; the default is what `GET /models/NAME` describes."""
        status, body = await self._manage("GET", "/models", params={"limit": "1000"})
        if status != 200:
            raise DeployError(f"TorchServe's model list failed ({status}): {_reason(body)}")
        result = []
        for name in sorted(m["modelName"] for m in json.loads(body).get("models", [])):
            every_status, every = await self._manage("GET", f"/models/{name}/all")
            default_status, default = await self._manage("GET", f"/models/{name}")
            if every_status != 200 or default_status != 200:  # unregistered meanwhile
                continue
            result.append(StyleVersions(
                name,
                tuple(sorted({m["modelVersion"] for m in json.loads(every)}, key=version_order)),
                json.loads(default)[0]["modelVersion"],
            ))
        return result

    async def make_default(self, archive: Archive) -> None:
        """Register the version (workers up), predict the sample with it, then set it as default."""
        await self.prepare(archive)
        await self.set_default(archive.name, archive.version)

    async def prepare(self, archive: Archive) -> bool:
        """Register the version (workers up) and predict the sample with it; True when it was newly
        registered. A version that fails is unregistered again (unless it was there before)."""
        style, version = archive.name, archive.version
        registered = await self._registered(style)
        if version in registered:  # e.g. a rollback: make sure it still has a worker
            status, body = await self._manage(
                "PUT", f"/models/{style}/{version}", params={"min_worker": "1", "synchronous": "true"}
            )
        else:
            status, body = await self._manage("POST", "/models", params={
                "url": archive.path.name, "initial_workers": "1", "synchronous": "true",
            })
        try:
            if status != 200:
                raise DeployError(f"TorchServe could not start {style} {version} ({status}): {_reason(body)}")
            await self._check(style, version)
        except DeployError:
            if version not in registered:  # leave nothing half-deployed behind
                await self.unregister(style, version)
            raise
        return version not in registered

    async def set_default(self, style: str, version: str) -> None:
        """Make a registered version the one `/predictions/STYLE` answers with."""
        status, body = await self._manage("PUT", f"/models/{style}/{version}/set-default")
        if status != 200:
            raise DeployError(f"TorchServe would not make {style} {version} the default: {_reason(body)}")

    async def default_of(self, style: str) -> str | None:
        """The version serving `style` now (None: not registered)."""
        status, body = await self._manage("GET", f"/models/{style}")
        return json.loads(body)[0]["modelVersion"] if status == 200 else None

    async def unregister(self, style: str, version: str) -> None:
        """Drop a version that is not the default (TorchServe refuses to drop the default)."""
        await self._manage("DELETE", f"/models/{style}/{version}")

    async def _registered(self, style: str) -> set[str]:
        status, body = await self._manage("GET", f"/models/{style}/all")
        return {m["modelVersion"] for m in json.loads(body)} if status == 200 else set()

    async def _check(self, style: str, version: str) -> None:
        """The new version must draw the sample image through the inference API."""
        status, body = await self._call(
            "POST", f"{self.inference_url}/predictions/{style}/{version}", self.token,
            data=SAMPLE.read_bytes(),
            headers={"Content-Type": "application/octet-stream", "X-Size": str(SAMPLE_SIZE), "X-Format": "png"},
        )
        if status != 200 or not body.startswith(b"\x89PNG"):
            raise DeployError(f"{style} {version} failed on the sample image ({status}): {_reason(body)}")

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._http.close()


class ReplicatedManagement:
    """One deploy on every TorchServe replica behind a balancer (`TORCHSERVE_MANAGEMENT_URL` listing each):
    every replica registers the version and draws the sample with it, then every replica makes it the
    default; a failure on any puts every replica back as it was, so all serve the same version."""

    runtime: ServingRuntime = "torchserve"

    def __init__(self, replicas: list[TorchServeManagement]) -> None:
        self.replicas = replicas

    async def versions(self) -> list[StyleVersions]:
        """What every replica serves: the styles all of them have, the versions registered on all of them,
        and the default they agree on (None where they differ, e.g. one restarted on its own serves its
        shipped version: a restore or the next deploy sets the logged one on each)."""
        listed = [{s.style: s for s in await replica.versions()} for replica in self.replicas]
        result = []
        for style in sorted(set.intersection(*(set(found) for found in listed))):
            each = [found[style] for found in listed]
            versions = tuple(v for v in each[0].versions if all(v in other.versions for other in each[1:]))
            defaults = {found.default for found in each}
            result.append(StyleVersions(style, versions, defaults.pop() if len(defaults) == 1 else None))
        return result

    async def make_default(self, archive: Archive) -> None:
        """Prepare the version on each replica, then switch each; undo all on the first failure."""
        style, version = archive.name, archive.version
        before = [await replica.default_of(style) for replica in self.replicas]
        new: list[TorchServeManagement] = []  # where it was registered by this deploy
        switched: list[tuple[TorchServeManagement, str | None]] = []
        replica = self.replicas[0]
        try:
            for replica in self.replicas:
                if await replica.prepare(archive):
                    new.append(replica)
            for replica, previous in zip(self.replicas, before, strict=True):
                await replica.set_default(style, version)
                switched.append((replica, previous))
        except DeployError as error:
            await self._undo(style, version, switched, new)
            raise DeployError(f"{replica.management_url}: {error} (every replica is back as it was)") from error

    @staticmethod
    async def _undo(
        style: str, version: str, switched: list[tuple[TorchServeManagement, str | None]],
        new: list[TorchServeManagement],
    ) -> None:
        """The previous default back where it was switched, then the new version dropped where it was added."""
        for replica, previous in switched:
            if previous is not None and previous != version:
                try:
                    await replica.set_default(style, previous)
                except DeployError as error:
                    logger.error("%s: %s %s could not be made the default again: %s",
                                 replica.management_url, style, previous, error)
        for replica in new:
            try:
                await replica.unregister(style, version)
            except DeployError as error:
                logger.error("%s: %s %s could not be dropped: %s", replica.management_url, style, version, error)

    async def close(self) -> None:
        """Close every replica's HTTP session."""
        for replica in self.replicas:
            await replica.close()


def replica_inference_url(management_url: str) -> str:
    """TorchServe's layout: a replica's inference API listens one port below its management API."""
    parts = urlsplit(management_url)
    return urlunsplit((parts.scheme, f"{parts.hostname}:{(parts.port or 8081) - 1}", "", "", ""))


def open_management(settings: Settings, stylizer: Stylizer) -> Management:
    """Deploys through the runtime `stylizer` (from `serving.factory.open_stylizer(settings)`) draws
    with: the embedded engine itself, else TorchServe's APIs."""
    if isinstance(stylizer, EmbeddedEngine):
        return EmbeddedManagement(stylizer)
    url = settings.torchserve_url
    if not url:
        raise ValueError("a TorchServe client needs its URL to manage versions")
    tokens = {"token": reveal(settings.torchserve_token),
              "management_token": reveal(settings.torchserve_management_token)}
    urls = settings.torchserve_management_urls
    if len(urls) > 1:  # replicas: each checks the version on its own inference API, not through the balancer
        return ReplicatedManagement([TorchServeManagement(replica_inference_url(u), u, **tokens) for u in urls])
    return TorchServeManagement(url, urls[0] if urls else default_management_url(url), **tokens)


def _reason(body: bytes) -> str:
    """TorchServe's error message, or the start of the body."""
    try:
        return str(json.loads(body).get("message", ""))[:300]
    except (ValueError, AttributeError):
        return body[:300].decode(errors="replace")
