"""Continue a long run on a fresh machine from what the repository holds.

A training machine is held for a few hours at most and the next one may start
from a clean clone, so full checkpoints (optimiser state, float32, ~100 MB)
cannot be what carries a run over. What is committed instead:

- the pair's two `.mar` archives: each generator in fp16, and under
  `training` in model-config.yaml the iterations, resolution, hours and
  machines that made it;
- `training/warm_start/<pair>.pt`: the four discriminators in fp16 (no
  optimiser state), so the next stretch does not start against untrained
  critics;
- `training/warm_start/<pair>.generators.pt`, only while a run is ahead of
  what ships: the generators (and their moving averages) of a stretch that did not (yet) measure better
  than the bundled archives, so the run goes on from where it got to, while
  users keep the better pictures.

`fit --init-from model_store/selfie2anime.mar` reads them and continues the
iteration count (from the generators file where it is further on than the
archives); Adam's moments restart from zero, which costs a few hundred
iterations of settling.
"""

from __future__ import annotations

import argparse
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from styles import archive as archives
from training.checkpoint import NETWORKS, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

WARM_START_DIR = Path(__file__).resolve().parent / "warm_start"
DISCRIMINATORS = tuple(k for k in NETWORKS if k.startswith("dis"))
FORMAT = "toonbot-discriminators/1"


def read_archive(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(float32 generator weights, an int8 layer as stored; the handler section of model-config.yaml) of one `.mar`."""
    try:
        archive = archives.read_archive(path)
        return archive.generator_weights(), archive.handler
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise SystemExit(f"cannot read {path} as a toonbot archive: {exc}") from exc


def pair_archives(path: Path, run_name: str) -> dict[str, Path]:
    """{genA2B, genB2A} -> archive paths: `path` is either archive of the run's pair; the other sits beside it."""
    source, _, target = run_name.partition("2")
    a2b, b2a = run_name, f"{target}2{source}"
    suffix = path.name.removeprefix(a2b).removeprefix(b2a)  # ".mar" or "-<version>.mar"
    found = {"genA2B": path.with_name(a2b + suffix), "genB2A": path.with_name(b2a + suffix)}
    if path not in found.values():
        raise SystemExit(f"{path.name} is not an archive of {a2b} or {b2a}; name the run after the pair")
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"--init-from needs both directions of the pair; missing {', '.join(missing)}")
    return found


def warm_start_path(run_name: str) -> Path:
    return WARM_START_DIR / f"{run_name}.pt"


def save_discriminators(networks: dict[str, dict[str, torch.Tensor]], run_name: str, step: int,
                        folder: Path = WARM_START_DIR) -> Path:
    """The four discriminators' state dicts in fp16 (spectral-norm vectors included), written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_name}.pt"
    half = {
        k: {n: t.half() if t.is_floating_point() else t for n, t in networks[k].items()}
        for k in DISCRIMINATORS
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "step": step, "networks": half}, tmp)
    tmp.replace(path)
    return path


def load_discriminators(path: Path) -> dict[str, dict[str, torch.Tensor]] | None:
    """The saved discriminators in float32, or None when there is no such file."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise SystemExit(f"{path} is not a discriminator warm-start file")
    return {k: {n: t.float() if t.is_floating_point() else t for n, t in sd.items()}
            for k, sd in state["networks"].items()}


def generators_path(discriminators: Path) -> Path:
    """The unshipped generators beside a discriminator warm-start file: NAME.pt -> NAME.generators.pt."""
    return discriminators.with_name(f"{discriminators.stem}.generators.pt")


def initial_state(archive: Path, run_name: str, discriminators: Path | None) -> dict[str, Any]:
    """What `Trainer.load` takes, from the pair's archives and the `discriminators` warm-start
    file where it exists (None: discriminators start afresh).

    `step` and `history` continue the archive's record, so the run's count
    and the learning-rate schedule pick up where the archive left off. Where
    NAME.generators.pt lies beside the warm-start file and is further on, the
    generators, step and record come from it instead.
    """
    networks: dict[str, dict[str, torch.Tensor]] = {}
    averages: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    history: dict[str, Any] = {}
    for key, path in pair_archives(archive, run_name).items():
        networks[key], config = read_archive(path)
        record = dict(config.get("training") or {})
        if int(record.get("iterations", 0)) >= int(history.get("iterations", 0)):
            history = record  # the further of the two: a direction may ship from an earlier stretch
    if discriminators is not None and generators_path(discriminators).is_file():
        unshipped = load_checkpoint(generators_path(discriminators))
        if int(unshipped["step"]) > int(history.get("iterations", 0)):
            log.info("generators from %s (step %d), ahead of the archives", generators_path(discriminators),
                     unshipped["step"])
            networks.update({k: _float(sd) for k, sd in unshipped["networks"].items()})
            averages = {key: {k: _float(sd) for k, sd in nets.items()} for key, nets in unshipped.get("ema", {}).items()}
            history = dict(unshipped.get("history") or {})
    discs = load_discriminators(discriminators) if discriminators else None
    if discs is None:
        log.info("no discriminator warm-start file: discriminators start from scratch")
    else:
        networks.update(discs)
    return {"networks": networks, "ema": averages, "step": int(history.get("iterations", 0)), "history": history,
            "discriminators_warm": discs is not None}


def _float(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: t.float() if t.is_floating_point() else t for n, t in sd.items()}


@dataclass
class Direction:
    """What one direction's archive is exported with besides its weights."""

    img_size: int
    arch: dict[str, Any]
    history: dict[str, Any] | None = None  # the training record
    upscaler: dict[str, Any] | None = None
    draw_size: int | None = None  # None: img_size
    output_size: int | None = None  # None: what it draws, upscaled


def checkpoint_from_archives(archive: Path) -> dict[str, Any]:
    """A pair's two archives as an export-ready checkpoint, named by `archive`'s style.

    Each direction keeps its own sizes, network arguments, training record and upscaler (`directions`, in
    genA2B, genB2A order): a pair's directions ship from different stretches when each measured better
    there (zebra2horse at 96 px beside horse2zebra at 128), and re-packaging must not give one the other's."""
    name = archives.read_archive(archive).name  # manifest and config only: the weights are read once, below
    state = initial_state(archive, name, discriminators=None)
    directions = []
    for path in pair_archives(archive, name).values():
        h = archives.read_archive(path).handler
        directions.append(Direction(int(h["img_size"]), h["arch"], h.get("training"), h.get("upscaler"),
                                    h.get("draw_size"), h.get("output_size")))
    return {"options": {"name": name}, "directions": directions, "step": state["step"], "networks": state["networks"]}


def pack(checkpoint: Path, out: Path) -> tuple[Path, Path]:
    """A training checkpoint -> what a stretch carries off its machine, in fp16 and without optimiser state:

    - NAME.generators.pt: a checkpoint `python -m training export` takes (both
      generators, options, step, the run's record);
    - NAME.pt: the discriminators, for training/warm_start/.
    """
    state = load_checkpoint(checkpoint)
    name = state["options"]["name"]
    def half(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: t.half() if t.is_floating_point() else t for n, t in sd.items()}

    generators = {k: half(state["networks"][k]) for k in ("genA2B", "genB2A")}
    averages = {key: {k: half(sd) for k, sd in nets.items()} for key, nets in state.get("ema", {}).items()}
    compact = {k: state[k] for k in ("options", "generator_arch", "step", "history") if k in state}
    gens = save_checkpoint(out / f"{name}.generators.pt", {**compact, "networks": generators, "ema": averages})
    discs = save_discriminators(state["networks"], name, int(state["step"]), folder=out)
    return gens, discs


def run_pack(args: argparse.Namespace) -> int:
    gens, discs = pack(args.checkpoint, args.out)
    print(f"generators: {gens}\ndiscriminators: {discs}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `pack`."""
    p = sub.add_parser("pack", help="fp16 generators and discriminators of a checkpoint, to carry a run off a machine")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for NAME.generators.pt and NAME.pt")
    p.set_defaults(func=run_pack)
