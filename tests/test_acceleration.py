"""The fast inference paths: eager at once, the fastest checked path swapped in behind it, cached on disk."""

from __future__ import annotations

import asyncio
import copy
import fcntl
import gc
import io
import os
import signal
import subprocess
import sys
import time
import weakref
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ARCHIVE = Path(__file__).resolve().parents[1] / "styles" / "payload"
sys.path.insert(0, str(ARCHIVE))  # the module ships flat inside each .mar

import acceleration  # noqa: E402
from styles.payload.networks import Int8Linear, ResnetGenerator  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
SIZE = 32
# The path the swap tests ask for: one that is not eager float32, so a test passes only when a swap happened.
SWAPPED_IN = "cpu-compiled-fp32" if acceleration.can_compile() else "cpu-eager-channels-last"
# The int8 graph is lossy by design, and how much depends on the CPU (on a Zen 3 without VNNI the random test
# generators lose 28-33 dB where a Zen 5 keeps 35+): it is held to the floors less this margin; the search keeps it
# only where it meets them (`test_a_path_that_spoils_only_the_faces_is_dropped`).
INT8_FLOORS = tuple(floor - 6.0 for floor in acceleration.FLOORS)
COMPILED = ["cpu-compiled-fp32"] + (["cpu-compiled-int8"] if acceleration.can_quantize() else [])


@pytest.fixture(scope="module")
def generator() -> ResnetGenerator:
    torch.manual_seed(0)
    return ResnetGenerator(ngf=8, n_blocks=2, img_size=SIZE, light=True).eval()


def test_psnr() -> None:
    a = torch.zeros(1, 3, 4, 4)
    assert acceleration.psnr(a, a) == float("inf")
    assert acceleration.psnr(a, a + 0.02) == pytest.approx(10 * np.log10(4 / 0.0004))


def test_every_supported_path_stays_within_the_quality_floors_on_photos(generator) -> None:
    """Every path is the same network: exact ones within the floors, the int8 graph within INT8_FLOORS."""
    batch = acceleration.photo_batch(SIZE)
    with torch.inference_mode():
        reference = generator(batch)[0]
    names = []
    for name, build in acceleration.candidates(copy.deepcopy(generator), torch.device("cpu")):
        out = build()(batch)
        assert out.shape == reference.shape and out.dtype == torch.float32
        floors = INT8_FLOORS if name == "cpu-compiled-int8" else acceleration.FLOORS
        assert acceleration.passes(*acceleration.photo_quality(out, reference), floors), name
        names.append(name)
    assert "cpu-eager-channels-last" in names
    if acceleration.cpu_has_bf16():
        assert "cpu-eager-bf16" in names
    if acceleration.can_compile():
        assert "cpu-compiled-fp32" in names
        if acceleration.can_quantize():
            assert "cpu-compiled-int8" in names


def test_a_path_that_spoils_only_the_faces_is_dropped() -> None:
    reference = acceleration.photo_batch(64)
    spoilt = reference.clone()
    for i, box in enumerate(acceleration.photos.FACES.values()):
        if box is not None:  # a small smudge on each face: the photo as a whole stays above 35 dB
            left, top = round(box[0] * 64) + 8, round(box[1] * 64) + 8
            spoilt[i, :, top : top + 4, left : left + 4] += 0.5
    whole, faces = acceleration.photo_quality(spoilt, reference)
    assert whole >= acceleration.PSNR_FLOOR_DB and faces < acceleration.FACE_FLOOR_DB
    assert not acceleration.passes(whole, faces)


def test_eager_preference_skips_the_search(generator) -> None:
    assert acceleration.choose(generator, SIZE, torch.device("cpu"), prefer="eager").name == "eager-fp32"
    accelerated = acceleration.Accelerated(generator, SIZE, torch.device("cpu"), prefer="eager")
    assert accelerated.ready.is_set() and accelerated.path.name == "eager-fp32"


def test_a_one_off_run_without_a_cached_verdict_stays_eager(generator, tmp_path) -> None:
    accelerated = acceleration.Accelerated(generator, SIZE, torch.device("cpu"), model_dir=ARCHIVE,
                                           cache=tmp_path, mode="cached")
    assert accelerated.ready.wait(60) and accelerated.path.name == "eager-fp32"
    assert not list(tmp_path.glob("*/*.pt2"))


def test_eager_answers_at_once_and_the_checked_path_is_swapped_in_then_cached(generator, tmp_path, caplog) -> None:
    caplog.set_level("INFO")
    model_dir = tmp_path / "archive"
    model_dir.mkdir()
    (model_dir / "generator.pt").write_bytes(b"the weights")
    batch = acceleration.photo_batch(SIZE)
    with torch.inference_mode():
        reference = generator(batch)[0]
    first = acceleration.Accelerated(copy.deepcopy(generator), SIZE, torch.device("cpu"), model_dir=model_dir,
                                     cache=tmp_path / "cache", prefer=SWAPPED_IN)
    assert first.path.name == "eager-fp32"
    while not first.ready.wait(0.2):  # requests keep being answered, unharmed, while it builds
        assert acceleration.psnr(first.run(batch), reference) >= acceleration.PSNR_FLOOR_DB
    assert "inference path:" in caplog.text
    assert first.path.name == SWAPPED_IN  # a swap happened: staying on eager would prove nothing
    assert acceleration.passes(*acceleration.photo_quality(first.run(batch), reference))
    (verdict,) = tmp_path.glob("cache/*/verdict.json")
    assert first.path.name in verdict.read_text()

    # The next start (even a one-off) loads the verdict's path from disk: nothing is compiled again, and
    # it is checked against float32's pictures kept beside it, without an eager pass of its own.
    built = {p: p.stat().st_mtime for p in tmp_path.glob("cache/*/*.pt2")}
    model, eager_passes = copy.deepcopy(generator), []
    model.register_forward_hook(lambda *_: eager_passes.append(1))
    with open(tmp_path / "cache" / ".build.lock", "w") as lock:  # another process builds meanwhile
        fcntl.flock(lock, fcntl.LOCK_EX)  # (a start only loading its graphs once waited for it to end)
        second = acceleration.Accelerated(model, SIZE, torch.device("cpu"), model_dir=model_dir,
                                          cache=tmp_path / "cache", mode="cached", prefer=SWAPPED_IN)
        assert second.ready.wait(120) and second.path.name == first.path.name
    assert {p: p.stat().st_mtime for p in tmp_path.glob("cache/*/*.pt2")} == built
    assert list(tmp_path.glob(f"cache/*/{acceleration.REFERENCE}"))
    if acceleration.can_compile():  # (an eager candidate is itself an eager pass)
        assert not eager_passes


@pytest.mark.skipif(not acceleration.can_compile(), reason="no C++ compiler: nothing is compiled")
def test_the_eager_weights_are_freed_once_a_compiled_graph_serves(generator, tmp_path) -> None:
    model = copy.deepcopy(generator)
    alive = weakref.ref(model)
    accelerated = acceleration.Accelerated(model, SIZE, torch.device("cpu"), prefer="cpu-compiled-fp32",
                                           model_dir=ARCHIVE, cache=tmp_path)
    del model
    in_flight = accelerated.path.run  # a request that started on the eager path before the swap ...
    assert accelerated.ready.wait(300) and accelerated.path.name == "cpu-compiled-fp32"
    gc.collect()
    assert alive() is not None  # ... keeps its weights until it has returned
    batch = acceleration.photo_batch(SIZE)
    assert acceleration.passes(*acceleration.photo_quality(in_flight(batch), accelerated.run(batch)))
    del in_flight
    gc.collect()
    assert alive() is None

    # A new process loads the cached graph with torch's C++ loader: torch's compiler stack stays out of it.
    code = LOAD_CACHED.format(archive=str(ARCHIVE), root=str(ARCHIVE.parents[1]), cache=str(tmp_path))
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert loaded.stdout.split() == ["cpu-compiled-fp32", "False"], loaded.stderr[-2000:]


def test_a_compile_child_maps_a_held_weight_from_the_file_this_process_maps(tmp_path) -> None:
    """The full model's int8 layer is mapped from the archive; a compile child maps the same pages of the
    same file (no copy written, none read into its own memory); a weight of no file is written for it once."""
    weights = {"small": torch.ones(3), "big": (torch.arange(1 << 16) % 251 - 125).to(torch.int8).view(256, 256)}
    torch.save(weights, tmp_path / "generator.pt")
    mapped = torch.load(tmp_path / "generator.pt", mmap=True, weights_only=True)
    place = acceleration._file_place(mapped["big"], tmp_path / "spare.bin")
    assert place["path"] == os.path.realpath(tmp_path / "generator.pt") and not (tmp_path / "spare.bin").exists()
    assert torch.equal(acceleration._mapped(place), weights["big"])
    place = acceleration._file_place(weights["big"], tmp_path / "spare.bin")
    assert place["path"] == str(tmp_path / "spare.bin")
    assert torch.equal(acceleration._mapped(place), weights["big"])


@pytest.mark.skipif(not acceleration.can_compile(), reason="no C++ compiler: nothing is compiled")
@pytest.mark.parametrize("name", COMPILED)
def test_a_large_weight_stays_out_of_the_compiled_graph(tmp_path, monkeypatch, name) -> None:
    """The full model's first MLP layer (int8, mapped from the archive) is an input of each compiled graph,
    not a copy among its constants: the package holds none of its bytes, and the graph reads the model's
    own tensor (changing it changes the picture). Here a small full model, its layer held at its size."""
    torch.manual_seed(0)
    state = ResnetGenerator(ngf=8, n_blocks=2, img_size=SIZE, tf_compat=True).state_dict()
    state["FC.0.weight"], state["FC.0.scale"] = Int8Linear.quantize(state["FC.0.weight"])
    torch.save(state, tmp_path / "generator.pt")
    with torch.device("meta"):  # as the handler builds it
        model = ResnetGenerator(ngf=8, n_blocks=2, img_size=SIZE, tf_compat=True, fc0_weight="int8")
    model.load_state_dict(torch.load(tmp_path / "generator.pt", mmap=True, weights_only=True), assign=True)
    model.eval()
    monkeypatch.setattr(acceleration, "HELD_BYTES", state["FC.0.weight"].nbytes)
    assert list(acceleration.held(model)) == ["FC.0.weight"]
    batch = acceleration.photo_batch(SIZE)
    with torch.inference_mode():
        reference = model(batch)[0]
    [build] = [b for n, b in acceleration.candidates(model, torch.device("cpu"), SIZE, tmp_path) if n == name]
    run = build()
    with zipfile.ZipFile(tmp_path / f"{name}.pt2") as package:
        row = state["FC.0.weight"][0, :512].numpy().tobytes()
        assert not any(row in package.read(f) for f in package.namelist())
    if name == "cpu-compiled-int8":
        return  # its loss on this random model depends on the CPU (28 dB on a Zen 3): too close to tell a read
    assert acceleration.passes(*acceleration.photo_quality(run(batch), reference))
    with torch.inference_mode():
        model.FC[0].weight.neg_()  # the mapping is private: the file keeps its bytes
        assert acceleration.psnr(run(batch), model(batch)[0]) >= acceleration.PSNR_FLOOR_DB
    assert acceleration.psnr(run(batch), reference) < acceleration.PSNR_FLOOR_DB


# A new process that imports the module flat, as an archive ships it, and builds the fixture's generator (same seed and shape).
MODEL_PROCESS = """
import os, sys, time, torch
sys.path[:0] = [{archive!r}, {root!r}]
import acceleration
from styles.payload.networks import ResnetGenerator
torch.manual_seed(0)
model = ResnetGenerator(ngf=8, n_blocks=2, img_size=32, light=True).eval()
"""

LOAD_CACHED = MODEL_PROCESS + """accelerated = acceleration.Accelerated(model, 32, torch.device("cpu"), prefer="cpu-compiled-fp32",
                                       model_dir={archive!r}, cache={cache!r}, mode="cached")
accelerated.ready.wait(120)
print(accelerated.path.name, "torch._inductor" in sys.modules)
"""


# The child takes SIGINT as the servers do (`bots.run` sets its own handler): a suite started in the
# background by a shell (`make test &`) hands SIGINT down ignored, and a child left so sleeps through it.
CHILD = MODEL_PROCESS + """import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
acceleration.Accelerated(model, 32, torch.device("cpu"), model_dir={archive!r}, cache={cache!r})
print("serving", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not acceleration.can_compile(), reason="no C++ compiler: nothing is compiled")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_process_at_once_while_it_compiles(tmp_path, sig) -> None:
    code = CHILD.format(archive=str(ARCHIVE), root=str(ARCHIVE.parents[1]), cache=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.stdout is not None and child.stdout.readline() == "serving\n"
    deadline = time.monotonic() + 120
    while not _compilers(child.pid):  # wait until the background build is under way
        assert time.monotonic() < deadline
        time.sleep(0.2)
    helpers = _compilers(child.pid)
    child.send_signal(sig)
    # "At once" against the build it would otherwise finish (minutes); at load 15 the exit itself took over 10 s.
    # If it hangs, SIGABRT makes faulthandler print where every thread was, into this test's captured stderr.
    try:
        assert child.wait(timeout=30) != 0
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGABRT)
        child.wait(timeout=30)
        raise AssertionError("no exit within 30 s of the signal: the threads' stacks are in the captured stderr")
    gone = time.monotonic() + 30  # the compilers get the signal with it; a loaded machine reaps them late
    while [p for p in helpers if _alive(p)] and time.monotonic() < gone:
        time.sleep(0.1)
    assert not [p for p in helpers if _alive(p)]


def _alive(pid: int) -> bool:
    """A process that exists and is no zombie (nothing in a container may reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _compilers(parent: int) -> list[int]:
    """Processes whose parent is `parent` (the compile child)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


async def test_the_handler_answers_at_once_then_serves_through_the_chosen_path(
    serving_model_store, serving_mar_cache, monkeypatch, tmp_path, caplog
) -> None:
    """The handler in the embedded engine: eager first, then the chosen path (one named here:
    what `auto` picks depends on the machine), which draws the same picture."""
    from serving.engine import EmbeddedEngine

    monkeypatch.setenv("TOONBOT_INFERENCE", SWAPPED_IN)  # what `auto` picks depends on the machine's load
    monkeypatch.setenv("TOONBOT_COMPILE_CACHE", str(tmp_path))
    caplog.set_level("INFO")
    face = (FIXTURES / "obama_256.jpg").read_bytes()
    engine = EmbeddedEngine(serving_model_store, cache_dir=serving_mar_cache)
    try:
        eager = (await engine.stylize("cat2dog", face, size=64, fmt="png")).image
        accelerated = engine._workers["cat2dog"].handler.path
        assert await asyncio.to_thread(accelerated.ready.wait, 600)
        assert "inference path:" in caplog.text
        assert accelerated.path.name == SWAPPED_IN
        fast = (await engine.stylize("cat2dog", face, size=64, fmt="png")).image
    finally:
        await engine.close()
    a, b = (np.asarray(Image.open(io.BytesIO(x)), dtype=np.float32) for x in (eager, fast))
    mse = np.mean((a - b) ** 2)
    assert mse == 0 or 10 * np.log10(255**2 / mse) >= acceleration.PSNR_FLOOR_DB


async def test_engine_warm_up_loads_every_style_before_any_request(serving_model_store, serving_mar_cache) -> None:
    from serving.engine import EmbeddedEngine

    engine = EmbeddedEngine(serving_model_store, cache_dir=serving_mar_cache)
    try:
        await engine.warm_up(first="cat2dog")
        assert sorted(engine._workers) == sorted(s.name for s in await engine.styles())
    finally:
        await engine.close()
