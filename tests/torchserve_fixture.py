"""Real TorchServe instances and tiny exported styles, for any test that needs them.

`running_torchserve` starts Java on free ports with its own run folder (temp
dir, key file, logs) and stops it afterwards; `export_tiny_styles` writes
random-weight generators (img_size 32) as real `.mar` files. Import them from
a test module: `from torchserve_fixture import running_torchserve, ...`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from serving.torchserve import LocalTorchServe, Ports
from training import export
from training.checkpoint import save_checkpoint
from styles.payload.networks import ResnetGenerator

TINY = {"ngf": 8, "n_blocks": 1, "img_size": 32, "light": True}
# Java alone has taken over a minute to start on the loaded 2-core machine (90 s, once the default, was too short).
START_TIMEOUT_S = 300.0


def _ephemeral_ports() -> range:
    """The ports the kernel hands out by itself: to a bind to port 0, and to every outgoing connection."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


# Where a test picks a port for a server that binds it later (a child process, Java, a bot's webhook):
# never one the kernel may give another socket in the meantime. A port from a bind to port 0 is free only
# until it is closed: the next outgoing connection on the machine may take it as its own end.
PICKABLE = frozenset(range(10000, 65536)) - frozenset(_ephemeral_ports())


def _free(port: int) -> bool:
    """Whether nothing holds `port` on 127.0.0.1 now (not even a connection closing: no SO_REUSEADDR)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now, outside the kernel's ephemeral range (`PICKABLE`), for servers
    that cannot bind port 0 and say which port they got."""
    ports: list[int] = []
    candidates = sorted(PICKABLE)
    for _ in range(200 * count):
        port = random.choice(candidates)
        if port not in ports and _free(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free ports found")


def free_port_block(count: int) -> int:
    """A first port such that `count` consecutive ports are free now, outside the ephemeral range (for
    `--port` flags)."""
    candidates = sorted(PICKABLE)
    for _ in range(200):
        base = random.choice(candidates)
        block = range(base, base + count)
        if all(p in PICKABLE for p in block) and all(_free(p) for p in block):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def tiny_checkpoint(path: Path, name: str, seed: int = 0) -> Path:
    """A checkpoint of the trainer's layout with two random tiny generators."""
    torch.manual_seed(seed)
    a2b, b2a = ResnetGenerator(**TINY), ResnetGenerator(**TINY)
    return save_checkpoint(path, {
        "options": {"name": name, "img_size": TINY["img_size"]},
        "generator_arch": a2b.arch(),
        "step": 0,
        "networks": {"genA2B": a2b.state_dict(), "genB2A": b2a.state_dict()},
    })


def export_tiny_styles(store: Path, name: str, *extra_args: str, seed: int = 0) -> None:
    """`python -m training export` of a tiny checkpoint of run `name` into `store`."""
    ckpt = tiny_checkpoint(store.parent / f"{name}-{seed}.ckpt", name, seed)
    parser = argparse.ArgumentParser()
    export.add_parser(parser.add_subparsers())
    args = parser.parse_args(["export", str(ckpt), "--out", str(store), *extra_args])
    assert args.func(args) == 0


def _start(ts: LocalTorchServe) -> None:
    """`LocalTorchServe.start`, given Java's start time on the loaded machine."""
    ts.start(START_TIMEOUT_S)


@contextmanager
def running_torchserve(
    model_store: Path, run_dir: Path, *, token_auth: bool = False, consecutive: bool = False,
    start: Callable[[LocalTorchServe], None] = _start,
) -> Iterator[LocalTorchServe]:
    """A real TorchServe over `model_store` on free ports, stopped on exit; `consecutive`: on five
    consecutive ones, TorchServe's own layout, which replicas listed in TORCHSERVE_MANAGEMENT_URL and the
    command line's `--port` keep. `start` starts the instance it is given (a test of the command line,
    or of the versions served, starts it its own way); RuntimeError or TimeoutError is a failed start.

    Ports free a moment ago may be taken by another process before Java binds
    them (TorchServe cannot report ports it chose itself: asked for port 0 it
    serves inference and management on one port), so a start that fails or whose
    Java does not own all five ports is stopped and retried on others.
    """
    error: Exception | None = None
    for attempt in range(3):
        folder = run_dir if attempt == 0 else run_dir / f"retry{attempt}"
        ports = Ports.from_base(free_port_block(5)) if consecutive else Ports(*free_ports(5))
        ts = LocalTorchServe(folder, model_store, ports, token_auth)
        try:
            start(ts)
        except (RuntimeError, TimeoutError) as failed:
            error = failed
            ts.stop()
            continue
        if ts.owns_its_ports():
            break
        ts.stop()
    else:
        raise RuntimeError(f"TorchServe could not bind its ports in 3 tries; see {run_dir}") from error
    try:
        yield ts
    finally:
        ts.stop()


def management(ts: LocalTorchServe, method: str, path: str) -> tuple[int, Any]:
    """Call the management API (with its key when token auth is on); (status, parsed JSON)."""
    request = urllib.request.Request(f"{ts.management_url}{path}", method=method)
    if key := ts.keys().get("management"):
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def ready_workers(ts: LocalTorchServe, model: str) -> list[dict[str, Any]]:
    """The model's workers in state READY."""
    status, body = management(ts, "GET", f"/models/{model}")
    return [w for w in body[0]["workers"] if w["status"] == "READY"] if status == 200 else []


def wait_for_workers(
    ts: LocalTorchServe, model: str, count: int, timeout: float = START_TIMEOUT_S
) -> list[dict[str, Any]]:
    """Block until `count` workers of the model are READY; returns them. (A worker loads torch and its
    archive: 90 s were too few beside training on the 2-core machine, so it gets Java's own start time.)"""
    deadline = time.monotonic() + timeout
    while len(workers := ready_workers(ts, model)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model}: {len(workers)} of {count} workers ready after {timeout:.0f} s")
        time.sleep(0.3)
    return workers


def model_log(ts: LocalTorchServe) -> str:
    """What the Python workers printed (the handler's log lines)."""
    path = ts.run_dir / "logs" / "model_log.log"
    return path.read_text(errors="replace") if path.exists() else ""


def handed_to_worker(ts: LocalTorchServe, model: str) -> int:
    """Batches of predictions the frontend has handed to `model`'s workers so far: each is out of the
    job queue for good (TorchServe's debug line in ts_log.log, from the worker's own thread)."""
    path = ts.run_dir / "logs" / "ts_log.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return len(re.findall(rf" W-\d+-{re.escape(model)}_\S+ \S+ - Flushing req\.cmd PREDICT ", text))
