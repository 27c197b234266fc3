"""Latency per 256 px image: each inference path, then each serving runtime.

    .venv/bin/python bench/latency.py [--threads 2] [--quick] [--only paths|runtimes|startup|load]

Inference paths: eager float32 (the baseline) beside every faster path that
`acceleration.candidates` offers on this CPU (exactly what serving can
choose), on random weights of the paper's light generator (ngf 64, 4 blocks,
256 px), which run exactly as fast as trained ones. Per path: PSNR against
float32 on the photos every archive ships (whole and face boxes), per-image median and p95 at batch 1
and 4, peak memory, and GFLOP/s achieved as a share of this CPU's peak, which
the bench measures itself with a large convolution.

Runtimes: median and p95 of the generator alone, the handler in-process and
through TorchServe, and the handler's overhead (decode, framing, resize,
encode, batching hop) as a share of the generator's time. Uses the style's
`.mar` from the model store, else random weights of the light generator.
TorchServe is started on free local ports (token auth on) and stopped
afterwards, unless --torchserve points at a running one.

Start-up (`--only startup`, not part of the default run): the embedded
engine over the model store, as the bots open it, with an empty compile cache
(a fresh clone) and then again with the one it filled (a second start):
seconds from process start to the first picture, to every style answering,
and to every style on its final path, which it names. Then the two commands
a user times by hand, each in a new process: `python -m serving stylize` on
one photo, and `python -m serving start` followed by a photo through
`--torchserve` (seconds after `start` returned; worker deaths counted).

Throughput (`--only load`): bench/load.py, the page as `make run` serves it
and a Telegram bot under bursts of users (page up, first picture, memory,
latencies).

The fastest path's goal: at least 2x eager float32 and 60 % of the measured
convolution peak of its number format (fp32, bf16 or int8), within the
PSNR floors on the photos.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone
sys.path.insert(0, str(ROOT / "styles" / "payload"))  # acceleration ships flat inside each .mar

import acceleration  # noqa: E402

from config import get_settings  # noqa: E402
from serving.api import StylizeError  # noqa: E402
from serving.client import TorchServeClient  # noqa: E402
from serving.engine import EmbeddedEngine, give_back_free_heap  # noqa: E402
from serving.torchserve import LocalTorchServe, Ports  # noqa: E402
from styles import catalog, loader  # noqa: E402
from styles.archive import Archive, model_config, scan, write_archive  # noqa: E402
from styles.payload.networks import ResnetGenerator  # noqa: E402
from training.hardware import cpu_name  # noqa: E402
from training.summary import gflops_per_image  # noqa: E402

IMAGES = {True: ROOT / "tests" / "fixtures" / "obama_256.jpg", False: ROOT / "tests" / "fixtures" / "chelsea_256.jpg"}
SIZE = 256
PAUSE = 0.3  # seconds between calls
BATCHES = (1, 4)
PEAK_CONV = (256, 64, 4)  # channels, side, batch: a convolution big enough to run near the CPU's peak
TARGET = (2.0, 0.60)  # the fastest path: speed-up over eager float32, share of its number format's measured peak
CPU = torch.device("cpu")
INT8_LIBRARIES = {"onednn", "fbgemm"}  # PyTorch's x86 int8 convolution kernels; the int8 graph calls oneDNN's


def light_generator() -> ResnetGenerator:
    """The paper's light generator (ngf 64, 4 blocks, 256 px) with seeded random weights."""
    torch.manual_seed(0)
    return ResnetGenerator(ngf=64, n_blocks=4, img_size=SIZE, light=True).eval()


def summary(seconds: list[float]) -> tuple[float, float]:
    """(median, p95) in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]


# --- inference paths: eager float32 beside each path serving can choose -------


@dataclass(frozen=True)
class PathRow:
    """One inference path: quality against float32, per-image times, memory and compute rate."""

    name: str
    psnr_db: float  # worst over the photos shipped in the archive
    face_db: float  # worst inside their face boxes
    ms: dict[int, tuple[float, float]]  # batch size -> (median, p95) per image
    peak_mib: float  # RSS high-water mark above the resting process while built and warmed up
    gflops: float  # achieved at batch 1 (median)
    share: float  # of the measured peak of the path's compute dtype; nan where not measured


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match, field  # Linux always reports VmRSS and VmHWM
    return int(match.group(1))


def reset_peak_rss() -> int:
    """Hand freed heap back to the OS and restart the RSS high-water mark; the resting RSS in KiB.

    Torch allocates CPU tensors with malloc, so RSS, not tracemalloc, sees them.
    """
    give_back_free_heap()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@torch.inference_mode()
def peak_gflops(dtype: torch.dtype, reps: int) -> float:
    """Best GFLOP/s of a large 3x3 convolution in `dtype`, channels-last as the paths run: this CPU's practical peak."""
    c, side, n = PEAK_CONV
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(n, c, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv(x)  # oneDNN picks and caches its kernel on the first call
    return 2 * c * c * 9 * side * side * n / min(_seconds(partial(conv, x)) for _ in range(reps)) / 1e9


@torch.inference_mode()
def peak_int8_gops(reps: int) -> float:
    """Best GOP/s of the same convolution in int8 (u8 activations, s8 weights per channel), the best of
    PyTorch's two x86 int8 kernel libraries (oneDNN, which the int8 graph's convolutions call, and FBGEMM):
    VNNI where the CPU has it."""
    import warnings

    import torch.ao.nn.quantized as nnq  # quantized tensors are deprecated, but call the same kernels

    c, side, n = PEAK_CONV
    engine, best = torch.backends.quantized.engine, 0.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for library in INT8_LIBRARIES & set(torch.backends.quantized.supported_engines):
                torch.backends.quantized.engine = library
                conv = nnq.Conv2d(c, c, 3, padding=1, bias=False)
                scales, zeros = torch.full((c,), 0.01), torch.zeros(c, dtype=torch.long)
                conv.set_weight_bias(torch.quantize_per_channel(torch.randn(c, c, 3, 3), scales, zeros, 0,
                                                                torch.qint8), None)
                conv.scale, conv.zero_point = 0.5, 128
                x = torch.quantize_per_tensor(torch.randn(n, c, side, side), 0.05, 128, torch.quint8)
                x = x.contiguous(memory_format=torch.channels_last)
                conv(x)
                best = max(best, 2 * c * c * 9 * side * side * n / min(_seconds(partial(conv, x)) for _ in range(reps)))
    finally:
        torch.backends.quantized.engine = engine
    return best / 1e9


def measure_peaks(reps: int) -> dict[str, float]:
    """Peak GFLOP/s (int8: GOP/s) per number format this CPU has instructions for."""
    peaks = {"fp32": peak_gflops(torch.float32, reps)}
    if acceleration.cpu_has_bf16():
        peaks["bf16"] = peak_gflops(torch.bfloat16, reps)
    if INT8_LIBRARIES & set(torch.backends.quantized.supported_engines):
        peaks["int8"] = peak_int8_gops(reps)
    return peaks


def number_format(path: str) -> str:
    """The number format a path's convolutions compute in (its peak is the one to compare with)."""
    return next((fmt for fmt in ("int8", "bf16") if fmt in path), "fp32")


@torch.inference_mode()
def paths_table(generator: nn.Module, img_size: int, peaks: dict[str, float], runs: int) -> list[PathRow]:
    """Eager float32 first, then each path `acceleration.candidates` offers here, timed turn by turn.

    Each path is built and warmed up (compiled) on its own first, with the RSS
    high-water mark reset, to measure its memory; the timed runs then take
    turns so that a busy machine's drifting load falls on all paths alike.
    """
    baseline = copy.deepcopy(generator).eval()  # candidates() turns its model channels-last in place
    builders = [("eager-fp32", lambda: acceleration.choose(baseline, img_size, CPU, prefer="eager").run)]
    builders += acceleration.candidates(copy.deepcopy(baseline), CPU)
    photos = acceleration.photo_batch(img_size)
    reference = baseline(photos)[0]
    inputs = {b: torch.rand(b, 3, img_size, img_size) * 2 - 1 for b in BATCHES}
    paths: dict[str, acceleration.Run] = {}
    quality: dict[str, tuple[float, float]] = {}
    memory: dict[str, float] = {}
    for name, build in builders:
        resting = reset_peak_rss()
        run = paths[name] = build()
        out = run(photos)
        quality[name] = acceleration.photo_quality(out, reference)
        for b in BATCHES:
            run(inputs[b])
        memory[name] = (_status_kib("VmHWM") - resting) / 1024
    times: dict[tuple[str, int], list[float]] = {(name, b): [] for name in paths for b in BATCHES}
    for _ in range(runs):
        for name, run in paths.items():
            for b in BATCHES:
                times[name, b].append(_seconds(partial(run, inputs[b])) / b)
    gflop = gflops_per_image(baseline, img_size)
    rows = []
    for name in paths:
        ms = {b: summary(times[name, b]) for b in BATCHES}
        gflops = gflop / (ms[1][0] / 1000)
        peak = peaks.get(number_format(name), math.nan)
        rows.append(PathRow(name, *quality[name], ms, memory[name], gflops, gflops / peak))
    return rows


def print_paths(rows: list[PathRow], peaks: dict[str, float]) -> None:
    """The side-by-side table, then how the fastest path within the PSNR floors compares with the goal."""
    print("peak " + ", ".join(f"{dtype} {value:.0f} {'GOP/s' if dtype == 'int8' else 'GFLOP/s'}"
                              for dtype, value in peaks.items())
          + f" (3x3 convolution {PEAK_CONV[0]}->{PEAK_CONV[0]} channels on {PEAK_CONV[1]} px, batch {PEAK_CONV[2]})")
    batch_heads = "".join(f" {f'b{b} median':>10} {f'b{b} p95':>8}" for b in BATCHES)
    print(f"\n{'path':24} {'PSNR dB':>7} {'faces':>6}{batch_heads} {'peak MiB':>8} {'GFLOP/s':>7} {'of peak':>7} {'speed-up':>8}")
    base = rows[0].ms[1][0]
    for r in rows:
        times = "".join(f" {r.ms[b][0]:10.1f} {r.ms[b][1]:8.1f}" for b in BATCHES)
        print(f"{r.name:24} {r.psnr_db:7.1f} {r.face_db:6.1f}{times} {r.peak_mib:8.0f} {r.gflops:7.1f} {r.share:7.0%} "
              f"{base / r.ms[1][0]:7.2f}x")
    print("(ms per image; GFLOP/s and speed-up at batch 1; at batch 4 the candidates run one image at a time)")
    best = min((r for r in rows if acceleration.passes(r.psnr_db, r.face_db)), key=lambda r: r.ms[1][0])
    seconds, speedup = best.ms[1][0] / 1000, base / best.ms[1][0]
    target_speedup, target_share = TARGET
    met = speedup >= target_speedup and best.share >= target_share
    print(f"fastest: {best.name}, {seconds:.3f} s per image, {speedup:.2f}x eager float32, {best.share:.0%} of the "
          f"{number_format(best.name)} peak, PSNR {best.psnr_db:.1f} dB (faces {best.face_db:.1f}); goal (>= "
          f"{target_speedup:.0f}x, >= {target_share:.0%} of its format's peak, >= {acceleration.PSNR_FLOOR_DB:.0f} / "
          f"{acceleration.FACE_FLOOR_DB:.0f} dB on photos): {'met' if met else 'not met'}")


def bench_paths(runs: int, peak_reps: int) -> None:
    """Measure this CPU's peak, then the paths table of the light 256 px generator."""
    peaks = measure_peaks(peak_reps)
    rows = paths_table(light_generator(), SIZE, peaks, runs)
    print_paths(rows, peaks)


# --- runtimes: the generator alone, the handler in-process, through TorchServe --


async def interleaved(calls: dict[str, Callable[[], Awaitable[object]]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Wall times of each path, taking turns call by call so that a busy
    machine's drifting load falls on all paths alike. A pause after each call
    lets its OpenMP threads stop spinning before the next path (TorchServe's
    worker is another process) needs the cores."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + runs):
        for name, call in calls.items():
            start = time.perf_counter()
            await call()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
            await asyncio.sleep(PAUSE)
    return times


def random_store(folder: Path, style: str) -> Path:
    """A model store with one random-weight light generator at 256 px, for timing only."""
    generator = light_generator()
    info = catalog.entry(style)
    config = model_config(generator.arch(), SIZE, info, workers=1, batch_size=1, max_batch_delay=0, response_timeout=120)
    write_archive(folder, style, "1.0", generator.state_dict(), config)
    return folder


def generator_call(archive: Archive, cache: Path) -> Callable[[], Awaitable[object]]:
    """The handler's own `generate` on a ready (1, 3, S, S) tensor: no decode, no encode."""
    handler, _ = loader.load_service(archive, loader.unpack(archive, cache))
    size = int(archive.handler["img_size"])
    real = torch.rand(1, 3, size, size) * 2 - 1

    async def call() -> None:
        with torch.inference_mode():
            handler.generate(real)

    return call


async def wait_until_served(client: TorchServeClient, style: str, image: bytes, timeout: float = 180) -> None:
    """Workers load for seconds after TorchServe answers /ping."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.stylize(style, image, size=SIZE)
            return
        except StylizeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def measure(archive: Archive, store: Path, cache: Path, url: str, token: str | None,
                  runs: int, warmup: int) -> dict[str, list[float]]:
    """The three paths on the same picture, interleaved."""
    style = archive.name
    image = IMAGES[archive.entry.needs_face].read_bytes()
    engine = EmbeddedEngine(store, cache_dir=cache, lanes=1)  # one at a time, on every thread, like the rest
    client = TorchServeClient(url, token)
    try:
        await wait_until_served(client, style, image)
        return await interleaved({
            "generator alone": generator_call(archive, cache),
            "handler in-process": lambda: engine.stylize(style, image, size=SIZE),
            "through TorchServe": lambda: client.stylize(style, image, size=SIZE),
        }, runs, warmup)
    finally:
        await engine.close()
        await client.close()


def bench_runtimes(args: argparse.Namespace) -> None:
    """The three runtimes on the style's archive (or random weights), interleaved."""
    with tempfile.TemporaryDirectory(prefix="toonbot-bench-") as tmp_name:
        tmp = Path(tmp_name)
        store = args.model_store
        found = scan(store) if store.is_dir() else {}
        if args.style not in found:
            print(f"{args.style} is not in {store}: timing random weights of the light 256 px generator")
            store = random_store(tmp / "store", args.style)
            found = scan(store)
        archive = found[args.style]
        print(f"{args.style} {archive.version}: arch {archive.config['handler']['arch']}, "
              f"{args.runs} runs after {args.warmup} warm-up")
        local = None
        url, token = args.torchserve, args.token
        if url is None:
            local = LocalTorchServe(tmp / "run", store, Ports.from_base(args.port))
            local.start(get_settings().torchserve_start_timeout_s)
            url, token = local.inference_url, local.keys().get("inference")
        try:
            rows = asyncio.run(measure(archive, store, tmp / "cache", url, token, args.runs, args.warmup))
        finally:
            if local is not None:
                local.stop()

    print(f"\n{'runtime':22} {'median ms':>10} {'p95 ms':>10}")
    for name, times in rows.items():
        median, p95 = summary(times)
        print(f"{name:22} {median:10.1f} {p95:10.1f}")
    gen = summary(rows["generator alone"])[0]
    handler = summary(rows["handler in-process"])[0]
    served = summary(rows["through TorchServe"])[0]
    print(f"\nhandler overhead: {handler - gen:.1f} ms = {(handler - gen) / gen:.0%} of the generator's time")
    print(f"TorchServe on top of the handler: {served - handler:.1f} ms")


# --- start-up: first picture, every style loaded, every style on its final path ---


def process_age() -> float:
    """Seconds since this process started (the clock a user would hold)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


async def startup(store: Path, unpacked: Path, first: str, since: float, final_wait: float) -> None:
    """One start of the embedded engine: when the first picture, every style and every final path came
    (waiting at most `final_wait` seconds for the background builds)."""
    engine = EmbeddedEngine(store, cache_dir=unpacked)
    image = IMAGES[False].read_bytes()
    try:
        await engine.stylize(first, image)
        print(f"  first picture ({first}) {time.monotonic() - since:6.1f} s")
        await engine.warm_up(first=first)
        print(f"  all {len(engine._workers)} styles answer {time.monotonic() - since:6.1f} s")
        deadline = time.monotonic() + final_wait
        for name, worker in sorted(engine._workers.items()):
            path = worker.handler.path
            if await asyncio.to_thread(path.ready.wait, max(0.0, deadline - time.monotonic())):
                print(f"  {name:16} on {path.path.name:24} {time.monotonic() - since:6.1f} s")
            else:
                print(f"  {name:16} still on {path.path.name}, its faster paths not built after {final_wait:.0f} s")
    finally:
        await engine.close()


def serving_command(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m serving ARGS` from the repository root, as the README has it."""
    return subprocess.run([sys.executable, "-m", "serving", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def bench_commands(store: Path, tmp: Path, port: int) -> None:
    """The two commands a user times by hand: a one-off CLI picture, and `serving start`, then a
    picture through it (retried until a worker answers), and whether any worker died meanwhile."""
    photo = IMAGES[False]
    began = time.monotonic()
    done = serving_command("--model-store", store, "stylize", photo, "--style", "cat2dog", "-o", tmp / "cli.png")
    print(f"  CLI, one photo, process start to exit {time.monotonic() - began:6.1f} s (goal < 5 s)"
          + ("" if done.returncode == 0 else f": FAILED {done.stderr.strip()[-300:]}"))
    local = ("--model-store", store, "--run-dir", tmp / "run", "--port", str(port))
    began = time.monotonic()
    started = serving_command(*local, "start")
    returned = time.monotonic()
    print(f"  `serving start` returned {returned - began:6.1f} s" + ("" if started.returncode == 0 else
                                                                     f": FAILED {started.stderr.strip()[-300:]}"))
    try:
        url = LocalTorchServe(tmp / "run", store, Ports.from_base(port)).inference_url
        while time.monotonic() - returned < 300:
            drawn = serving_command(*local, "stylize", photo, "--style", "cat2dog", "--torchserve", url,
                                    "-o", tmp / "ts.png")
            if drawn.returncode == 0:
                print(f"  picture through --torchserve {time.monotonic() - returned:6.1f} s after start returned "
                      "(goal <= 10 s)")
                break
            time.sleep(0.5)  # the workers are still loading
        else:
            print(f"  no picture through --torchserve within 300 s: {drawn.stderr.strip()[-300:]}")
        logs = "".join(f.read_text(errors="replace") for f in (tmp / "run" / "logs").glob("*.log"))
        print(f"  worker deaths {logs.count('process died') + logs.count('Worker disconnected')}")
    finally:
        serving_command(*local, "stop")


def bench_startup(args: argparse.Namespace) -> None:
    """A cold start (empty compile cache), then a warm one (the cache it filled), then the commands;
    with `--compile-cache`, one start over that cache (e.g. the one `make run` filled), then the commands."""
    print(f"start-up of the embedded engine over {args.model_store}, seconds since process start:")
    print(f"  imports done (torch, TorchServe's Python side, this bench) {process_age():6.1f} s")
    with tempfile.TemporaryDirectory(prefix="toonbot-bench-startup-") as tmp:
        cache = args.compile_cache or Path(tmp) / "compiled"
        os.environ.update(TOONBOT_INFERENCE="auto", TOONBOT_COMPILE_CACHE=str(cache))
        labels = ["fresh clone (empty compile cache)", "second start in this process (cache filled)"]
        if args.compile_cache:
            labels = [f"a start with the compile cache {cache}"]
        for i, label in enumerate(labels):
            print(label)
            since = time.monotonic() - (0.0 if i else process_age())
            asyncio.run(startup(args.model_store, Path(tmp) / "mar", args.style, since, args.final_wait))
        print(f"the commands, each in a new process (compile cache {'filled' if args.compile_cache else 'as left'}):")
        bench_commands(args.model_store, Path(tmp), args.port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("paths", "runtimes", "startup", "load"),
                        help="run one part (default: paths and runtimes); load: bench/load.py's throughput run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads in this process")
    parser.add_argument("--quick", action="store_true", help="3 runs, 1 warm-up: checks the bench, not the machine")
    parser.add_argument("--path-runs", type=int, default=10, help="timed runs per inference path and batch size")
    parser.add_argument("--peak-reps", type=int, default=10, help="repetitions of the peak-measuring convolution")
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--style", default="cat2dog")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per runtime")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--torchserve", metavar="URL", help="a running TorchServe serving the style")
    parser.add_argument("--token", default=os.environ.get("TORCHSERVE_TOKEN"))
    parser.add_argument("--port", type=int, default=28180, help="first of five free ports for the local TorchServe")
    parser.add_argument("--compile-cache", type=Path, help="start-up: one start over this filled cache instead")
    parser.add_argument("--final-wait", type=float, default=3600,
                        help="start-up: at most this many seconds for every style to reach its final path")
    args = parser.parse_args()
    if args.quick:
        args.runs = args.path_runs = args.peak_reps = 3
        args.warmup = 1
    torch.set_num_threads(args.threads)
    print(f"CPU {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 instructions "
          f"{'yes' if acceleration.cpu_has_bf16() else 'no'}, {torch.get_num_threads()} threads")
    if args.only == "startup":
        bench_startup(args)
        return 0
    if args.only == "load":  # the page and a Telegram bot under bursts, measured from outside their processes
        return subprocess.run([sys.executable, str(ROOT / "bench" / "load.py")], check=False).returncode
    if args.only != "runtimes":
        bench_paths(args.path_runs, args.peak_reps)
    if args.only != "paths":
        print()
        bench_runtimes(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
