"""Many users at once: the page as `make run` serves it, measured from outside its process.

    .venv/bin/python bench/load.py [--users 30] [--bursts 3] [--style selfie2anime]

Starts `python -m bots web` on the bundled model store (its own SQLite file,
a free port, the per-IP cap raised so one machine can play many visitors)
and measures, from this process:

- start-up (`--fresh`: with an empty compile cache, as a fresh clone): seconds until the page answers, until the first picture, and
  until every bundled style has drawn one (each style's first request loads it);
- memory: the server's resident set (with its child processes, e.g. a
  background compile) once every style is loaded, and its peak;
- a burst: USERS visitors, each with its own cookie, upload a face photo at
  the same moment; latency per request (median, p95, max) and how many got a
  picture, repeated BURSTS times.

Figures are printed with the CPU they ran on; judge them by the goal ratios
(p95 against 2 s, memory against 600 MB), and only on an otherwise idle
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.hardware import cpu_name  # noqa: E402

FACES = sorted((ROOT / "tests" / "fixtures" / "faces").glob("*.jpg"))


def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile: a value that was measured."""
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resident_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` plus its live children, in MiB."""
    now = peak = 0
    for p in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        fields = dict(re.findall(r"^(Vm\w+):\s+(\d+) kB", status, re.M))
        now += int(fields.get("VmRSS", 0))
        peak += int(fields.get("VmHWM", 0))
    return now / 1024, peak / 1024


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *_children(kid)]
    return found


def start_page(port: int, folder: Path, threads: int, fresh: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MODEL_STORE": str(ROOT / "model_store"),
        "DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'usage.db'}",
        "WEB_PORT": str(port),
        "WEB_REQUESTS_PER_MINUTE_PER_IP": "100000",
        "OMP_NUM_THREADS": str(threads),
        **({"TOONBOT_COMPILE_CACHE": str(folder / "compiled")} if fresh else {}),
    }
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen([sys.executable, "-m", "bots", "web"], cwd=ROOT, env=env, stdout=log, stderr=log)


async def visitor(url: str) -> aiohttp.ClientSession:
    """A client with its own signed cookie, as one browser tab has."""
    client = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with client.get(f"{url}/") as r:
        await r.read()
    return client


async def upload(client: aiohttp.ClientSession, url: str, style: str, photo: Path) -> tuple[float, int]:
    form = aiohttp.FormData()
    form.add_field("style", style)
    form.add_field("image", photo.read_bytes(), filename=photo.name, content_type="image/jpeg")
    t = time.perf_counter()
    async with client.post(f"{url}/api/stylize", data=form) as r:
        await r.read()
        return time.perf_counter() - t, r.status


async def wait_listening(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    async with aiohttp.ClientSession() as client:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if server.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise SystemExit(f"the page exited with {server.returncode}:\n{tail}")
            try:
                async with client.get(f"{url}/api/styles") as r:
                    if r.status == 200 and (await r.json())["styles"]:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("the page did not answer in time")


async def styles(url: str) -> list[str]:
    async with aiohttp.ClientSession() as client, client.get(f"{url}/api/styles") as r:
        return [s["name"] for s in (await r.json())["styles"]]


async def measure(args: argparse.Namespace, url: str, server: subprocess.Popen[bytes], began: float) -> None:
    await wait_listening(url, server, Path(args.log))
    print(f"page answers          {time.perf_counter() - began:6.1f} s after start")
    client = await visitor(url)
    try:
        first = await upload(client, url, args.style, FACES[0])
        print(f"first picture         {time.perf_counter() - began:6.1f} s   (HTTP {first[1]}, {args.style})")
        names = await styles(url)
        for name in names:
            seconds, status = await upload(client, url, name, FACES[0])
            if status != 200:
                print(f"  {name}: HTTP {status}")
        print(f"all {len(names)} styles drew      {time.perf_counter() - began:6.1f} s")
    finally:
        await client.close()
    rss, peak = resident_mib(server.pid)
    print(f"memory, all loaded    {rss:6.0f} MiB resident with its child processes (peak {peak:.0f} MiB)")
    settled = time.perf_counter()
    while _children(server.pid) and time.perf_counter() - settled < args.settle:
        await asyncio.sleep(1)  # faster paths still being built in the background
    rss, peak = resident_mib(server.pid)
    left = len(_children(server.pid))
    print(f"memory, settled       {rss:6.0f} MiB resident (peak {peak:.0f} MiB; goal <= 600 MB), "
          f"{time.perf_counter() - began:.0f} s after start" + (f", {left} child processes still running" if left else ""))

    clients = await asyncio.gather(*(visitor(url) for _ in range(args.users)))
    try:
        latencies: list[float] = []
        ok = 0
        for burst in range(args.bursts):
            results = await asyncio.gather(*(
                upload(c, url, args.style, FACES[i % len(FACES)]) for i, c in enumerate(clients)
            ))
            latencies += [s for s, _ in results]
            ok += sum(status == 200 for _, status in results)
            print(f"burst {burst + 1}: {args.users} uploads at once, last answered after {max(s for s, _ in results):.2f} s")
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    print(f"web, {args.users} users x {args.bursts}: median {statistics.median(latencies):.2f} s, "
          f"p95 {p95(latencies):.2f} s (goal <= 2 s), max {max(latencies):.2f} s; {ok}/{len(latencies)} pictures")
    rss, peak = resident_mib(server.pid)
    print(f"memory after bursts   {rss:6.0f} MiB resident (peak {peak:.0f} MiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--style", default="selfie2anime")
    parser.add_argument("--settle", type=float, default=600,
                        help="seconds to wait for background builds to finish before measuring memory")
    parser.add_argument("--fresh", action="store_true",
                        help="an empty compile cache, as on a fresh clone (default: this user's cache)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the server's OpenMP threads")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; server threads {args.threads}")
    with tempfile.TemporaryDirectory(prefix="toonbot-load-") as tmp:
        port = free_port()
        began = time.perf_counter()
        server = start_page(port, Path(tmp), args.threads, args.fresh)
        args.log = str(Path(tmp) / "server.log")
        try:
            asyncio.run(measure(args, f"http://127.0.0.1:{port}", server, began))
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
