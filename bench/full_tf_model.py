"""The authors' full model (tf_compat, 256 px, 279M parameters per direction) served on the CPU by the real handler.

    .venv/bin/python bench/full_tf_model.py [--threads 2] [--runs 5] [--tf PREFIX] [--cache DIR] [--formats ...]

The imported selfie2anime is written as `import-official` writes it (export's `stored_as`, `model_config` with
its default upscaler, `write_archive`), once per storage of the MLP's first layer (`FC.0`, 268M parameters):
`float` (fp16 in the archive, float32 in memory) and `int8` (per output feature, `Int8Linear`: what
`import-official` writes for a full model). Each is opened in a fresh process beside the bundled styles
(model_store/, eager) by the handler, as the embedded engine and TorchServe open it, and left to choose its
path: acceleration builds each faster path, checks it on the photos, times them in turns and keeps the
verdict in --cache (a second run only loads it). Per format:

- resident memory the style adds: after its path is chosen and a face photo is answered, and at its peak
  (compiling runs in child processes, not counted);
- the chosen path and the verdict's own times per path (wall, taken in turns, at the build's low priority);
- seconds per 256 px picture on the chosen path, wall and CPU (all threads), and the whole request for a
  face photo (decode, framing, generator, upscaler to 512 px, JPEG), median of --runs taken in turns;
- the generator's output on the photos against the float32 network (max abs difference in [-1, 1] and PSNR),
  on the eager path (the storage alone) and on the chosen path.

Random weights unless --tf names the authors' checkpoint: time and memory do not depend on them; the
difference from float32 does (export checks the int8 layer on the photos: 76 dB here).

Figures, and what brought the start's peak under 600 MB: docs/training.md, "The authors' TensorFlow checkpoints".
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone
sys.path.insert(0, str(ROOT / "styles" / "payload"))  # the payload imports its siblings flat

import acceleration  # noqa: E402

from serving.engine import give_back_free_heap  # noqa: E402
from styles import catalog, loader  # noqa: E402
from styles.archive import model_config, read_archive, scan, write_archive  # noqa: E402
from styles.payload.networks import FC0_WEIGHTS, ResnetGenerator  # noqa: E402
from training import export, official_tf  # noqa: E402
from training.hardware import cpu_name  # noqa: E402

FACE = ROOT / "tests" / "fixtures" / "obama_256.jpg"
STORE = ROOT / "model_store"
STYLE, SIZE = "selfie2anime", 256


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def unique_mb(pid: int) -> float:
    """A process's unique pages (USS: what the machine gets back when it ends; pages it shares with this
    process, such as torch's libraries or a mapped weights file, are counted once, here)."""
    try:
        fields = dict(line.split(":")[:2] for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    except (OSError, ValueError):
        return 0.0
    return sum(int(fields.get(k, "0 kB").split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1024


class PeakRSS:
    """The highest resident size seen, sampled every 20 ms (ru_maxrss would count the parent that forked us);
    `tree_mb`: the same with every child's unique pages added (compile helpers and their compilers)."""

    def __init__(self) -> None:
        self.reset()
        threading.Thread(target=self._sample, daemon=True).start()

    def reset(self) -> None:
        self.mb = self.tree_mb = rss_mb()
        self.children_mb = 0.0

    def _sample(self) -> None:
        me = psutil.Process()
        while True:
            own = rss_mb()
            children = sum(unique_mb(c.pid) for c in me.children(recursive=True))
            self.mb, self.children_mb = max(self.mb, own), max(self.children_mb, children)
            self.tree_mb = max(self.tree_mb, own + children)
            time.sleep(0.02)


def vm_hwm_mb() -> float:
    """This process's own high-water mark of resident memory (the kernel's, not sampled)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def settle() -> None:
    """Free what can be freed, and hand the heap's free pages back, before reading the resident size."""
    gc.collect()
    give_back_free_heap()


def generator(tf: Path | None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(arch, float32 A -> B weights): the authors' checkpoint converted, or random at the paper's size."""
    if tf is not None:
        state = official_tf.import_tf(tf, "selfie2anime")
        return state["generator_arch"], state["networks"]["genA2B"]
    torch.manual_seed(0)
    g = ResnetGenerator(img_size=SIZE, tf_compat=True)
    return g.arch(), g.state_dict()


def write_archives(tf: Path | None, store: Path, formats: list[str]) -> Path:
    """One archive per format, as import-official writes them; the float32 network's pictures of the photos."""
    arch, weights = generator(tf)
    with torch.inference_mode():
        g = ResnetGenerator(**arch).eval()
        g.load_state_dict(weights)
        reference = torch.cat([g(x[None])[0] for x in acceleration.photo_batch(SIZE)])
    del g
    torch.save(reference, store / "float32.pt")
    serving = official_tf.serving(STYLE, arch, None, None)
    for fmt in formats:
        stored_arch, nets = export.stored_as(arch, {"genA2B": weights}, fmt)
        config = model_config(stored_arch, SIZE, catalog.entry(STYLE), workers=1, batch_size=1, max_batch_delay=50,
                              response_timeout=120, upscaler=serving["upscalers"][0])
        write_archive(store / fmt, STYLE, "2.0", nets["genA2B"], config)
    return store


def difference(out: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    return {"max_abs": float((out - reference).abs().max()), "psnr_db": acceleration.psnr(out, reference)}


def one(fmt: str, store: Path, runs: int) -> dict:
    """In a fresh process: the bundled styles, then the imported one, measured as the module docstring says."""
    verdicts: list[str] = []
    log = logging.getLogger("acceleration")
    log.setLevel(logging.INFO)
    log.addHandler(type("Keep", (logging.Handler,), {"emit": lambda self, r: verdicts.append(r.getMessage())})())
    [archive] = [read_archive(p) for p in (store / fmt).glob("*.mar")]
    reference, photos, face = torch.load(store / "float32.pt"), acceleration.photo_batch(SIZE), FACE.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        bundled = [loader.load_eager(a, Path(tmp) / "bundled") for a in scan(STORE).values()]
        settle()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here: not the bundled styles' loading
        before, peak = rss_mb(), PeakRSS()
        handler, service = loader.load_service(archive, loader.unpack(archive, Path(tmp) / "imported"))
        handler.path.ready.wait()
        handler.upscaler.ready.wait()
        [answer] = loader.predict(handler, service, [(face, {})])
        assert answer.status == 200, answer.body[:200]
        settle()
        after, highest, tree, children = rss_mb(), peak.mb, peak.tree_mb, peak.children_mb
        start_hwm = vm_hwm_mb()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from the present size
        peak.reset()
        times: dict[str, list[float]] = {"picture": [], "picture_cpu": [], "request": [], "request_cpu": []}
        with torch.inference_mode():
            chosen = difference(handler.generate(photos), reference)
            for _ in range(runs):  # the generator alone and the whole request, in turns
                for name, call in (("picture", lambda: handler.generate(photos[:1])),
                                   ("request", lambda: loader.predict(handler, service, [(face, {})]))):
                    wall, cpu = time.perf_counter(), time.process_time()
                    call()
                    times[name].append(time.perf_counter() - wall)
                    times[f"{name}_cpu"].append(time.process_time() - cpu)
        path, serving_peak, serving_hwm = handler.path.path.name, peak.mb, vm_hwm_mb()
        del handler, service, bundled
        settle()
        eager_handler, _ = loader.load_eager(archive, Path(tmp) / "eager")  # the storage's own difference
        with torch.inference_mode():
            eager = difference(eager_handler.generate(photos), reference)
    return {"format": fmt, "path": path, "added_mb": after - before, "peak_added_mb": highest - before,
            "peak_tree_mb": tree - before, "peak_children_mb": children, "hwm_added_mb": start_hwm - before,
            "serving_peak_added_mb": serving_peak - before, "serving_hwm_added_mb": serving_hwm - before,
            "reply_px": Image.open(io.BytesIO(answer.body)).width, "eager": eager, "chosen": chosen,
            "verdicts": verdicts, **{k: statistics.median(v) for k, v in times.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tf", type=Path, default=None, help="the authors' checkpoint PREFIX (default: random weights)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "toonbot-bench-full",
                   help="compiled graphs and verdicts, kept between runs")
    p.add_argument("--formats", nargs="+", choices=FC0_WEIGHTS, default=list(FC0_WEIGHTS))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.one:
        print(json.dumps(one(a.one, a.store, a.runs)))
        return
    print(f"{cpu_name()}, torch {torch.__version__}, {a.threads} threads, load average {os.getloadavg()[0]:.1f}")
    print("| FC.0 stored | path chosen | MB added (start's peak; with children; VmHWM; serving's peak, VmHWM) | s/picture wall (CPU) | s/request wall (CPU), reply px "
          "| max abs diff eager / chosen | PSNR dB chosen |")
    print("|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = write_archives(a.tf, Path(tmp), a.formats)
        for fmt in a.formats:
            env = {**os.environ, "TOONBOT_COMPILE_CACHE": str(a.cache)}
            out = subprocess.run([sys.executable, __file__, "--one", fmt, "--store", str(store), "--runs", str(a.runs),
                                  "--threads", str(a.threads)], capture_output=True, text=True, env=env)
            if out.returncode:
                raise SystemExit(f"{fmt}: {out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {r['format']} | {r['path']} | {r['added_mb']:.0f} ({r['peak_added_mb']:.0f}; "
                  f"{r['peak_tree_mb']:.0f} with children, who peaked at {r['peak_children_mb']:.0f}; "
                  f"VmHWM {r['hwm_added_mb']:.0f}; serving {r['serving_peak_added_mb']:.0f}, "
                  f"VmHWM {r['serving_hwm_added_mb']:.0f}) "
                  f"| {r['picture']:.3f} ({r['picture_cpu']:.3f}) "
                  f"| {r['request']:.3f} ({r['request_cpu']:.3f}), {r['reply_px']} "
                  f"| {r['eager']['max_abs']:.1e} / {r['chosen']['max_abs']:.1e} | {r['chosen']['psnr_db']:.1f} |")
            print("".join(f"    {line}\n" for line in r["verdicts"]), end="", flush=True)


if __name__ == "__main__":
    main()
