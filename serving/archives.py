"""Reading `.mar` files for the embedded engine: catalogue, unpacking, handler loading.

What TorchServe does on the server, done in-process: read the manifest and
model-config.yaml, unpack once (into a cache keyed by the archive's hash),
import the packaged handler with the archive's folder on `sys.path`, and build
the same `Service` (hence the same `Context`) the TorchServe worker builds.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import ts
import yaml
from packaging.version import InvalidVersion, Version
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.service import Service
from ts.utils.util import list_classes_from_module

from serving.api import StyleInfo

if TYPE_CHECKING:
    from ts.torch_handler.base_handler import BaseHandler

MANIFEST = "MAR-INF/MANIFEST.json"
METRICS_CONFIG = Path(ts.__file__).parent / "configs" / "metrics.yaml"
_import_lock = threading.Lock()  # sys.path and sys.modules are process-wide
# TorchServe's base handler warns at import about every optional accelerator it lacks.
logging.getLogger("ts.torch_handler.base_handler").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Archive:
    """One `.mar` file as the model store holds it."""

    path: Path
    manifest: dict[str, Any]
    config: dict[str, Any]  # model-config.yaml

    @property
    def name(self) -> str:
        return self.manifest["model"]["modelName"]

    @property
    def version(self) -> str:
        return self.manifest["model"]["modelVersion"]

    def info(self) -> StyleInfo:
        """The catalogue entry the exporter wrote into model-config.yaml."""
        h = self.config["handler"]
        return StyleInfo(self.name, h["title"], h["description"], bool(h["needs_face"]), self.version)


def read_archive(path: Path) -> Archive:
    """Manifest and model-config.yaml of a `.mar`, without unpacking it."""
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read(MANIFEST))
        config_file = manifest["model"].get("configFile")
        config = yaml.safe_load(z.read(config_file)) if config_file else {}
    return Archive(path, manifest, config or {})


def _version_key(archive: Archive) -> tuple[int, Version | str]:
    try:
        return (1, Version(archive.version))
    except InvalidVersion:
        return (0, archive.version)


def scan(store: Path) -> dict[str, Archive]:
    """The version of each style that serves until a deploy says otherwise, by style name.

    That is the oldest: the one that shipped. A newer archive (a retrain, an
    export) serves only once an admin deploys it, which checks it first.
    """
    oldest: dict[str, Archive] = {}
    for path in sorted(store.glob("*.mar")):
        try:
            archive = read_archive(path)
            archive.info()  # only toonbot styles: skip archives without a catalogue entry
        except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile, yaml.YAMLError):
            continue
        best = oldest.get(archive.name)
        if best is None or _version_key(archive) < _version_key(best):
            oldest[archive.name] = archive
    return oldest


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
