"""Latency per 256 px image: the generator alone, the handler in-process, through TorchServe.

    .venv/bin/python bench/latency.py [--style cat2dog] [--runs 30]

Prints median and p95 per path, side by side, and the handler's overhead
(decode, framing, resize, encode, batching hop) as a share of the
generator's time. Uses the style's `.mar` from the model store; without one it
exports random weights of the paper's light generator (ngf 64, 4 blocks,
256 px), which run exactly as fast as trained ones. TorchServe is started on
free local ports (token auth on) and stopped afterwards, unless --torchserve
points at a running one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone

from serving import archives, catalog  # noqa: E402
from serving.api import StylizeError  # noqa: E402
from serving.client import TorchServeClient  # noqa: E402
from serving.engine import EmbeddedEngine  # noqa: E402
from serving.torchserve import LocalTorchServe, Ports  # noqa: E402
from training.export import model_config, write_archive  # noqa: E402
from training.networks import ResnetGenerator  # noqa: E402

IMAGES = {True: ROOT / "tests" / "fixtures" / "obama_256.jpg", False: ROOT / "tests" / "fixtures" / "chelsea_256.jpg"}
SIZE = 256
PAUSE = 0.3  # seconds between calls


def summary(seconds: list[float]) -> tuple[float, float]:
    """(median, p95) in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]


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
    generator = ResnetGenerator(ngf=64, n_blocks=4, img_size=SIZE, light=True)
    info = catalog.entry(style)
    config = model_config(generator.arch(), SIZE, info, workers=1, batch_size=1, max_batch_delay=0, response_timeout=120)
    write_archive(folder, style, "1.0", generator.state_dict(), config)
    return folder


def generator_call(archive: archives.Archive, cache: Path) -> Callable[[], Awaitable[object]]:
    """The handler's own `generate` on a ready (1, 3, S, S) tensor: no decode, no encode."""
    handler, _ = archives.load_service(archive, archives.unpack(archive, cache))
    size = int(archive.config["handler"]["img_size"])
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


async def measure(archive: archives.Archive, store: Path, cache: Path, url: str, token: str | None,
                  runs: int, warmup: int) -> dict[str, list[float]]:
    """The three paths on the same picture, interleaved."""
    style = archive.name
    image = IMAGES[bool(archive.config["handler"]["needs_face"])].read_bytes()
    engine = EmbeddedEngine(store, cache_dir=cache)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--style", default="cat2dog")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--torchserve", metavar="URL", help="a running TorchServe serving the style")
    parser.add_argument("--token", default=os.environ.get("TORCHSERVE_TOKEN"))
    parser.add_argument("--port", type=int, default=28180, help="first of five free ports for the local TorchServe")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="toonbot-bench-") as tmp_name:
        tmp = Path(tmp_name)
        store = args.model_store
        found = archives.scan(store) if store.is_dir() else {}
        if args.style not in found:
            print(f"{args.style} is not in {store}: timing random weights of the light 256 px generator")
            store = random_store(tmp / "store", args.style)
            found = archives.scan(store)
        archive = found[args.style]
        print(f"{args.style} {archive.version}: arch {archive.config['handler']['arch']}, "
              f"torch threads {torch.get_num_threads()}, {args.runs} runs after {args.warmup} warm-up")
        local = None
        url, token = args.torchserve, args.token
        if url is None:
            local = LocalTorchServe(tmp / "run", store, Ports.from_base(args.port))
            local.start()
            url, token = local.inference_url, local.keys().get("inference")
        try:
            rows = asyncio.run(measure(archive, store, tmp / "cache", url, token, args.runs, args.warmup))
        finally:
            if local is not None:
                local.stop()

    print(f"\n{'path':22} {'median ms':>10} {'p95 ms':>10}")
    for name, times in rows.items():
        median, p95 = summary(times)
        print(f"{name:22} {median:10.1f} {p95:10.1f}")
    gen = summary(rows["generator alone"])[0]
    handler = summary(rows["handler in-process"])[0]
    served = summary(rows["through TorchServe"])[0]
    print(f"\nhandler overhead: {handler - gen:.1f} ms = {(handler - gen) / gen:.0%} of the generator's time")
    print(f"TorchServe on top of the handler: {served - handler:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
