"""`python -m serving start` from the repository root, as the README says: every bundled style, a picture back.

The run folder and the model store are given relative to the repository root
(as the defaults `.cache/torchserve` and `model_store` are), which TorchServe
once got as its temp path while running inside the run folder. The store holds
the bundled styles repacked with this checkout's handler files (the bundled
archives carry the handler of their export). The handlers choose their paths
as in production (`TOONBOT_INFERENCE=auto`): compiling in the background must
not delay a worker's start, so no worker dies and none is restarted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from functools import partial
from pathlib import Path

import pytest
from PIL import Image
from torchserve_fixture import model_log, running_torchserve, wait_for_workers
from waiting import START_S

from serving.torchserve import LocalTorchServe
from styles.archive import PAYLOAD, scan

ROOT = Path(__file__).resolve().parents[1]
CAT = Path(__file__).with_name("fixtures") / "chelsea_256.jpg"


def repacked(store: Path) -> Path:
    """The bundled archives in `store`, their payload files replaced by styles/payload/'s."""
    store.mkdir()
    current = {p.name: p.read_bytes() for p in PAYLOAD.glob("*.py")}
    for mar in (ROOT / "model_store").glob("*.mar"):
        with zipfile.ZipFile(mar) as src, zipfile.ZipFile(store / mar.name, "w") as dst:
            for item in src.infolist():
                if item.filename not in current:
                    dst.writestr(item, src.read(item))
            for name, data in current.items():
                dst.writestr(name, data)
    return store


def from_root(*args: str | Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m serving ARGS` run in the repository root."""
    return subprocess.run([sys.executable, "-m", "serving", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def local(ts: LocalTorchServe) -> list[str]:
    """The command line's options for `ts`, its folders relative to the repository root (like the defaults)."""
    return ["--model-store", os.path.relpath(ts.model_store, ROOT), "--run-dir", os.path.relpath(ts.run_dir, ROOT),
            "--port", str(ts.ports.inference)]


def start_from_root(ts: LocalTorchServe, *, env: dict[str, str]) -> None:
    """`python -m serving start` for `ts` (within its own TORCHSERVE_START_TIMEOUT_S); a failure is a failed
    start, which `running_torchserve` retries on other ports (some other process may have taken one first)."""
    started = from_root(*local(ts), "start", env=env, timeout=START_S)
    if started.returncode != 0:
        raise RuntimeError(f"python -m serving start failed: {started.stderr}")


@pytest.mark.slow
def test_start_from_the_repository_root_serves_the_bundled_styles(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHSERVE_", "MODEL_STORE"))}
    env.update(OMP_NUM_THREADS="1", TOONBOT_INFERENCE="auto", TOONBOT_COMPILE_CACHE=str(tmp_path / "compiled"))
    store = repacked(tmp_path / "store")
    start = partial(start_from_root, env=env)
    with running_torchserve(store, tmp_path / "run", token_auth=True, consecutive=True, start=start) as ts:
        since = time.monotonic()
        wait_for_workers(ts, "cat2dog", 1, timeout=60)
        result = from_root(*local(ts), "stylize", CAT, "--style", "cat2dog", "--torchserve", ts.inference_url,
                           "-o", tmp_path / "dog.png", "--format", "png", env=env)
        assert result.returncode == 0, result.stderr
        print(f"picture {time.monotonic() - since:.1f} s after `start` returned")
        assert Image.open(tmp_path / "dog.png").size[0] > 0
        for style in scan(store):
            wait_for_workers(ts, style, 1, timeout=60)
        logs = model_log(ts) + (ts.run_dir / "logs" / "ts_log.log").read_text(errors="replace")
        assert "process died" not in logs and "Worker disconnected" not in logs
        assert from_root(*local(ts), "stop", env=env).returncode == 0
