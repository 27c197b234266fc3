"""`.mar` files: reading, finding and ordering them in a model store, and writing them.

One archive is one version of one style: the manifest names both, the
model-config.yaml carries TorchServe's worker and batching settings at the top
and the handler's under `handler` (network arguments, image size, the
catalogue entry, the training record); preview.jpg shows the style on a
public-domain picture (`styles.preview` draws it). Everything that reads or
writes those fields does it here.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from model_archiver import ModelArchiverConfig
from model_archiver.model_packaging_utils import ModelExportUtils
from packaging.version import InvalidVersion, Version

from styles.catalog import Entry

MANIFEST = "MAR-INF/MANIFEST.json"
PAYLOAD = Path(__file__).resolve().parent / "payload"  # packed flat into every archive
HANDLER = "handler.py"
NETWORKS = "networks.py"
WEIGHTS = "generator.pt"
CONFIG = "model-config.yaml"
PREVIEW = "preview.jpg"  # before | after, drawn at export by the archive's own handler
DEFAULT_VERSION = "1.0"
ENTRY_FIELDS = ("title", "description", "needs_face")  # the catalogue entry inside model-config.yaml


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

    @property
    def handler(self) -> dict[str, Any]:
        """The handler's section of model-config.yaml."""
        return self.config["handler"]

    @property
    def entry(self) -> Entry:
        """The catalogue entry the exporter wrote into model-config.yaml."""
        h = self.handler
        return Entry(h["title"], h["description"], bool(h["needs_face"]))

    @property
    def output_size(self) -> int:
        """The side of a square reply by default: the config's `output_size`, else what the generator draws
        times its upscaler's scale (the handler's `output_size`, read without loading it)."""
        h = self.handler
        drawn = int(h.get("draw_size", h["img_size"])) * int((h.get("upscaler") or {}).get("scale", 1))
        return int(h.get("output_size", drawn))

    def preview(self) -> bytes | None:
        """The style's before|after JPEG; None for an archive exported before previews."""
        with zipfile.ZipFile(self.path) as z:
            return z.read(PREVIEW) if PREVIEW in z.namelist() else None

    def generator_weights(self) -> dict[str, torch.Tensor]:
        """The generator's weights in float32 (archives keep them in fp16), an int8 layer as stored."""
        with zipfile.ZipFile(self.path) as z:
            state = torch.load(io.BytesIO(z.read(WEIGHTS)), map_location="cpu", weights_only=True)
        return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}


def read_archive(path: Path) -> Archive:
    """Manifest and model-config.yaml of a `.mar`, without unpacking it."""
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read(MANIFEST))
        config_file = manifest["model"].get("configFile")
        config = yaml.safe_load(z.read(config_file)) if config_file else {}
    return Archive(path, manifest, config or {})


def version_order(version: str) -> tuple[int, Version | str]:
    """Sort key: release numbers in numeric order (2.0 < 10.0), odd names first."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def store_versions(store: Path) -> dict[str, dict[str, Archive]]:
    """Every toonbot archive in the model store, by style and version."""
    found: dict[str, dict[str, Archive]] = {}
    for path in sorted(Path(store).glob("*.mar")):
        try:
            archive = read_archive(path)
            archive.entry  # only toonbot styles: skip archives without a catalogue entry
        except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile, yaml.YAMLError):
            continue
        found.setdefault(archive.name, {})[archive.version] = archive
    return found


def scan(store: Path) -> dict[str, Archive]:
    """The version of each style that serves until a deploy says otherwise, by style name.

    That is the oldest: the one that shipped. A newer archive (a retrain, an
    export) serves only once an admin deploys it, which checks it first.
    """
    return {
        style: versions[min(versions, key=version_order)]
        for style, versions in store_versions(store).items()
    }


def find(store: Path, style: str, version: str) -> Archive | None:
    """The `.mar` of that style and version in the model store, if there is one."""
    return store_versions(store).get(style, {}).get(version)


def archive_name(style: str, version: str) -> str:
    """The first version is `<style>.mar`; later ones sit beside it as `<style>-<version>.mar`."""
    return f"{style}.mar" if version == DEFAULT_VERSION else f"{style}-{version}.mar"


def model_config(
    arch: dict[str, Any], img_size: int, info: Entry, *, workers: int, batch_size: int,
    max_batch_delay: int, response_timeout: int, inference: str = "auto",
    training: dict[str, Any] | None = None, draw_size: int | None = None,
    upscaler: dict[str, Any] | None = None, output_size: int | None = None,
) -> dict[str, Any]:
    """model-config.yaml: TorchServe's settings at the top, the handler's under `handler`.

    `training` is the run's record (iterations, hours, stretches with their
    resolution and machine): what the README quotes, and where
    `fit --init-from` continues the count. `upscaler` ({name, scale, denoise},
    e.g. {"name": "realcugan-se", "scale": 4, "denoise": "denoise3x"}) enlarges
    what the generator draws (payload/upscaler.py); replies default to that size, or to `output_size`
    where given (the picture resampled to it).
    """
    handler: dict[str, Any] = {
        "arch": dict(arch),
        "img_size": img_size,
        **{field: getattr(info, field) for field in ENTRY_FIELDS},
        "inference": inference,  # payload/acceleration.py; TOONBOT_INFERENCE overrides
    }
    if draw_size and draw_size != img_size:
        handler["draw_size"] = draw_size  # the handler's default output size follows it
    if upscaler:
        handler["upscaler"] = dict(upscaler)
    if output_size:
        handler["output_size"] = output_size
    if training:
        handler["training"] = training
    return {
        "minWorkers": workers,
        "maxWorkers": workers,
        "batchSize": batch_size,
        "maxBatchDelay": max_batch_delay,
        "responseTimeout": response_timeout,
        "handler": handler,
    }


def write_archive(
    out: Path, style: str, version: str, state_dict: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """Package one direction as torch-model-archiver does (fp16 weights, the payload, `config`); the `.mar` path.

    Its manifest and zip, staged in a folder of this export's own: torch-model-archiver's
    `generate_model_archive` stages every archive in `$TMPDIR/<style>` and deletes that first, so two
    exports of one style at once (two admins, a retrain beside an import) packed each other's files.
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"toonbot-{style}-") as tmp:
        stage, files = Path(tmp), Path(tmp) / "files"
        files.mkdir()
        # float32 becomes fp16; an int8 layer and its bf16 scales (`fc0_weight`) are kept as they are
        half = {k: v.half() if v.dtype == torch.float32 else v for k, v in state_dict.items()}
        torch.save(half, files / WEIGHTS)
        (files / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        extra = sorted(p for p in PAYLOAD.glob("*.py") if p.name not in (HANDLER, NETWORKS))
        for source in (PAYLOAD / HANDLER, PAYLOAD / NETWORKS, *extra):
            shutil.copy(source, files)
        settings = ModelArchiverConfig(
            model_name=style,
            version=version,
            handler=str(files / HANDLER),
            serialized_file=str(files / WEIGHTS),
            model_file=str(files / NETWORKS),
            extra_files=",".join(str(files / p.name) for p in extra),
            config_file=str(files / CONFIG),
            export_path=str(stage),
            force=True,
        )
        ModelExportUtils.validate_inputs(style, str(stage))
        ModelExportUtils.archive(str(stage), style, str(files), ModelExportUtils.generate_manifest_json(settings))
        target = out / archive_name(style, version)
        shutil.move(stage / f"{style}.mar", target)
    return target
