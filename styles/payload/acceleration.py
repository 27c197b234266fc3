"""The fastest generator path this machine supports, without making anyone wait for it.

Ships inside every `.mar` (flat import, torch only). `Accelerated` answers on
eager float32 as soon as the weights are loaded. A daemon thread then builds
each faster candidate, checks it against float32 on real photos (`photos.py`:
PSNR >= 35 dB on every photo and >= 30 dB inside every face box, else it is
dropped), times the survivors and swaps the fastest in. The thread runs at a
low priority, one build at a time per machine (a lock file), and never holds
up exit. Compiled graphs (AOTInductor packages) and the verdict are kept in
`$TOONBOT_COMPILE_CACHE` (default ~/.cache/toonbot/compiled) under the
archive's hash, the torch version and the CPU's capability, so the next start
only loads them. `$TOONBOT_COMPILE`: `background` (default) builds what is
missing; `cached` only loads a verdict already on disk (one-off CLI runs);
`never` stays eager.

Candidates, fastest-expected first: an int8 AOTInductor graph (PyTorch's
PT2E static quantization for x86, torchao's X86InductorQuantizer: oneDNN
kernels with VNNI where the CPU has it, AVX2 otherwise; calibrated on the
shipped photos mirrored, checked on them as they are), bf16 autocast
(compiled, then eager) where the CPU has bf16 instructions (AVX512-BF16 or
AMX), an AOTInductor float32 graph (needs a C++ compiler), channels-last
eager; fp16 autocast on CUDA. Inputs always have one shape (the handler runs one square at a time at
the draw size), so a compiled graph never recompiles. A weight of HELD_BYTES or more (the paper's full
generator's int8 FC.0, 268 MB) is folded into no graph: each takes the eager model's tensor, mapped from
the archive, as an input, so the eager path, every candidate and the compile child share one copy.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import fcntl
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn

try:  # flat inside a .mar: TorchServe puts the archive's folder on sys.path
    import photos
except ModuleNotFoundError:  # imported from the source tree (export's check of an int8 layer)
    from styles.payload import photos

logger = logging.getLogger(__name__)

PSNR_FLOOR_DB = 35.0  # whole photo, against float32
FACE_FLOOR_DB = 30.0  # inside each face box
Floors = tuple[float, float]  # (whole photo, face boxes) in dB; a network may ask for stricter ones
FLOORS: Floors = (PSNR_FLOOR_DB, FACE_FLOOR_DB)
TIMING_RUNS = 5
BUILD_THREAD = "toonbot-accelerate"
NICE = 5  # the build yields to requests; at 10 it all but stops on a busy machine
DEFAULT_CACHE = pathlib.Path.home() / ".cache" / "toonbot" / "compiled"
Run = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class InferencePath:
    """One way to run the generator: (N, 3, S, S) in [-1, 1] -> float32 on the input's device."""

    name: str
    run: Run
    psnr_db: float = math.inf
    seconds: float = math.nan


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (peak-to-peak 2)."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def cpu_has_bf16() -> bool:
    """bf16 matmul/convolution instructions (AVX512-BF16 or AMX), not emulation."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def can_compile() -> bool:
    """Inductor needs a C++ compiler on the CPU (Triton on CUDA)."""
    return shutil.which(os.environ.get("CXX", "g++")) is not None or shutil.which("c++") is not None


def can_quantize() -> bool:
    """The int8 graph is prepared with torchao's quantizer (only where it is built; the graph needs torch alone)."""
    return importlib.util.find_spec("torchao") is not None


# --- the paths ----------------------------------------------------------------


def _image_only(model: nn.Module) -> Run:
    def run(x: torch.Tensor) -> torch.Tensor:
        # Frozen graphs hold inference tensors: every path runs in inference mode.
        with torch.inference_mode():
            return model(x)[0]

    return run


def _one_at_a_time(run: Run) -> Run:
    """Batch of N -> N calls of batch 1: one static shape, and on a few cores no slower."""
    return lambda x: torch.cat([run(x[i : i + 1]) for i in range(x.shape[0])])


def _autocast(run: Run, device: torch.device, dtype: torch.dtype) -> Run:
    def wrapped(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return run(x).float()

    return wrapped


def _channels_last(run: Run) -> Run:
    return lambda x: run(x.contiguous(memory_format=torch.channels_last))


# A weight this large stays out of compiled graphs: each graph takes it as an input, the very tensor the
# eager model holds (mapped from the archive), instead of folding a copy into its constants. Only the full
# model's first MLP layer is this large (FC.0: 268 MB in int8 at 256 px); the light styles' largest is 2 MB.
HELD_BYTES = 16 * 2**20


def held(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights of at least HELD_BYTES, by state-dict name, in a fixed order."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return {name: t for name, t in sorted(tensors.items()) if t.nbytes >= HELD_BYTES}


class _Export(nn.Module):
    """What gets compiled: the generator's image alone, under autocast to `dtype` if one is given
    (none: no autocast node, which would hide the convolutions from the int8 quantizer).
    The weights named in `held` come in as inputs after the picture, in that order."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None, held: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.model, self.dtype, self.held = model, dtype, held

    def forward(self, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        if self.dtype is None:
            return self._image(x, weights)
        with torch.autocast("cpu", dtype=self.dtype):
            return self._image(x, weights).float()

    def _image(self, x: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if not self.held:
            return self.model(x)[0]
        return torch.func.functional_call(self.model, dict(zip(self.held, weights)), (x,))[0]


def _quantized(program: torch.export.ExportedProgram, first_conv: str, side: int,
               weights: tuple[torch.Tensor, ...] = ()) -> torch.export.ExportedProgram:
    """int8 convolutions but the first (7x7 on the RGB input: 2-3 % of the work, ~18 dB lost on AVX2 when
    quantized); norms, CAM and upsampling stay float32. Calibrated on the shipped photos mirrored, so the
    check on the photos as they are is not the calibration set. `weights`: the held inputs (see `held`)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_module_type_qconfig(nn.Conv2d, x86.get_default_x86_inductor_quantization_config())
    quantizer.set_module_name_qconfig(first_conv, None)
    prepared = prepare_pt2e(program.module(), quantizer)
    for image in photo_batch(side).flip(-1):
        prepared(image[None], *weights)
    return torch.export.export(convert_pt2e(prepared), (torch.zeros(1, 3, side, side), *weights))


def _compiled(model: nn.Module, img_size: int, dtype: torch.dtype | None, artefact: pathlib.Path | None,
              int8: bool = False) -> Run:
    """An AOTInductor graph (`int8`: quantized first): loaded from `artefact` when it exists, else
    compiled (and saved there).

    Compiling runs in a child process: torch.export swaps process-wide state
    while it traces, which breaks eager requests running in other threads, and
    a child never delays this process's exit (it dies with it). The child
    rebuilds the generator from its class's source file, its `arch()` and its
    weights (the archive's modules are not importable by name once loaded);
    it maps the `held` weights from the file this process maps them from, so
    both share the same pages. The graph takes those as inputs: the very
    tensors `model` holds are passed to it on every call.
    """
    weights = held(model)
    with tempfile.TemporaryDirectory(prefix="toonbot-compile-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        if artefact is None or not artefact.exists():
            out = artefact or tmp / "graph.pt2"
            cls = type(model)
            state = {k: v for k, v in model.state_dict().items() if k not in weights}
            places = {name: _file_place(t, tmp / f"held-{i}.bin") for i, (name, t) in enumerate(weights.items())}
            torch.save({"source": cls.forward.__code__.co_filename, "cls": cls.__name__, "arch": model.arch(),
                        "state": state, "held": places, "dtype": str(dtype), "int8": int8}, tmp / "model.pt")
            env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}
            with (tmp / "log").open("wb") as log:
                child = subprocess.Popen([sys.executable, "-c", CHILD, str(os.getpid()), str(tmp), str(img_size),
                                          str(out)], env=env, stdout=log, stderr=log)
                while child.poll() is None:
                    if STOPPING.wait(0.2):
                        child.kill()
                        raise Stopped
            if child.returncode:
                lines = (tmp / "log").read_text(errors="replace").strip().splitlines()
                raise RuntimeError(f"compiling failed: {lines[-1] if lines else child.returncode}")
            artefact = out
        graph = _load_graph(artefact)
    inputs = list(weights.values())
    return lambda x: graph.boxed_run([x.contiguous(), *inputs])[0]


def _file_place(t: torch.Tensor, spare: pathlib.Path) -> dict[str, object]:
    """Where a compile child can map `t`'s bytes from: the file this process maps them from (the archive's
    weights, loaded with mmap), else `spare`, written now."""
    start = t.data_ptr()
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/self/maps").read_text().splitlines():
            fields = line.split(maxsplit=5)
            low, high = (int(v, 16) for v in fields[0].split("-"))
            if low <= start and start + t.nbytes <= high and len(fields) == 6 and fields[5].startswith("/"):
                if pathlib.Path(fields[5]).is_file():
                    return {"path": fields[5], "offset": int(fields[2], 16) + start - low,
                            "dtype": str(t.dtype), "shape": list(t.shape)}
                break
    t.contiguous().view(torch.uint8).numpy().tofile(spare)
    return {"path": str(spare), "offset": 0, "dtype": str(t.dtype), "shape": list(t.shape)}


def _mapped(place: dict) -> torch.Tensor:
    """A tensor on the pages of `place`'s file (copy-on-write: the file is never written)."""
    dtype = getattr(torch, place["dtype"].removeprefix("torch."))
    count = math.prod(place["shape"]) * torch.empty(0, dtype=dtype).element_size()
    raw = np.memmap(place["path"], dtype=np.uint8, mode="c", offset=place["offset"], shape=(count,))
    return torch.from_numpy(raw).view(dtype).view(place["shape"])


def _set_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a parameter or buffer by state-dict name, keeping which of the two it is."""
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[attr] = value


def _load_graph(artefact: pathlib.Path) -> torch._C._aoti.AOTIModelPackageLoader:
    """An AOTInductor package, loaded by torch's C++ loader.

    `torch._inductor.aoti_load_package` wraps the same loader, but importing it
    pulls in torch's whole compiler stack (~1,000 modules, ~80 MiB in every
    serving process) to flatten one tensor in and one out. One runner per core,
    so the engine's lanes draw a style's photos side by side (a runner holds
    no buffers between calls; the weights are shared).
    """
    return torch._C._aoti.AOTIModelPackageLoader(str(artefact), "model", False, os.cpu_count() or 1, -1)


# Freezing folds the weights into the graph as constants (inference only). Kept in the package beside the
# library, not inside it: a library's constants are read in place and copied, so each style's weights
# would sit in memory twice (measured: 21 MiB per loaded 96 px bf16 graph against 6 MiB this way).
GRAPH = {"freezing": True, "aot_inductor.package_constants_in_so": False,
         "aot_inductor.package_constants_on_disk_format": "binary_blob"}

# The child ends with the process that asked (PR_SET_PDEATHSIG), first thing, before importing torch.
CHILD = """import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
import acceleration
acceleration.compile_main(*sys.argv[2:])
"""


def compile_main(folder_name: str, side_text: str, out_name: str) -> None:
    """Child process: rebuild the generator saved in `folder_name`, export it at `side_text` px,
    package it as `out_name`."""
    folder, side, out = pathlib.Path(folder_name), int(side_text), pathlib.Path(out_name)
    saved = torch.load(folder / "model.pt", weights_only=True)
    spec = importlib.util.spec_from_file_location("generator_source", saved["source"])
    assert spec is not None and spec.loader is not None
    source = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    with torch.device("meta"):  # no memory for weights that are assigned next
        generator = getattr(source, saved["cls"])(**saved["arch"])
    weights = {name: _mapped(place) for name, place in saved.get("held", {}).items()}
    generator.load_state_dict({**saved["state"], **weights}, assign=True)
    for name, t in weights.items():  # inputs of the graph, not constants: the module keeps an empty stand-in
        _set_tensor(generator, name, torch.empty(0, dtype=t.dtype))
    example = (torch.zeros(1, 3, side, side), *weights.values())
    dtype = None if saved["dtype"] == "None" else getattr(torch, saved["dtype"].removeprefix("torch."))
    if dtype is not None:  # autocast would cast the convolutions' weights on every call; store them cast
        for module in generator.modules():
            if isinstance(module, nn.Conv2d):
                module.to(dtype)
    with torch.no_grad():
        program = torch.export.export(_Export(generator.eval(), dtype, tuple(weights)), example)
        if saved.get("int8"):
            first = next(name for name, m in generator.named_modules() if isinstance(m, nn.Conv2d))
            program = _quantized(program, f"model.{first}", side, tuple(weights.values()))
        # Inside no_grad: Inductor freezes only a graph compiled without autograd. Outside it, GRAPH's
        # freezing was silently skipped: every convolution re-laid its weights out on each call and
        # wrote its output once more for its activation (measured: the upscaler's bf16 graph 1.8x slower).
        torch._inductor.aoti_compile_and_package(program, package_path=str(folder / "graph.pt2"),
                                                 inductor_configs=GRAPH)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(folder / "graph.pt2", out.with_suffix(".partial"))
    os.replace(out.with_suffix(".partial"), out)  # readers only ever see a whole file


def candidates(model: nn.Module, device: torch.device, img_size: int = 0,
               artefacts: pathlib.Path | None = None) -> list[tuple[str, Callable[[], Run]]]:
    """(name, builder) pairs this machine can run, fastest-expected first.

    On the CPU this converts `model`'s weights to channels-last in place (a
    copy would double the memory of a full 1 GB generator); every path,
    plain eager included, gives the same results with either layout. Builders
    of compiled paths take seconds to minutes (`img_size` 0: taken from the model).
    """
    if device.type == "cuda":
        return [("cuda-fp16", lambda: _autocast(_image_only(model), device, torch.float16))]
    size = img_size or int(getattr(model, "img_size", 0))
    cl = model.to(memory_format=torch.channels_last)
    out: list[tuple[str, Callable[[], Run]]] = []
    compile_ok = can_compile() and os.environ.get("TOONBOT_NO_COMPILE") != "1"
    def artefact(name: str) -> pathlib.Path | None:
        return artefacts / f"{name}.pt2" if artefacts else None

    if compile_ok and can_quantize():
        out.append(("cpu-compiled-int8", lambda: _one_at_a_time(
            _compiled(model, size, None, artefact("cpu-compiled-int8"), int8=True))))
    if cpu_has_bf16():
        if compile_ok:
            out.append(("cpu-compiled-bf16", lambda: _one_at_a_time(
                _compiled(model, size, torch.bfloat16, artefact("cpu-compiled-bf16")))))
        out.append(("cpu-eager-bf16", lambda: _one_at_a_time(
            _autocast(_channels_last(_image_only(cl)), device, torch.bfloat16))))
    if compile_ok:
        out.append(("cpu-compiled-fp32", lambda: _one_at_a_time(
            _compiled(model, size, None, artefact("cpu-compiled-fp32")))))
    out.append(("cpu-eager-channels-last", lambda: _one_at_a_time(_channels_last(_image_only(cl)))))
    return out


# --- the check on photos ----------------------------------------------------------


def photo_batch(img_size: int, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """The shipped photos at the generator's size, (N, 3, S, S) in [-1, 1], in `photos.FACES` order."""
    images = []
    for name in photos.FACES:
        im = Image.open(io.BytesIO(photos.jpeg(name))).convert("RGB").resize((img_size, img_size), Image.LANCZOS)
        images.append(torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1)
    return torch.stack(images).to(device)


def photo_quality(out: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(worst whole-photo PSNR, worst face-box PSNR) of `out` against float32 on `photo_batch`."""
    side = out.shape[-1]
    whole, faces = math.inf, math.inf
    for i, box in enumerate(photos.FACES.values()):
        whole = min(whole, psnr(out[i], reference[i]))
        if box is not None:
            left, top, right, bottom = (round(v * side) for v in box)
            faces = min(faces, psnr(out[i, :, top:bottom, left:right], reference[i, :, top:bottom, left:right]))
    return whole, faces


def passes(whole_db: float, face_db: float, floors: Floors = FLOORS) -> bool:
    """The quality floors every candidate path must meet."""
    return whole_db >= floors[0] and face_db >= floors[1]


class Stopped(BaseException):
    """The process is exiting: a build gives up at its next step."""


STOPPING = threading.Event()  # set at exit; builds check it between forward passes


def _check_stop() -> None:
    if STOPPING.is_set():
        raise Stopped


def _each(run: Run, batch: torch.Tensor) -> torch.Tensor:
    """`run` on one image at a time, giving up between images when the process exits."""
    out = []
    for i in range(len(batch)):
        _check_stop()
        out.append(run(batch[i : i + 1]))
    return torch.cat(out).float()


def _timed(paths: list[InferencePath], probe: torch.Tensor) -> list[InferencePath]:
    """`paths` with their median seconds on `probe`, timed in turns so that a busy machine's
    drifting load falls on all alike (the verdict is kept: a fluke would stick)."""
    times: dict[str, list[float]] = {p.name: [] for p in paths}
    for _ in range(TIMING_RUNS):
        for p in paths:
            _check_stop()
            start = time.perf_counter()
            p.run(probe)
            times[p.name].append(time.perf_counter() - start)
    return [dataclasses.replace(p, seconds=statistics.median(times[p.name])) for p in paths]


@torch.inference_mode()
def choose(model: nn.Module, img_size: int, device: torch.device, prefer: str = "auto",
           artefacts: pathlib.Path | None = None, only: str | None = None,
           floors: Floors = FLOORS) -> InferencePath:
    """Build, check on photos and time each candidate; the fastest that passes `floors` (eager float32 at worst).

    `prefer` names one candidate to use if it passes ("eager" skips all of
    this); `only` checks just that one (a cached verdict: no timing).
    """
    model.eval()
    baseline = InferencePath("eager-fp32", _image_only(model))
    if prefer == "eager" or only == baseline.name:
        return baseline
    batch = photo_batch(img_size, device)
    reference = _reference(baseline.run, batch, artefacts, cached=only is not None)
    probe = batch[:1]
    survivors = [baseline]
    for name, build in candidates(model, device, img_size, artefacts):
        if name != (only or name) or prefer not in ("auto", name):
            continue
        try:
            run = build()
            whole, face = photo_quality(_each(run, batch), reference)
        except Exception as exc:  # a backend that cannot run here is skipped, not fatal (Stopped is no Exception)
            logger.warning("inference path %s unavailable: %s", name, exc)
            continue
        if not passes(whole, face, floors):
            logger.warning("inference path %s dropped: PSNR %.1f dB (faces %.1f dB) < %.0f (%.0f) dB",
                           name, whole, face, *floors)
            continue
        survivors.append(InferencePath(name, run, whole))
    if only or prefer != "auto":
        best = survivors[-1]
    else:
        survivors = _timed(survivors, probe)
        best = min(survivors, key=lambda p: p.seconds)
    summary = ", ".join(f"{p.name} {p.seconds * 1000:.0f} ms" for p in survivors if not math.isnan(p.seconds))
    summary = summary or "not timed: the cached verdict's choice"
    logger.info("inference path: %s (PSNR %.1f dB vs float32 on photos; measured %s; cpu %s)",
                best.name, best.psnr_db, summary, torch.backends.cpu.get_cpu_capability())
    return best


REFERENCE = "reference.pt"  # eager float32's pictures of the photos, beside the graphs they checked


def _reference(run: Run, batch: torch.Tensor, artefacts: pathlib.Path | None, cached: bool) -> torch.Tensor:
    """Eager float32's pictures of `batch`: what every candidate is checked against.

    Kept beside the compiled graphs, so that a start with a cached verdict checks the path it loads without
    an eager pass (at 256 px the upscaler's eager float32 pass alone takes 0.46 GB for a moment, the
    paper's full generator's weights 0.3 GB more). In fp16: 77 dB from float32, far above the floors.
    """
    stored = artefacts / REFERENCE if artefacts is not None else None
    if cached and stored is not None:
        with contextlib.suppress(OSError, RuntimeError):
            reference = torch.load(stored, weights_only=True).to(batch.device, torch.float32)
            if len(reference) == len(batch):
                return reference
    reference = _each(run, batch)
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        torch.save(reference.half().cpu(), stored.with_suffix(".partial"))
        os.replace(stored.with_suffix(".partial"), stored)
    return reference


# --- in the background, cached on disk ------------------------------------------------


def cache_key(model_dir: str | pathlib.Path) -> str:
    """The unpacked archive's hash (weights, code, config), the torch version and the CPU's capability.

    Read a MiB at a time: the paper's full generator's weights are 290 MB, and reading them whole (plus the
    name prepended, a second copy) took each build thread 0.58 GB for a moment."""
    digest = hashlib.sha256()
    for f in sorted(pathlib.Path(model_dir).iterdir()):
        if f.is_file() and f.suffix != ".pyc":
            digest.update(f.name.encode())
            with f.open("rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
    cpu = torch.backends.cpu.get_cpu_capability() + ("-bf16" if cpu_has_bf16() else "")
    return f"{digest.hexdigest()[:16]}-torch{torch.__version__}-{cpu}"


@contextlib.contextmanager
def _machine_lock(cache: pathlib.Path) -> Iterator[None]:
    """One build at a time on this machine: eight styles compiling at once would starve requests."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".build.lock", "w") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if STOPPING.wait(0.5):
                    raise Stopped from None
        yield


@atexit.register
def _stop_builds() -> None:
    """At exit, let each build stop at its next step: a daemon thread killed inside torch aborts the process."""
    STOPPING.set()
    for thread in threading.enumerate():
        if thread.name == BUILD_THREAD:
            thread.join(timeout=10)


def _give_back_freed_memory() -> None:
    """Return the heap pages freed with the eager weights to the system (glibc keeps them otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class Accelerated:
    """A generator that runs eager float32 now and the fastest checked path once it is ready.

    It keeps the only reference to `model` (the caller should not hold one):
    a compiled graph carries its own frozen weights, so once one is swapped in
    and the last request still on the eager path has returned, the eager
    weights are freed, and a server of eight compiled styles does not hold
    every style's weights twice.
    """

    def __init__(self, model: nn.Module, img_size: int, device: torch.device, prefer: str = "auto",
                 model_dir: str | pathlib.Path | None = None, cache: pathlib.Path | None = None,
                 mode: str | None = None, part: str = "", floors: Floors = FLOORS) -> None:
        model.eval()
        weakref.finalize(model, _give_back_freed_memory).atexit = False
        self.path = InferencePath("eager-fp32", _image_only(model))
        self.ready = threading.Event()  # set once the final path is in place
        mode = mode or os.environ.get("TOONBOT_COMPILE", "background")
        if prefer == "eager" or mode == "never":
            self.ready.set()
            return
        cache = pathlib.Path(cache or os.environ.get("TOONBOT_COMPILE_CACHE") or DEFAULT_CACHE)
        args = (model, img_size, device, prefer, model_dir, cache, mode, part, floors)
        threading.Thread(target=self._build, args=args, daemon=True, name=BUILD_THREAD).start()

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The generator's image on the current path."""
        return self.path.run(x)

    def _build(self, model: nn.Module, img_size: int, device: torch.device, prefer: str,
               model_dir: str | pathlib.Path | None, cache: pathlib.Path, mode: str, part: str,
               floors: Floors) -> None:
        """Load the cached verdict's path, or (mode `background`) search for the fastest passing `floors`;
        swap it in. `part` names a second network of the same archive (the upscaler): its own graphs and verdict."""
        with contextlib.suppress(OSError):  # requests first: this thread (and g++) runs at low priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        # The compile child's kernel cache beside our graphs (not in a temp folder that goes).
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
        try:
            folder = cache / "-".join(filter(None, (cache_key(model_dir), part))) if model_dir else None
            verdict = _read_verdict(folder)
            if verdict == self.path.name or (mode == "cached" and verdict is None):
                return
            # Only a search compiles; loading the verdict's graph does not wait for another process's build.
            with _machine_lock(cache) if verdict is None else contextlib.nullcontext():
                chosen = choose(model, img_size, device, prefer, folder, only=verdict, floors=floors)
            if folder is not None and verdict is None:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "verdict.json").write_text(json.dumps({"path": chosen.name, "seconds": chosen.seconds}))
            self.path = chosen  # requests still on the old path finish on it; then its weights go
        except Stopped:
            pass
        except Exception:  # eager float32 keeps serving
            logger.exception("could not build a faster inference path")
        finally:
            self.ready.set()


def _read_verdict(folder: pathlib.Path | None) -> str | None:
    """The path chosen the last time this archive was checked on this kind of machine, if any."""
    try:
        return json.loads((folder / "verdict.json").read_text())["path"] if folder else None
    except (OSError, ValueError, KeyError):
        return None
