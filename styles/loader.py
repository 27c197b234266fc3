"""Running a `.mar` in this process, as a TorchServe worker does: unpack it, import its handler, predict.

Unpack once (into a cache keyed by the archive's hash), import the packaged
handler with the archive's folder on `sys.path`, and build the same `Service`
(hence the same `Context`) the TorchServe worker builds. The embedded engine
serves with it, and export draws each archive's preview with it.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import ts
import yaml
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.service import Service
from ts.utils.util import list_classes_from_module

from styles.archive import CONFIG, Archive

if TYPE_CHECKING:
    from ts.torch_handler.base_handler import BaseHandler

METRICS_CONFIG = Path(ts.__file__).parent / "configs" / "metrics.yaml"
_import_lock = threading.Lock()  # sys.path and sys.modules are process-wide
# TorchServe's base handler warns at import about every optional accelerator it lacks.
logging.getLogger("ts.torch_handler.base_handler").setLevel(logging.ERROR)


def file_hash(path: Path) -> str:
    """sha256 of a file, read in chunks (archives of full models reach hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unpack(archive: Archive, cache: Path) -> Path:
    """Unpack once per archive content; concurrent callers race safely to the same folder."""
    target = cache / f"{archive.name}-{file_hash(archive.path)[:16]}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".unpack-"))
    with zipfile.ZipFile(archive.path) as z:
        z.extractall(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_service(archive: Archive, model_dir: Path) -> tuple[BaseHandler, Service]:
    """Import the packaged handler and initialise it with a TorchServe `Service`'s context.

    The archive's modules (handler.py, networks.py, ...) are imported with its
    folder first on `sys.path`, as in a TorchServe worker, then taken out of
    `sys.modules` again so that several archives, even of different code
    versions, live side by side in one process.
    """
    names = [p.stem for p in model_dir.glob("*.py")]
    handler_module = Path(archive.manifest["model"]["handler"].split(":")[0]).stem
    with _import_lock:
        saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
        sys.path.insert(0, str(model_dir))
        try:
            module = importlib.import_module(handler_module)
        finally:
            sys.path.remove(str(model_dir))
            for n in names:
                sys.modules.pop(n, None)
            sys.modules.update(saved)
    classes = list_classes_from_module(module)
    if len(classes) != 1:
        raise ValueError(f"{archive.path}: expected one handler class, found {len(classes)}")
    handler = classes[0]()
    metrics = MetricsCacheYamlImpl(config_file_path=str(METRICS_CONFIG))
    metrics.initialize_cache()
    # As a TorchServe worker is given its GPU: the handler runs on it where there is one.
    gpu = 0 if torch.cuda.is_available() else None
    service = Service(
        archive.name, str(model_dir), archive.manifest, handler.handle, gpu,
        int(archive.config.get("batchSize", 1)), True, metrics,
    )
    handler.initialize(service.context)
    return handler, service


def build_paths(archive: Archive, cache: Path) -> dict[str, str]:
    """Load `archive` as a server does and wait while its faster paths are built, checked on the photos and
    timed, into the compile cache a server on this machine reads ($TOONBOT_COMPILE_CACHE, else the default);
    its first start then only loads them. {"generator": path, "upscaler": path (if it has one)}."""
    model_dir = unpack(archive, cache)
    before, os.environ["TOONBOT_COMPILE"] = os.environ.get("TOONBOT_COMPILE"), "background"
    try:
        handler, _ = load_service(archive, model_dir)
    finally:
        if before is None:
            del os.environ["TOONBOT_COMPILE"]
        else:
            os.environ["TOONBOT_COMPILE"] = before
    paths = {"generator": handler.path, "upscaler": handler.upscaler}
    for accelerated in filter(None, paths.values()):
        accelerated.ready.wait()
    return {name: accelerated.path.name for name, accelerated in paths.items() if accelerated is not None}


def load_eager(archive: Archive, cache: Path) -> tuple[BaseHandler, Service]:
    """The archive's handler on the plain eager generator, unpacked into `cache` (a folder of the caller's own):
    for one-off drawing (previews, evaluations), where building a faster path would take longer than the work."""
    model_dir = unpack(archive, cache)
    config_file = model_dir / archive.manifest["model"].get("configFile", CONFIG)
    config = yaml.safe_load(config_file.read_text())
    config["handler"]["inference"] = "eager"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_service(archive, model_dir)


@dataclass(frozen=True)
class Answer:
    """One request's answer, as TorchServe would send it."""

    status: int
    content_type: str | None
    body: bytes
    headers: dict[str, str]


def predict(handler: BaseHandler, service: Service, batch: Sequence[tuple[bytes, dict[str, str]]]) -> list[Answer]:
    """Run the handler on one batch of (image, request headers), with the request layout of a TorchServe worker."""
    wire = [
        {
            "requestId": str(uuid.uuid4()).encode(),
            "parameters": [{"name": "body", "contentType": "application/octet-stream", "value": image}],
            "headers": [{"name": k.encode(), "value": v.encode()} for k, v in headers.items()],
        }
        for image, headers in batch
    ]
    headers, rows, ids = Service.retrieve_data_for_inference(wire)
    context = service.context
    context.request_ids, context.request_processor = ids, headers
    context.metrics.request_ids = ids
    outputs = handler.handle(rows, context)
    return [
        Answer(context.get_response_status(i)[0], context.get_response_content_type(i), bytes(out),
               dict(context.get_response_headers(i)))
        for i, out in enumerate(outputs)
    ]
