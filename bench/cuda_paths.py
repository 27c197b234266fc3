"""Exercise the CUDA code paths that a CPU machine never runs, and say what each did.

    python bench/cuda_paths.py [--model-store model_store] [--style selfie2anime]

- the trainer's fp16 autocast with its GradScaler and its bf16 autocast: a few
  steps each of a small configuration, losses finite, generator weights moved;
- the packaged handler on the GPU through the embedded engine (the TorchServe
  worker's code path with `gpu_id` 0): a public-domain face, and the PSNR of
  the GPU's picture against the same archive run on the CPU.

Prints one line per check with its figures; exits non-zero if one fails. On a
machine without CUDA it says so and exits 2. Run by training/gpu_stretch.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone

from training.distributed import Runtime  # noqa: E402
from training.options import TrainOptions  # noqa: E402
from training.trainer import Trainer  # noqa: E402

FACE = ROOT / "tests" / "fixtures" / "obama_256.jpg"


def train_steps(precision: str, steps: int = 8) -> str:
    """A few autocast training steps on the GPU; raises if a loss is not finite or nothing learned."""
    opts = TrainOptions(name="cuda2check", data="", img_size=64, ch=16, n_res=2, light=True,
                        n_dis_global=5, n_dis_local=4, batch_size=4, precision=precision, iters=1000)
    trainer = Trainer(opts, Runtime(device=torch.device("cuda", 0)))
    before = [p.detach().clone() for p in trainer.nets["genA2B"].parameters()]
    real_A, real_B = (torch.rand(2, 4, 3, 64, 64, device="cuda") * 2 - 1).unbind(0)
    start = time.perf_counter()
    for _ in range(steps):
        losses = trainer.train_step(real_A, real_B)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    if not all(math.isfinite(v) for v in losses.values()):
        raise RuntimeError(f"{precision}: non-finite losses {losses}")
    moved = sum(float((p - b).abs().max()) for p, b in zip(trainer.nets["genA2B"].parameters(), before))
    if moved == 0:
        raise RuntimeError(f"{precision}: the generator did not change")
    scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None
    return (f"trainer {precision} autocast ({trainer.amp_dtype}): {steps} steps, {seconds * 1000:.0f} ms/step, "
            f"G {losses['G_loss']:.3f}, D {losses['D_loss']:.3f}, grad scaler {scale}")


async def handler_picture(store: Path, style: str, image: bytes) -> bytes:
    """The packaged handler's PNG via the embedded engine, on whatever device this process sees."""
    from serving.engine import EmbeddedEngine

    engine = EmbeddedEngine(store, cache_dir=Path("/tmp/toonbot-mar-cache"))
    try:
        return (await engine.stylize(style, image, fmt="png")).image
    finally:
        await engine.close()


def handler_check(store: Path, style: str) -> str:
    """The handler on the GPU against the same archive in a process that sees no GPU."""
    start = time.perf_counter()
    gpu = asyncio.run(handler_picture(store, style, FACE.read_bytes()))
    gpu_s = time.perf_counter() - start
    reference = Path("/tmp/toonbot-cpu-reference.png")
    cmd = [sys.executable, __file__, "--model-store", str(store), "--style", style, "--picture", str(reference)]
    subprocess.run(cmd, check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=600)
    a, b = (np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
            for data in (gpu, reference.read_bytes()))
    mse = float(((a - b) ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
    if psnr < 30:
        raise RuntimeError(f"handler on CUDA differs from the CPU: PSNR {psnr:.1f} dB")
    return f"handler {style} on CUDA: {a.shape[1]} px, first request incl. load {gpu_s:.1f} s, PSNR vs CPU {psnr:.1f} dB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--style", default="selfie2anime")
    parser.add_argument("--picture", type=Path, help="only write the handler's picture of the test face here")
    args = parser.parse_args()
    if args.picture:
        args.picture.write_bytes(asyncio.run(handler_picture(args.model_store, args.style, FACE.read_bytes())))
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    print(f"GPU {torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    failed = 0
    checks = [lambda: train_steps("fp16"), lambda: train_steps("bf16"),
              lambda: handler_check(args.model_store, args.style)]
    for check in checks:
        try:
            print("ok  ", check(), flush=True)
        except Exception as exc:  # report every check, then fail
            failed += 1
            print("FAIL", f"{type(exc).__name__}: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
