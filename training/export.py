"""`python -m training export CKPT --out model_store/`: one TorchServe `.mar` per direction.

Each archive holds the generator's fp16 weights, the payload from
`styles/payload/` (the handler files and the model code, `networks.py`), a
model-config.yaml carrying the network's constructor arguments, the style's
catalogue entry and TorchServe's worker and batching settings, and the style's
preview (`styles.preview`: the catalogue's public-domain picture before and
after, drawn by the archive's own handler); `styles.archive` writes them.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from styles import catalog
from styles.archive import DEFAULT_VERSION, model_config, write_archive
from styles.payload import acceleration, upscaler
from styles.payload.networks import FC0_WEIGHTS, Int8Linear, ResnetGenerator
from styles.preview import add_previews
from training import evaluate, warm_start
from training.checkpoint import load_checkpoint


def chosen_weights(state: dict[str, Any], weights: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The generators to ship (`raw`, or a moving average such as `ema-0.999`) and the training
    record saying which, so the next stretch and the reader know what serves."""
    if weights == "raw":
        networks = state["networks"]
    elif weights in state.get("ema", {}):
        networks = state["ema"][weights]
    else:
        have = ", ".join(["raw", *state.get("ema", {})])
        raise SystemExit(f"this checkpoint has no {weights} weights; it has: {have}")
    record = state.get("history")
    return networks, ({**record, "weights": weights} if record else None)


def parse_upscaler(spec: str) -> dict[str, Any] | None:
    """`none`, or NAME:SCALE:DENOISE (e.g. realcugan-se:4:denoise3x, realesrgan-compact:3:none) as
    model-config's handler.upscaler, checked against the upscalers the payload offers."""
    if spec == "none":
        return None
    try:
        name, scale, denoise = spec.split(":")
        section = {"name": name, "scale": int(scale), "denoise": denoise}
        upscaler.model_files(name, section["scale"], denoise)  # the wheel has it: checked without building it
    except ValueError as err:
        raise SystemExit(f"--upscaler {spec}: {err} (write none or NAME:SCALE:DENOISE, e.g. "
                         "realcugan-se:4:denoise3x, realesrgan-compact:3:none)") from None
    return section


def stored_as(arch: dict[str, Any], networks: dict[str, Any], fc0_weight: str | None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The generators' arch and weights with the MLP's first layer stored as `fc0_weight` (None: as they are).

    "int8" quantizes it per output feature (`Int8Linear.quantize`), then checks each generator on the
    shipped photos as serving checks a faster path (`acceleration.passes`: PSNR floors against float32);
    quantizing cannot be undone, so an int8 archive does not become a float one.
    """
    have = arch.get("fc0_weight", "float")
    if fc0_weight in (None, have):
        return arch, networks
    if have != "float":
        raise SystemExit(f"--fc0-weight {fc0_weight}: these generators' first MLP layer is already {have}")
    stored_arch = {**arch, "fc0_weight": fc0_weight}
    stored = {}
    for key, state in networks.items():
        weight, scale = Int8Linear.quantize(state["FC.0.weight"])
        stored[key] = {**state, "FC.0.weight": weight, "FC.0.scale": scale}
        whole, faces = on_photos(arch, state, stored_arch, stored[key])
        print(f"{key}: first MLP layer in {fc0_weight}, against float32 on the photos: PSNR {whole:.1f} dB "
              f"(faces {faces:.1f} dB)")
        if not acceleration.passes(whole, faces):
            raise SystemExit(f"{key}: {fc0_weight} is below the photo check's floors ({acceleration.PSNR_FLOOR_DB:.0f} "
                             f"dB, faces {acceleration.FACE_FLOOR_DB:.0f} dB): export with --fc0-weight float")
    return stored_arch, stored


@torch.inference_mode()
def on_photos(arch: dict[str, Any], state: dict[str, Any], stored_arch: dict[str, Any], stored: dict[str, Any]
              ) -> tuple[float, float]:
    """(worst whole-photo PSNR, worst face-box PSNR) of the stored generator against the float32 one,
    each built from its weights in place (no copy of a full model's gigabyte)."""
    photos = acceleration.photo_batch(int(arch["img_size"]))
    outs = []
    for a, weights in ((arch, state), (stored_arch, stored)):
        with torch.device("meta"):
            g = ResnetGenerator(**a)
        g.load_state_dict(weights, assign=True)
        outs.append(torch.cat([g.eval()(x[None])[0] for x in photos]))
    return acceleration.photo_quality(outs[1], outs[0])


def export(args: argparse.Namespace) -> int:
    """Write both directions of a checkpoint (or of a pair's archives, with today's handler) into the model store,
    each with its preview."""
    if args.checkpoint.suffix == ".mar":
        if args.weights != "raw":
            raise SystemExit("--weights chooses among a checkpoint's averages; an archive has only the weights it ships")
        state = warm_start.checkpoint_from_archives(args.checkpoint)
        generators = state["networks"]
        directions: list[warm_start.Direction] = state["directions"]
    else:
        state = load_checkpoint(args.checkpoint)
        generators, record = chosen_weights(state, args.weights)
        directions = [warm_start.Direction(int(state["options"]["img_size"]), state["generator_arch"], record, upscaler)
                      for upscaler in state.get("upscalers", [None, None])]
    if args.upscaler:
        for direction, spec in zip(directions, args.upscaler):
            direction.upscaler = parse_upscaler(spec)
    if args.draw_size_factor:
        factors = args.draw_size_factor * (2 if len(args.draw_size_factor) == 1 else 1)
        if len(factors) != 2 or not set(factors) <= {1, 2}:
            raise SystemExit("--draw-size-factor takes 1 or 2, once for both directions or once for each")
        for direction, factor in zip(directions, factors):
            direction.draw_size = factor * direction.img_size
    if args.output_size:
        for direction, side in zip(directions, args.output_size):
            direction.output_size = side or None
    names = tuple(args.names) if args.names else catalog.split_pair(state["options"]["name"])
    paths = []
    for i, (style, key, direction) in enumerate(zip(names, ("genA2B", "genB2A"), directions)):
        arch, stored = stored_as(direction.arch, {key: generators[key]},
                                 args.fc0_weight or state.get("fc0_weight"))
        info = catalog.entry(style)
        if args.title:
            info = replace(info, title=args.title[i])
        if args.description:
            info = replace(info, description=args.description[i])
        if args.needs_face:
            info = replace(info, needs_face=args.needs_face[i] == "yes")
        config = model_config(
            arch, direction.img_size, info, workers=args.workers,
            batch_size=args.batch_size, max_batch_delay=args.max_batch_delay,
            response_timeout=args.response_timeout, inference=args.inference, training=direction.history,
            draw_size=direction.draw_size, upscaler=direction.upscaler, output_size=direction.output_size,
        )
        paths.append(write_archive(Path(args.out), style, args.version, stored[key], config))
    add_previews(paths)
    for style, path in zip(names, paths):
        print(f"{style} {args.version}: {path}")
    evaluate.evaluate_exported(paths, evaluate.datasets_dir(args.datasets))
    if args.warm_start:
        path = warm_start.save_discriminators(state["networks"], state["options"]["name"], int(state["step"]))
        print(f"discriminators for the next stretch: {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `export` with the training CLI."""
    p = sub.add_parser("export", help="write one TorchServe .mar per direction", description=__doc__)
    p.add_argument("checkpoint", type=Path,
                   help="a training checkpoint, or one archive of a pair: re-packages both with the current "
                        "handler files, keeping weights, size and training record")
    p.add_argument("--out", type=Path, default=Path("model_store"), help="model store folder")
    p.add_argument("--version", default=DEFAULT_VERSION, help="model version (default %(default)s)")
    p.add_argument("--weights", default="raw", metavar="raw|ema-DECAY",
                   help="which generators to ship: the trained weights (raw) or one of the checkpoint's moving "
                        "averages (e.g. ema-0.999); measure both on the test split and ship the better")
    p.add_argument("--names", nargs=2, metavar=("A2B", "B2A"), help="style names (default: split the run's name)")
    p.add_argument("--title", nargs=2, metavar=("A2B", "B2A"), help="override the catalogue's titles")
    p.add_argument("--description", nargs=2, metavar=("A2B", "B2A"), help="override the descriptions")
    p.add_argument("--needs-face", nargs=2, choices=("yes", "no"), metavar=("A2B", "B2A"),
                   help="override whether each style crops around a face (yes/no)")
    # On a 2-core CPU a batch is slower per image than single requests (see
    # FACTS.md); raise these on a GPU.
    p.add_argument("--workers", type=int, default=1, help="TorchServe workers per style")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--max-batch-delay", type=int, default=50, help="ms to wait to fill a batch")
    p.add_argument("--response-timeout", type=int, default=120, help="seconds")
    p.add_argument("--inference", default="auto",
                   help="generator path: auto (fastest that passes the PSNR check), eager, or a path name")
    p.add_argument("--draw-size-factor", type=int, nargs="+", metavar="1|2",
                   help="run the (fully convolutional) generator at this multiple of its training size, for both "
                        "directions or A2B B2A (e.g. 1 2); replies default to that size times the upscaler's "
                        "scale (bench/output_size.py compares; default 1, from archives each keeps its own)")
    p.add_argument("--output-size", type=int, nargs=2, metavar=("A2B", "B2A"),
                   help="each direction's reply side in pixels, the drawn (and upscaled) picture resampled to it; "
                        "0: as drawn (default: as drawn; from archives, each keeps its own)")
    p.add_argument("--upscaler", nargs=2, metavar=("A2B", "B2A"),
                   help="each direction's learned upscaler after the generator: none or NAME:SCALE:DENOISE, "
                        "e.g. realcugan-se:4:denoise3x or realesrgan-compact:3:none (default: as the checkpoint "
                        "says, else none; from archives, each keeps its own)")
    p.add_argument("--fc0-weight", choices=FC0_WEIGHTS, default=None,
                   help="how the archives store the MLP's first layer (the full model's 268M-parameter FC.0): "
                        "int8 per output feature (a quarter of the memory, faster on a CPU; bench/full_tf_model.py) "
                        "or float (fp16 in the archive); default: as the checkpoint says (import-official: "
                        "int8 for a full model)")
    p.add_argument("--datasets", type=Path, default=None,
                   help="dataset root holding <pair>/testA ... (default: $DATASETS_DIR): each archive is then "
                        "measured on its pair's test split (quality.json, see `evaluate`)")
    p.add_argument("--warm-start", action="store_true",
                   help="also write the discriminators (fp16) to training/warm_start/NAME.pt for `fit --init-from`")
    p.set_defaults(func=export)
