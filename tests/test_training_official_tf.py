"""The authors' TensorFlow checkpoints: written by TensorFlow's own Saver, read without TensorFlow,
and translating the public-domain faces as TensorFlow's graph does (within 1e-4), both directions.

TensorFlow (`tensorflow-cpu`, in the `test` extra) writes the reference checkpoints and computes the
reference outputs; it is imported here unconditionally, so a missing TensorFlow fails these tests."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tf_ugatit import save_and_translate

from styles.archive import read_archive, store_versions
from styles.loader import load_eager, load_service, predict, unpack
from styles.payload.networks import ResnetGenerator
from training.checkpoint import load_checkpoint
from training.cli import main as training_main
from training.official_tf import import_tf
from training.tf_checkpoint import Checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.full]

ROOT = Path(__file__).resolve().parents[1]
FACES = sorted((ROOT / "tests/fixtures/faces").glob("*.jpg"))
TOLERANCE = 1e-4
# What a full model's archive serves: fp16 weights, the first MLP layer in int8 per output feature on bf16
# activations. Measured on these faces against TensorFlow's float32: 1.2e-2 (a2b) and 6.4e-3 (b2a); fp16
# alone 8.9e-3 and 4.5e-3, int8 alone 4.7e-3 and 4.4e-3 (in [-1, 1]: 0.02 is 2.5 of 255 levels).
INT8_TOLERANCE = 0.02
RUN_FOLDER = "UGATIT{light}_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn{smoothing}"
# (light, ch, img_size, smoothing): small full and light models, and the light one at the paper's size
CASES = {"full-32": (False, 8, 32, True), "light-32": (True, 8, 32, False), "light-256": (True, 64, 256, True)}


def faces(size: int) -> dict[str, np.ndarray]:
    """The fixture faces as the authors' test code feeds them: RGB, resized, / 127.5 - 1, (S, S, 3)."""
    return {p.stem: np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC),
                               dtype=np.float32) / 127.5 - 1 for p in FACES}


def tf_checkpoint(folder: Path, case: str) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """A checkpoint named as the authors' code names it, and TensorFlow's translations of the faces."""
    light, ch, size, smoothing = CASES[case]
    run = RUN_FOLDER.format(light="_light" if light else "", smoothing="_smoothing" if smoothing else "")
    prefix = folder / case / run / f"UGATIT{'_light' if light else ''}.model-1000"
    ref = save_and_translate(prefix, ch=ch, n_res=4, img_size=size, light=light, smoothing=smoothing,
                             images=faces(size), seed=len(case))
    return prefix, ref


@pytest.fixture(scope="module")
def full_32(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    return tf_checkpoint(tmp_path_factory.mktemp("tf"), "full-32")


@pytest.fixture(scope="module")
def light_32(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    return tf_checkpoint(tmp_path_factory.mktemp("tf"), "light-32")


def translate(state: dict[str, torch.Tensor], arch: dict, image: np.ndarray) -> np.ndarray:
    g = ResnetGenerator(**arch).eval()
    g.load_state_dict(state)
    with torch.inference_mode():
        return g(torch.from_numpy(image).permute(2, 0, 1)[None])[0][0].permute(1, 2, 0).numpy()


def max_differences(prefix: Path, ref: dict[str, dict[str, np.ndarray]], img_size: int) -> dict[str, float]:
    state = import_tf(prefix, "selfie2anime", img_size=img_size)
    images = faces(img_size)
    return {direction: max(float(np.abs(translate(state["networks"][key], state["generator_arch"], images[name])
                                        - ref[direction][name]).max()) for name in images)
            for key, direction in (("genA2B", "a2b"), ("genB2A", "b2a"))}


@pytest.mark.parametrize("case", ["full-32", "light-32", "light-256"])
def test_translates_the_faces_as_tensorflow_does(tmp_path, request, case: str) -> None:
    fixture = {"full-32": "full_32", "light-32": "light_32"}.get(case)
    prefix, ref = request.getfixturevalue(fixture) if fixture else tf_checkpoint(tmp_path, case)
    diffs = max_differences(prefix, ref, CASES[case][2])
    print(f"{case}: max abs difference a2b {diffs['a2b']:.2e}, b2a {diffs['b2a']:.2e}")
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_import_official_tf_exports_both_styles_that_serve(tmp_path, full_32, monkeypatch) -> None:
    """The command's archives, served by their handler: the full model's first MLP layer in int8, the
    pictures within INT8_TOLERANCE of TensorFlow's float32 ones, through the pair's default upscalers.
    The command also builds their serving paths (here one path that compiles nothing, named), so that a
    server's first start only loads them."""
    prefix, ref = full_32
    store, ckpt, compiled = tmp_path / "store", tmp_path / "s2a.pt", tmp_path / "compiled"
    monkeypatch.setenv("TOONBOT_COMPILE_CACHE", str(compiled))
    monkeypatch.setenv("TOONBOT_INFERENCE", "cpu-eager-channels-last")
    assert training_main(["import-official", "--tf", str(prefix), "--name", "selfie2anime",
                          "--out", str(ckpt), "--model-store", str(store), "--version", "2.0"]) == 0
    monkeypatch.setenv("TOONBOT_COMPILE", "cached")  # a server's start: loads the verdicts (without: eager-fp32)
    for name in ("selfie2anime-2.0.mar", "anime2selfie-2.0.mar"):
        archive = read_archive(store / name)
        started, _ = load_service(archive, unpack(archive, tmp_path / "server"))
        for accelerated in (started.path, started.upscaler):
            assert accelerated.ready.wait(300) and accelerated.path.name == "cpu-eager-channels-last"
    versions = store_versions(store)
    assert set(versions) == {"selfie2anime", "anime2selfie"}
    images = faces(32)
    face = torch.stack([torch.from_numpy(images[p.stem]).permute(2, 0, 1) for p in FACES])
    for style, direction, upscaler in (("selfie2anime", "a2b", {"name": "realcugan-se", "scale": 4,
                                                                 "denoise": "denoise3x"}),
                                       ("anime2selfie", "b2a", {"name": "realcugan-se", "scale": 2,
                                                                "denoise": "no-denoise"})):
        archive = versions[style]["2.0"]
        arch = archive.handler["arch"]
        assert arch["tf_compat"] is True and arch["light"] is False and arch["img_size"] == 32
        assert arch["fc0_weight"] == "int8" and archive.handler["upscaler"] == upscaler
        stored = archive.generator_weights()
        assert stored["FC.0.weight"].dtype == torch.int8 and stored["FC.0.scale"].dtype == torch.bfloat16
        handler, service = load_eager(read_archive(archive.path), tmp_path / "cache")
        with torch.inference_mode():
            drawn = handler.generate(face).permute(0, 2, 3, 1).numpy()
        diff = max(float(np.abs(d - ref[direction][p.stem]).max()) for d, p in zip(drawn, FACES))
        print(f"{style}: served (int8 FC.0, fp16 elsewhere) vs TensorFlow float32: max abs difference {diff:.2e}")
        assert diff <= INT8_TOLERANCE
        [answer] = predict(handler, service, [(FACES[0].read_bytes(), {})])
        assert answer.status == 200 and answer.content_type.startswith("image/"), answer.body[:200]
        assert Image.open(io.BytesIO(answer.body)).width == 32 * upscaler["scale"]
    assert load_checkpoint(ckpt)["generator_arch"] == {k: v for k, v in arch.items() if k != "fc0_weight"}


def test_a_light_checkpoint_needs_its_image_size(tmp_path, light_32) -> None:
    prefix, _ = light_32
    with pytest.raises(SystemExit, match="--img-size"):
        training_main(["import-official", "--tf", str(prefix), "--no-export", "--out", str(tmp_path / "x.pt")])


def test_smoothing_is_read_from_the_folder_or_asked_for(tmp_path, full_32) -> None:
    prefix, _ = full_32
    elsewhere = tmp_path / "downloads" / prefix.name
    elsewhere.parent.mkdir()
    for f in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(f, elsewhere.parent / f.name)
    with pytest.raises(ValueError, match="--smoothing or --no-smoothing"):
        import_tf(elsewhere, "selfie2anime")
    with_flag = import_tf(elsewhere, "selfie2anime", smoothing=True)["networks"]["genA2B"]
    from_folder = import_tf(prefix, "selfie2anime")["networks"]["genA2B"]
    assert all(torch.equal(with_flag[k], from_folder[k]) for k in from_folder)


def test_a_corrupt_download_is_refused(tmp_path, full_32) -> None:
    prefix, _ = full_32
    copy = tmp_path / prefix.name
    for f in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(f, tmp_path / f.name)
    data = tmp_path / f"{prefix.name}.data-00000-of-00001"
    ckpt = Checkpoint(copy)
    entry = ckpt.entries["generator_B/MLP/linear_0/dense/kernel"]
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 5] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        Checkpoint(copy).read("generator_B/MLP/linear_0/dense/kernel")


def test_reading_a_checkpoint_needs_no_tensorflow(full_32) -> None:
    """Users import without TensorFlow installed: the converter never imports it."""
    prefix, _ = full_32
    code = ("import sys; from training.official_tf import import_tf; "
            f"import_tf(__import__('pathlib').Path({str(prefix)!r}), 'selfie2anime'); "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
