"""Loading a `.mar` in this process, as a TorchServe worker does: unpack it, import its handler.

Unpack once (into a cache keyed by the archive's hash), import the packaged
handler with the archive's folder on `sys.path`, and build the same `Service`
(hence the same `Context`) the TorchServe worker builds.
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
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import ts
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.service import Service
from ts.utils.util import list_classes_from_module

from styles.archive import Archive

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
