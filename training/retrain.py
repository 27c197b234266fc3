"""What a retraining job trains and what it exports, decided from the model store.

A job names a pair ("selfie2anime"); its two styles' archives in the model
store say the network to train (arch, img_size: full or light, the authors'
TensorFlow graph of an imported version, an int8 first MLP layer), so a new
version can stand in for the old one. `from VERSION` starts the generators
from that version's weights (the discriminators start fresh: archives carry
generators only); an int8 layer trains in float32 and is stored in int8 again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

import torch

from styles import catalog
from styles.archive import DEFAULT_VERSION, Archive, model_config, store_versions, version_order, write_archive
from styles.preview import add_previews
from styles.payload.networks import min_image_size
from training import export
from training.options import TrainOptions
from training.trainer import Trainer

# With no archive of the pair yet: the light model at the paper's 256 px.
DEFAULT_ARCH: dict[str, Any] = {"ngf": 64, "n_blocks": 4, "img_size": 256, "light": True}
DEFAULT_SERVING: dict[str, Any] = {"minWorkers": 1, "batchSize": 1, "maxBatchDelay": 50, "responseTimeout": 120}
# What the trainer can build of an archive's arch (the rest it must match): anything else is refused.
TRAINABLE = {"ngf", "n_blocks", "img_size", "light", "tf_compat", "fc0_weight"}


class JobError(Exception):
    """A job that cannot run as asked; the message goes to the admin."""


@dataclass(frozen=True)
class Plan:
    """The styles a job trains, the options, and the archives it starts from or replaces."""

    styles: tuple[str, str]
    options: TrainOptions
    templates: tuple[Archive | None, Archive | None]  # latest (or `from`) archives: config to keep
    init: bool  # start the generators from the templates' weights


def discriminator_layers(img_size: int, wanted: int) -> int:
    """The deepest discriminator, up to `wanted` layers, that fits the image size."""
    layers = wanted
    while layers > 2 and min_image_size(layers) > img_size:
        layers -= 1
    return layers


def plan(
    *, pair: str, iterations: int, from_version: str | None, datasets: Path, model_store: Path,
    runs_dir: Path, run_name: str, chunk: int,
) -> Plan:
    """Options for the job, from the pair's archives (or light defaults); raises `JobError`."""
    try:
        styles = catalog.check_job(pair, from_version)
    except ValueError as error:
        raise JobError(str(error)) from error
    data = datasets / pair
    if not (data / "trainA").is_dir() or not (data / "trainB").is_dir():
        raise JobError(f"no dataset for {pair}: expected {data}/trainA and {data}/trainB")
    found = store_versions(model_store)
    templates = tuple(_template(found.get(style, {}), style, from_version) for style in styles)
    arch = trainable_arch(templates[0]) if templates[0] else DEFAULT_ARCH
    img_size = int(templates[0].handler["img_size"]) if templates[0] else DEFAULT_ARCH["img_size"]
    defaults = TrainOptions("", "")
    options = TrainOptions(
        name=run_name, data=str(data), out_dir=str(runs_dir), img_size=img_size,
        ch=int(arch["ngf"]), n_res=int(arch["n_blocks"]), light=bool(arch["light"]),
        tf_compat=bool(arch.get("tf_compat", False)),
        n_dis_global=discriminator_layers(img_size, defaults.n_dis_global),
        n_dis_local=discriminator_layers(img_size, defaults.n_dis_local),
        iters=iterations, sample_every=chunk, save_every=chunk, log_every=chunk,
    )
    return Plan(styles, options, templates, init=from_version is not None)  # type: ignore[arg-type]


def trainable_arch(template: Archive) -> dict[str, Any]:
    """The archive's generator arch, if the trainer builds that network; else `JobError` saying why."""
    arch = template.handler["arch"]
    other = {k: v for k, v in arch.items() if k not in TRAINABLE and not (k in ("input_nc", "output_nc") and v == 3)}
    if other:
        raise JobError(f"{template.name} {template.version} is a network the trainer cannot build "
                       f"({', '.join(f'{k}: {v}' for k, v in other.items())}); retrain from another version")
    return arch


def _template(versions: dict[str, Archive], style: str, from_version: str | None) -> Archive | None:
    if from_version is None:
        return versions[max(versions, key=version_order)] if versions else None
    if from_version not in versions:
        raise JobError(f"there is no {style} {from_version} in the model store to start from")
    return versions[from_version]


def start_from_archives(trainer: Trainer, plan: Plan) -> None:
    """Load the generators' (fp16) weights from the `from` version's archives; an int8 layer as float32."""
    for key, archive in zip(("genA2B", "genB2A"), plan.templates):
        assert archive is not None
        trainer.nets[key].load_state_dict(_float_fc0(archive.generator_weights()))


def _float_fc0(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights with an int8 first MLP layer (`fc0_weight: int8`) as the float32 layer it stands for."""
    if weights.get("FC.0.weight", torch.empty(0)).dtype != torch.int8:
        return weights
    out = dict(weights)
    out["FC.0.weight"] = out["FC.0.weight"].float() * out.pop("FC.0.scale").float()[:, None]
    return out


def next_version(model_store: Path, styles: tuple[str, str]) -> str:
    """One major version above the highest either style has in the store ("1.0" for the first)."""
    found = store_versions(model_store)
    majors = [Version(v).major for s in styles for v in found.get(s, {}) if version_order(v)[0]]
    return f"{max(majors) + 1}.0" if majors else DEFAULT_VERSION


def export_versions(trainer: Trainer, plan: Plan, model_store: Path) -> dict[str, str]:
    """Write both directions as the next version into the model store, with their previews; {style: version}."""
    version = next_version(model_store, plan.styles)
    networks = {key: trainer.nets[key].state_dict() for key in ("genA2B", "genB2A")}
    fc0_weight = plan.templates[0].handler["arch"].get("fc0_weight") if plan.templates[0] else None
    try:  # stored as the version it stands in for stores it (int8 checked on the photos, as export does)
        arch, networks = export.stored_as(trainer.nets["genA2B"].arch(), networks, fc0_weight)
    except SystemExit as refused:  # export's words for the command line; a worker must not exit on them
        raise JobError(str(refused)) from None
    paths = []
    for style, key, template in zip(plan.styles, ("genA2B", "genB2A"), plan.templates):
        serving = {**DEFAULT_SERVING, **(template.config if template else {})}
        info = template.entry if template else catalog.entry(style)
        config = model_config(
            arch, plan.options.img_size, info, workers=int(serving["minWorkers"]),
            batch_size=int(serving["batchSize"]), max_batch_delay=int(serving["maxBatchDelay"]),
            response_timeout=int(serving["responseTimeout"]),
        )
        paths.append(write_archive(model_store, style, version, networks[key], config))
    add_previews(paths)
    return {style: version for style in plan.styles}
