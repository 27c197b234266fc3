"""Real-CUGAN in PyTorch (styles/payload/upscaler.py) against ncnn running the same weights, and the reply with it.

    .venv/bin/python bench/upscaler_speed.py [--runs 7] [--no-compiled] [--reply-runs 5] [--threads N]

Prints the CPU, then for 128 -> 256 px (2x) and 128 -> 512 px (4x) of a
selfie2anime picture (the shipped archive's generator on a public-domain face):
the median seconds of the reference, ncnn running the wheel's .param/.bin
(`ncnn_upscale`: realcugan-ncnn-vulkan's CPU path, its padding and rounding
included), and of each PyTorch path serving can choose (acceleration.py's
candidates; compiled graphs are kept in --cache, under the hash of
acceleration.py and upscaler.py), all timed in turns; each path's speed as a
ratio to ncnn, in wall and in CPU seconds; its rate in direct-convolution
GFLOP per CPU second, as a share of this CPU's peak for its number format (a
big 3x3 convolution, also per CPU second, so that a machine others share still
gives comparable shares; ncnn's Winograd convolutions can go past the float32
one); its max and mean absolute difference from ncnn's picture in 0..255
units; and its PSNR against eager float32 on the shipped photos (worst photo,
worst face box), the check serving makes before it uses a path. The goal
(1.5x ncnn's speed, wall and CPU) is judged twice: for output equal to
ncnn's (max diff <= 1, the tests' bound: float32 only) and within the
upscaler's photo floors (>= 45 dB: what serving accepts). Then the whole reply
for a face photo (bytes in, JPEG out, through face detection and framing) in
the embedded engine, the shipped selfie2anime re-packed without and with
`upscaler: {name: realcugan-se, scale: 4, denoise: denoise3x}`, each network on
the path a server would choose (`--reply-path`).

Measured on AMD EPYC family 25 model 17 (Zen 4: AVX-512, VNNI, BF16), 2 cores,
torch 2.13.0, a shared machine (docs/serving.md, "The upscaler, measured", has
the runs): with frozen graphs the compiled bf16 path is 1.6-2.2x ncnn's speed
on 2 threads (53.6 / 54.9 dB on the photos; max diff 7 / 9 of 255), 1.2-1.5x on
one thread, where it runs at 85-87 % of the bf16 peak and ncnn's Winograd
convolutions at 126-139 % of the float32 one; float32, the only path equal to
ncnn's picture, 0.5-1.3x.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone
sys.path.insert(0, str(ROOT / "styles" / "payload"))  # the payload imports its siblings flat

import acceleration  # noqa: E402
import upscaler  # noqa: E402

from training.hardware import cpu_name  # noqa: E402

FACE = ROOT / "tests" / "fixtures" / "obama_256.jpg"
STORE = ROOT / "model_store"
SIDE = 128  # what our generators draw
NAME, DENOISE = "realcugan-se", "denoise3x"
PATHS = ("eager-fp32", "cpu-eager-channels-last", "cpu-eager-bf16", "cpu-compiled-fp32", "cpu-compiled-bf16",
         "cpu-compiled-int8")
GOAL = 1.5  # times ncnn's speed, with equal output (see `verdicts`)
EQUAL = 1  # 0..255: the tests' bound against ncnn (a value within float error of .5 may round either way)
PAUSE = 0.3  # seconds between timed calls
PEAK_CONV = (256, 64, 4)  # channels, side, batch: bench/latency.py's convolution that runs near the peak


# --- the reference: ncnn, as realcugan-ncnn-vulkan's RealCUGAN::process_cpu runs it ------------


def ncnn_net(scale: int, denoise: str = DENOISE, name: str = NAME, threads: int = 1,
             files: tuple[Path, Path] | None = None):  # -> ncnn.Net
    """The wheel's model (or .param/.bin `files`) in ncnn on the CPU, with the options realcugan-ncnn-vulkan (and
    realesrgan-ncnn-vulkan) sets without a GPU."""
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.opt.use_fp16_packed, net.opt.use_fp16_storage, net.opt.use_fp16_arithmetic = True, False, False
    net.opt.use_int8_storage = True
    param, weights = files or upscaler.model_files(name, scale, denoise)
    if net.load_param(str(param)) or net.load_model(str(weights)):
        raise RuntimeError(f"ncnn could not load {param}")
    return net


def ncnn_upscale(net, pixels: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (sH, sW, 3) uint8, one tile: x / 255, reflect-pad by the prepadding (plus rows up
    to a multiple of 2, 4 for 3x), run, crop; then v * 255 + 0.5 (4x: plus the input pixel it covers)
    truncated and clamped, as ncnn's to_pixels does."""
    import ncnn

    h, w = pixels.shape[:2]
    pad, align = upscaler.NETWORKS[scale].prepadding, upscaler.NETWORKS[scale].align
    x = pixels.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
    x = np.pad(x, ((0, 0), (pad, pad + -h % align), (pad, pad + -w % align)), mode="reflect")
    x = np.ascontiguousarray(x)  # ncnn.Mat reads it in place: it must outlive the extraction
    ex = net.create_extractor()
    ex.input("in0", ncnn.Mat(x))
    _, out = ex.extract("out0")
    v = np.array(out)[:, : h * scale, : w * scale] * np.float32(255) + np.float32(0.5)
    if scale == 4:
        v += x[:, pad:pad + h, pad:pad + w].repeat(4, 1).repeat(4, 2) * np.float32(255)
    return np.clip(np.trunc(v), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def ncnn_realesrgan_upscale(net, pixels: np.ndarray, scale: int) -> np.ndarray:
    """A Real-ESRGAN model (realesr-animevideov3's compact network, the x4plus RRDBNets), (H, W, 3) uint8 ->
    (sH, sW, 3) uint8, one tile, as realesrgan-ncnn-vulkan's shaders do it: x / 255, reflect-pad by 10 px, run,
    crop the border (10 * scale px) off, then v * 255 + 0.5 floored and clamped."""
    import ncnn

    h, w = pixels.shape[:2]
    pad = upscaler.SRVGGNetCompact.prepadding
    x = pixels.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
    x = np.ascontiguousarray(np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="reflect"))
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(x))  # ncnn.Mat reads x in place: it must outlive the extraction
    _, out = ex.extract("output")
    v = np.array(out)[:, pad * scale : (pad + h) * scale, pad * scale : (pad + w) * scale]
    return np.clip(np.floor(v * np.float32(255) + np.float32(0.5)), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> (H, W, 3) uint8, as the handler encodes its pictures."""
    return ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def from_pixels(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1


# --- the bench -------------------------------------------------------------------------------------


def anime_picture() -> np.ndarray:
    """The shipped selfie2anime generator's 128 px picture of the face (the photo itself without the archive)."""
    face = Image.open(FACE).convert("RGB").resize((SIDE, SIDE), Image.LANCZOS)
    if not (STORE / "selfie2anime.mar").exists():
        return np.asarray(face)
    from training.showcase import load_generator, translate

    net, _ = load_generator(STORE / "selfie2anime.mar")
    return np.asarray(translate(net, face, SIDE))


@torch.inference_mode()
def peak_per_cpu_second(dtype: torch.dtype, reps: int = 5) -> float:
    """Best GFLOP per CPU second of a big channels-last 3x3 convolution in `dtype`: this CPU's practical peak."""
    c, side, n = PEAK_CONV
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(n, c, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv(x)  # oneDNN picks its kernel on the first call
    seconds = []
    for _ in range(reps):
        start = time.process_time()
        conv(x)
        seconds.append(time.process_time() - start)
    return 2 * c * c * 9 * side * side * n / min(seconds) / 1e9


def number_format(path: str) -> str:
    """The number format a path's convolutions compute in (ncnn's: float32)."""
    return next((fmt for fmt in ("int8", "bf16") if fmt in path), "fp32")


def payload_hash() -> str:
    """acceleration.py's and upscaler.py's source: a change to either compiles the cached graphs again."""
    digest = hashlib.sha256()
    for module in (acceleration, upscaler):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


def timed_in_turns(calls: dict[str, Callable[[], object]], runs: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each call, taking turns so that a busy machine's drifting load falls on
    all alike. A pause after each call lets its OpenMP threads stop spinning (ncnn and torch each bring
    their own) before the next one needs the cores. CPU seconds are this process's, all threads: on a
    machine others share, they tell the work apart from the waiting."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
            time.sleep(PAUSE)
    return {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for name, t in times.items()}


@torch.inference_mode()
def bench_scale(scale: int, pixels: np.ndarray, runs: int, compiled: bool, cache: Path,
                peaks: dict[str, float]) -> None:
    """One table: ncnn, then each PyTorch path, for SIDE -> scale * SIDE px."""
    net = ncnn_net(scale, threads=torch.get_num_threads())
    reference = ncnn_upscale(net, pixels, scale)
    x = from_pixels(pixels)
    model = upscaler.Upscaler(NAME, scale, DENOISE)
    with FlopCounterMode(display=False) as counter:
        model(x)
    gflop = counter.get_total_flops() / 1e9
    builders = {"eager-fp32": lambda: acceleration.choose(model, SIDE, torch.device("cpu"), prefer="eager").run}
    wanted = [p for p in PATHS if compiled or "compiled" not in p]
    folder = cache / f"{NAME}-{scale}x-{DENOISE}-{SIDE}px-torch{torch.__version__}-{payload_hash()}"
    builders |= dict(acceleration.candidates(upscaler.Upscaler(NAME, scale, DENOISE), torch.device("cpu"), SIDE,
                                             folder))
    runs_of = {"ncnn": lambda: ncnn_upscale(net, pixels, scale)}
    for name in wanted:
        if name in builders:
            started = time.perf_counter()
            runs_of[name] = builders[name]()
            if time.perf_counter() - started > 5:
                print(f"  (built {name} in {time.perf_counter() - started:.0f} s; kept in {folder})")
    diffs = {"ncnn": (0, 0.0)}
    for name, run in list(runs_of.items())[1:]:
        d = np.abs(to_pixels(run(x)).astype(int) - reference)
        diffs[name] = (int(d.max()), float(d.mean()))
    photos = photo_psnr({n: r for n, r in runs_of.items() if n != "ncnn"})
    seconds = timed_in_turns({n: (lambda r=r: r(x)) if n != "ncnn" else r for n, r in runs_of.items()}, runs)
    print(f"{SIDE} -> {SIDE * scale} px ({scale}x, {NAME} {DENOISE}, {gflop:.1f} GFLOP of direct convolutions), "
          f"median of {runs}:")
    print(f"  {'path':26} {'wall s':>7} {'vs ncnn':>8} {'CPU s':>7} {'vs ncnn':>8} {'GF/CPUs':>7} {'of peak':>7} "
          f"{'max diff':>8} {'mean diff':>9} {'photos dB (faces)':>17}")
    ncnn_wall, ncnn_cpu = seconds["ncnn"]
    for name, (wall, cpu) in seconds.items():
        rate, peak = gflop / cpu, peaks.get(number_format(name))
        share = f"{rate / peak:7.0%}" if peak else f"{'-':>7}"  # int8's peak is bench/latency.py's to measure
        db = f"{photos[name][0]:8.1f} ({photos[name][1]:5.1f})" if name in photos else "-"
        print(f"  {name:26} {wall:7.3f} {ncnn_wall / wall:7.2f}x {cpu:7.3f} {ncnn_cpu / cpu:7.2f}x {rate:7.1f} "
              f"{share} {diffs[name][0]:8d} {diffs[name][1]:9.3f} {db:>17}")
    ours = [n for n in seconds if n != "ncnn"]
    floors = upscaler.PSNR_FLOORS
    for label, names in (
        (f"equal to ncnn's picture (max diff <= {EQUAL} of 255, the tests' bound)",
         [n for n in ours if diffs[n][0] <= EQUAL]),
        (f"within the upscaler's photo floors (>= {floors[0]:.0f} dB, faces >= {floors[1]:.0f} dB against "
         "float32: what serving accepts)", [n for n in ours if acceleration.passes(*photos[n], floors)]),
    ):
        if names:
            best = min(names, key=lambda n: seconds[n][0])
            wall, cpu = ncnn_wall / seconds[best][0], ncnn_cpu / seconds[best][1]
            verdict = "met" if min(wall, cpu) >= GOAL else "not met"
            print(f"  fastest {label}: {best}, {wall:.2f}x ncnn's speed (CPU time {cpu:.2f}x), max diff "
                  f"{diffs[best][0]}; goal >= {GOAL}x in both: {verdict}")


def photo_psnr(runs_of: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> dict[str, tuple[float, float]]:
    """Each path's (worst photo, worst face box) PSNR against eager float32 on the shipped photos at SIDE px:
    the check serving runs before it swaps a path in."""
    batch = acceleration.photo_batch(SIDE)
    reference = torch.cat([runs_of["eager-fp32"](image[None]) for image in batch])
    return {name: acceleration.photo_quality(torch.cat([run(image[None]) for image in batch]).float(), reference)
            for name, run in runs_of.items()}


async def bench_reply(runs: int, path: str, cache: Path) -> None:
    """The whole reply for a face photo through the embedded engine, without and with the 4x upscaler."""
    from serving.engine import EmbeddedEngine
    from styles.archive import read_archive, write_archive

    archive = read_archive(STORE / "selfie2anime.mar")
    weights = archive.generator_weights()
    os.environ.update(TOONBOT_INFERENCE=path, TOONBOT_COMPILE_CACHE=str(cache))
    with tempfile.TemporaryDirectory(prefix="toonbot-bench-upscaler-") as tmp:
        store = Path(tmp) / "store"
        plain = dict(archive.config, handler={k: v for k, v in archive.handler.items() if k != "upscaler"})
        write_archive(store, "plain", "1.0", weights, plain)
        upscaled = dict(plain, handler={**plain["handler"], "upscaler": {"name": NAME, "scale": 4, "denoise": DENOISE}})
        write_archive(store, "upscaled", "1.0", weights, upscaled)
        engine = EmbeddedEngine(store, cache_dir=Path(tmp) / "mar")
        try:
            face = FACE.read_bytes()
            for style in ("plain", "upscaled"):
                await engine.stylize(style, face)
                handler = engine._workers[style].handler
                for part in (handler.path, handler.upscaler):
                    if part is not None:
                        await asyncio.to_thread(part.ready.wait)
            times: dict[str, list[tuple[float, float]]] = {"plain": [], "upscaled": []}
            sizes = {}
            for _ in range(runs):
                for style in times:
                    wall, cpu = time.perf_counter(), time.process_time()
                    result = await engine.stylize(style, face)
                    times[style].append((time.perf_counter() - wall, time.process_time() - cpu))
                    sizes[style] = Image.open(io.BytesIO(result.image)).size
                    await asyncio.sleep(PAUSE)
            print(f"reply for a face photo ({FACE.name}: bytes in, JPEG out, face found and framed) through the "
                  f"embedded engine, inference {path}, median of {runs}:")
            for style, t in times.items():
                handler = engine._workers[style].handler
                on = handler.path.path.name + (f" + upscaler on {handler.upscaler.path.name}" if handler.upscaler else "")
                print(f"  {style:9} {sizes[style][0]} px  wall {statistics.median(w for w, _ in t):6.3f} s  "
                      f"CPU {statistics.median(c for _, c in t):6.3f} s  ({on})")
        finally:
            await engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and ncnn threads")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per path")
    parser.add_argument("--no-compiled", dest="compiled", action="store_false",
                        help="skip the compiled paths (the first run builds each in a minute or two)")
    parser.add_argument("--scales", type=int, nargs="*", default=[2, 4], choices=(2, 3, 4), help="none: the reply only")
    parser.add_argument("--reply-runs", type=int, default=5, help="timed replies per style (0: skip)")
    parser.add_argument("--reply-path", default="auto",
                        help="the engine's inference path for both networks (TOONBOT_INFERENCE): auto (default) is "
                             "what a server chooses, built and cached on the first run; e.g. eager, cpu-compiled-bf16")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "toonbot" / "bench-upscaler")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 instructions "
          f"{'yes' if acceleration.cpu_has_bf16() else 'no'}, {torch.get_num_threads()} threads (ncnn too)")
    pixels = anime_picture()
    if args.scales:
        formats = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if acceleration.cpu_has_bf16() else {})}
        peaks = {fmt: peak_per_cpu_second(dtype) for fmt, dtype in formats.items()}
        print("peak " + ", ".join(f"{fmt} {v:.0f}" for fmt, v in peaks.items())
              + f" GFLOP per CPU second ({PEAK_CONV[0]}->{PEAK_CONV[0]} channels 3x3 on {PEAK_CONV[1]} px, "
                f"batch {PEAK_CONV[2]})")
    for scale in args.scales:
        bench_scale(scale, pixels, args.runs, args.compiled, args.cache, peaks)
    if args.reply_runs and (STORE / "selfie2anime.mar").exists():
        asyncio.run(bench_reply(args.reply_runs, args.reply_path, args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
