"""Many users at once: the page as `make run` serves it, measured from outside its process.

    .venv/bin/python bench/load.py [--users 30] [--bursts 3] [--style selfie2anime] [--lanes N] [--payload]

Starts `python -m bots web` on the bundled model store (its own SQLite file,
a free port, the per-IP cap raised so one machine can play many visitors;
`--payload`: the same archives with this source tree's handler files, so a
handler change counts before the archives are exported again) and measures,
from this process:

- start-up (`--fresh`: with an empty compile cache, as a fresh clone):
  seconds until the page answers, until the first picture, and until every
  bundled style has drawn one (each style's first request loads it);
- memory: the server's resident set (with its child processes, e.g. a
  background compile) once every style is loaded, and its peak; settled
  (the background builds done) and after the bursts, the server's own by
  kind of mapping (anonymous, main heap, torch's libraries, ...);
- one photo per style, each style loaded: seconds per reply;
- a burst: USERS visitors, each with its own cookie, upload a face photo at
  the same moment; latency per request (median, p95, max) and how many got a
  picture, repeated BURSTS times; and the server's CPU-seconds per upload
  (USERS x that / cores is the least the last of a burst can wait);
- a Telegram burst (`--telegram-users N`, 20 by default; 0 skips): then
  `python -m bots telegram` against the fake Bot API server the tests use
  (tests/fakes/telegram.py, on 127.0.0.1), N users sending a photo at the
  same moment; seconds until each has the picture back (goal: all within 6 s).

`--lanes N` sets TOONBOT_LANES (photos of one style drawn at once, see
serving/engine.py): `--lanes 1` is the engine as it was, one photo at a time
on all the threads.

Figures are printed with the CPU they ran on; judge them by the goal ratios
(p95 against 3 s, memory against 650 MB), and only on an otherwise idle
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
import zipfile
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import get_settings  # noqa: E402
from training.hardware import cpu_name  # noqa: E402

T = TypeVar("T")
FACES = sorted((ROOT / "tests" / "fixtures" / "faces").glob("*.jpg"))
QUIET = 30.0  # seconds without a compile child and with the server idle: the background builds are done
IDLE_CPU = 0.05  # the server's CPU-seconds per second below which it counts as idle (checking a cached graph on
# the photos, or timing paths between two compile children, takes more)


def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile: a value that was measured."""
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resident_mib(pid: int, children: bool = True) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` (plus its live children), in MiB."""
    now = peak = 0
    for p in [pid, *(_children(pid) if children else [])]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        fields = dict(re.findall(r"^(Vm\w+):\s+(\d+) kB", status, re.M))
        now += int(fields.get("VmRSS", 0))
        peak += int(fields.get("VmHWM", 0))
    return now / 1024, peak / 1024


def memory_kinds(pid: int) -> dict[str, float]:
    """`pid`'s resident MiB by kind of mapping (/proc/PID/smaps): where its memory goes."""
    kinds: dict[str, float] = {}
    kind = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            fields = line.split(maxsplit=5)
            kind = _mapping_kind(fields[5] if len(fields) == 6 else "")
        elif line.startswith("Rss:"):
            kinds[kind] = kinds.get(kind, 0.0) + int(line.split()[1]) / 1024
    return kinds


def _mapping_kind(path: str) -> str:
    if not path:  # glibc's thread arenas, blocks past its mmap threshold, thread stacks
        return "anonymous"
    if path == "[heap]":
        return "main heap"
    if "/aotinductor_" in path:
        return "compiled graphs' code"
    if "/torch/lib/" in path:
        return "torch's libraries"
    return "other libraries" if ".so" in path else "other files"


def show_kinds(pid: int) -> str:
    """The largest kinds first, on one line."""
    kinds = sorted(memory_kinds(pid).items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {mib:.0f}" for name, mib in kinds)


def cpu_seconds(pid: int) -> float:
    """The CPU time `pid` has used so far, all its threads, user and system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def with_payload(archive: Path, store: Path) -> Path:
    """A copy of `archive` in `store` whose Python files are this source tree's payload."""
    store.mkdir(parents=True, exist_ok=True)
    target = store / archive.name
    with zipfile.ZipFile(archive) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            if not item.filename.endswith(".py"):
                new.writestr(item, old.read(item))
        for source in sorted((ROOT / "styles" / "payload").glob("*.py")):
            new.write(source, source.name)
    return target


def start_bots(front_end: str, folder: Path, threads: int, fresh: bool, **env: str) -> subprocess.Popen[bytes]:
    """`python -m bots FRONT_END` on the bundled styles, with its own usage database and log."""
    env = {
        **os.environ,
        "MODEL_STORE": str(ROOT / "model_store"),
        "DATABASE_URL": f"sqlite+aiosqlite:///{folder / f'{front_end}.db'}",
        "OMP_NUM_THREADS": str(threads),
        **({"TOONBOT_COMPILE_CACHE": str(folder / "compiled")} if fresh else {}),
        **env,
    }
    log = open(folder / f"{front_end}.log", "wb")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen([sys.executable, "-m", "bots", front_end], cwd=ROOT, env=env, stdout=log, stderr=log)


def stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


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


async def wait_listening(url: str) -> None:
    async with aiohttp.ClientSession() as client:
        while True:
            try:
                async with client.get(f"{url}/api/styles") as r:
                    if r.status == 200 and (await r.json())["styles"]:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)


async def styles(url: str) -> list[str]:
    async with aiohttp.ClientSession() as client, client.get(f"{url}/api/styles") as r:
        return [s["name"] for s in (await r.json())["styles"]]


async def measure(args: argparse.Namespace, url: str, server: subprocess.Popen[bytes], began: float) -> None:
    await while_running(server, Path(args.log), asyncio.wait_for(wait_listening(url), 300))
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
    settled = quiet_since = time.perf_counter()
    cpu = cpu_seconds(server.pid)
    while time.perf_counter() - quiet_since < QUIET and time.perf_counter() - settled < args.settle:
        await asyncio.sleep(1)  # faster paths still being built in the background, one compile child at a time
        now = cpu_seconds(server.pid)
        if _children(server.pid) or now - cpu > IDLE_CPU:
            quiet_since = time.perf_counter()
        cpu = now
    rss, peak = resident_mib(server.pid, children=False)
    left = len(_children(server.pid))
    busy = f", {left} child processes still running" if left else ""
    print(f"memory, settled       {rss:6.0f} MiB resident, server alone (peak {peak:.0f} MiB; goal <= 650 MB), "
          f"{time.perf_counter() - began:.0f} s after start{busy}")
    print(f"  by kind, MiB: {show_kinds(server.pid)}")
    client = await visitor(url)
    try:
        each = [(name, (await upload(client, url, name, FACES[0]))[0]) for name in names]
    finally:
        await client.close()
    print("one photo per style   " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in each))

    clients = await asyncio.gather(*(visitor(url) for _ in range(args.users)))
    cpu = cpu_seconds(server.pid)
    try:
        latencies: list[float] = []
        ok = 0
        for burst in range(args.bursts):
            results = await asyncio.gather(*(
                upload(c, url, args.style, FACES[i % len(FACES)]) for i, c in enumerate(clients)
            ))
            latencies += [s for s, _ in results]
            ok += sum(status == 200 for _, status in results)
            last = max(s for s, _ in results)
            print(f"burst {burst + 1}: {args.users} uploads at once, last answered after {last:.2f} s")
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    cpu = (cpu_seconds(server.pid) - cpu) / len(latencies)
    print(f"web, {args.users} users x {args.bursts}: median {statistics.median(latencies):.2f} s, "
          f"p95 {p95(latencies):.2f} s (goal <= 3 s), max {max(latencies):.2f} s; {ok}/{len(latencies)} pictures")
    print(f"server CPU per upload  {cpu:.3f} s (all its threads; {args.users} at once need "
          f"{args.users * cpu / args.threads:.2f} s on {args.threads} cores however they are shared out)")
    rss, peak = resident_mib(server.pid)
    print(f"memory after bursts   {rss:6.0f} MiB resident (peak {peak:.0f} MiB)")
    await asyncio.sleep(1)  # the engine hands its free heap back once idle, in a thread of its own
    rss, peak = resident_mib(server.pid)
    print(f"  a second later      {rss:6.0f} MiB resident (goal <= 650 MB)")
    print(f"  by kind, MiB: {show_kinds(server.pid)}")


async def while_running(server: subprocess.Popen[bytes], log: Path, awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, unless the server exits first (then its log's tail, and stop)."""
    task = asyncio.ensure_future(awaitable)
    while not task.done():
        if server.poll() is not None:
            task.cancel()
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{' '.join(map(str, server.args))} exited with {server.returncode}:\n{tail}")
        await asyncio.wait({task}, timeout=0.2)
    return task.result()


async def telegram_burst(args: argparse.Namespace, folder: Path) -> None:
    """N private chats send a photo at the same moment; seconds until each has its picture."""
    from tests.fakes.telegram import FakeTelegram

    async with FakeTelegram() as api:
        bot = start_bots("telegram", folder, args.threads, args.fresh, MODEL_STORE=str(args.store),
                         TELEGRAM_TOKEN=api.token, TELEGRAM_API_URL=api.url)
        try:
            began = time.perf_counter()
            api.send_photo(1, FACES[0].read_bytes(), caption=f"/style {args.style}")
            await while_running(bot, folder / "telegram.log", api.wait_for("sendPhoto", chat_id=1, timeout=600))
            print(f"telegram: first picture {time.perf_counter() - began:.1f} s after start")
            users = range(100, 100 + args.telegram_users)

            async def picture(user: int) -> float:
                await api.wait_for("sendPhoto", chat_id=user, timeout=120)
                return time.perf_counter() - sent

            sent, cpu = time.perf_counter(), cpu_seconds(bot.pid)
            for i, user in enumerate(users):
                api.send_photo(user, FACES[i % len(FACES)].read_bytes(), caption=f"/style {args.style}")
            everyone = asyncio.gather(*(picture(u) for u in users))
            seconds = await while_running(bot, folder / "telegram.log", everyone)
            cpu = (cpu_seconds(bot.pid) - cpu) / len(seconds)
        finally:
            stop(bot)
    print(f"telegram, {args.telegram_users} users at once: median {statistics.median(seconds):.2f} s, "
          f"p95 {p95(seconds):.2f} s, all within {max(seconds):.2f} s (goal <= 6 s); bot CPU per photo {cpu:.3f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=30, help="web visitors per burst")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--telegram-users", type=int, default=20)
    parser.add_argument("--style", default="selfie2anime")
    parser.add_argument("--settle", type=float, default=600,
                        help="at most this many seconds to wait for the background builds before measuring memory")
    parser.add_argument("--fresh", action="store_true",
                        help="an empty compile cache, as on a fresh clone (default: this user's cache)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the server's OpenMP threads")
    parser.add_argument("--payload", action="store_true",
                        help="the bundled archives with this source tree's handler files")
    parser.add_argument("--lanes", type=int,
                        help="photos of one style drawn at once (TOONBOT_LANES; default: one per thread)")
    args = parser.parse_args()
    if args.lanes:
        os.environ["TOONBOT_LANES"] = str(args.lanes)
    lanes = int(os.environ.get("TOONBOT_LANES") or min(args.threads, get_settings().max_in_flight))  # as the engine
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; server threads {args.threads}, {lanes} lanes "
          f"of {max(1, args.threads // lanes)} thread(s); load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="toonbot-load-") as tmp:
        args.store = ROOT / "model_store"
        if args.payload:
            args.store = Path(tmp) / "store"
            for archive in sorted((ROOT / "model_store").glob("*.mar")):
                with_payload(archive, args.store)
        port = free_port()
        began = time.perf_counter()
        server = start_bots("web", Path(tmp), args.threads, args.fresh, MODEL_STORE=str(args.store),
                            WEB_PORT=str(port), WEB_REQUESTS_PER_MINUTE_PER_IP="100000")
        args.log = str(Path(tmp) / "web.log")
        try:
            asyncio.run(measure(args, f"http://127.0.0.1:{port}", server, began))
        finally:
            stop(server)
        if args.telegram_users:
            asyncio.run(telegram_burst(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
