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
from pathlib import Path

import pytest
from PIL import Image
from torchserve_fixture import free_port_block, model_log, wait_for_workers

from serving.torchserve import LocalTorchServe, Ports
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


@pytest.mark.slow
def test_start_from_the_repository_root_serves_the_bundled_styles(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHSERVE_", "MODEL_STORE"))}
    env.update(OMP_NUM_THREADS="1", TOONBOT_INFERENCE="auto", TOONBOT_COMPILE_CACHE=str(tmp_path / "compiled"))
    store = os.path.relpath(repacked(tmp_path / "store"), ROOT)  # relative, like the defaults
    run_dir = os.path.relpath(tmp_path / "run", ROOT)
    port = free_port_block(5)
    local = ["--model-store", store, "--run-dir", run_dir, "--port", str(port)]
    started = from_root(*local, "start", env=env)
    assert started.returncode == 0, started.stderr
    ts = LocalTorchServe(ROOT / run_dir, ROOT / store, Ports.from_base(port))
    try:
        since = time.monotonic()
        wait_for_workers(ts, "cat2dog", 1, timeout=60)
        result = from_root(*local, "stylize", CAT, "--style", "cat2dog", "--torchserve", ts.inference_url,
                           "-o", tmp_path / "dog.png", "--format", "png", env=env)
        assert result.returncode == 0, result.stderr
        print(f"picture {time.monotonic() - since:.1f} s after `start` returned")
        assert Image.open(tmp_path / "dog.png").size[0] > 0
        for style in scan(ROOT / store):
            wait_for_workers(ts, style, 1, timeout=60)
        logs = model_log(ts) + (ts.run_dir / "logs" / "ts_log.log").read_text(errors="replace")
        assert "process died" not in logs and "Worker disconnected" not in logs
    finally:
        assert from_root(*local, "stop", env=env).returncode == 0
