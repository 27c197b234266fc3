"""`python -m training export`: archive names, contents and model-config.yaml."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchserve_fixture import export_tiny_styles, tiny_checkpoint

from styles import catalog
from styles.archive import model_config, read_archive, scan, write_archive
from styles.loader import load_eager, predict
from styles.payload.networks import ResnetGenerator

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("run", "styles"),
    [
        ("selfie2anime", {"selfie2anime", "anime2selfie"}),
        ("cat2dog", {"cat2dog", "dog2cat"}),
        ("vangogh2photo", {"vangogh2photo", "photo2vangogh"}),
    ],
)
def test_one_archive_per_direction_named_by_style(tmp_path: Path, run: str, styles: set[str]) -> None:
    store = tmp_path / "store"
    export_tiny_styles(store, run)
    assert {p.name for p in store.glob("*.mar")} == {f"{s}.mar" for s in styles}
    assert set(scan(store)) == styles


def test_archive_holds_fp16_weights_code_handler_and_config(tmp_path: Path) -> None:
    store = tmp_path / "store"
    export_tiny_styles(store, "selfie2anime", "--batch-size", "4", "--max-batch-delay", "30")
    path = store / "anime2selfie.mar"
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        assert {"handler.py", "imaging.py", "framing.py", "mtcnn_detector.py", "jobs.py", "networks.py", "generator.pt",
                "model-config.yaml", "MAR-INF/MANIFEST.json"} <= names
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]
        config = yaml.safe_load(z.read("model-config.yaml"))
        z.extract("generator.pt", tmp_path)
    assert manifest["modelName"] == "anime2selfie"
    assert manifest["modelVersion"] == "1.0"
    weights = torch.load(tmp_path / "generator.pt", weights_only=True)
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    assert not any(k.startswith(("disG", "disL")) for k in weights)
    assert config["batchSize"] == 4 and config["maxBatchDelay"] == 30
    assert {"minWorkers", "maxWorkers", "responseTimeout"} <= set(config)
    handler = config["handler"]
    assert handler["arch"] == {"input_nc": 3, "output_nc": 3, "ngf": 8, "n_blocks": 1, "img_size": 32, "light": True}
    assert handler["img_size"] == 32
    assert handler["title"] == catalog.KNOWN["anime2selfie"].title
    assert handler["needs_face"] is False  # anime faces are centre-cropped
    assert handler["inference"] == "auto"
    assert "acceleration.py" in names


def halves(preview: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A preview's before and after halves, as int16 pixels."""
    pixels = np.asarray(Image.open(io.BytesIO(preview)).convert("RGB"), dtype=np.int16)
    return pixels[:, : pixels.shape[1] // 2], pixels[:, pixels.shape[1] // 2 :]


def test_each_archive_carries_a_small_preview_of_its_public_domain_picture(tmp_path: Path) -> None:
    store = tmp_path / "store"
    export_tiny_styles(store, "cat2dog", "--draw-size-factor", "2")
    previews = {name: archive.preview() for name, archive in scan(store).items()}
    for preview in previews.values():
        assert preview is not None and preview.startswith(b"\xff\xd8") and len(preview) < 40_000
        assert Image.open(io.BytesIO(preview)).size == (128, 64)  # before | after, at the size it draws
    with Image.open(catalog.PREVIEW_PICTURES / "chelsea.jpg") as cat:  # cat2dog's before: the Chelsea cat
        square = np.asarray(cat.convert("RGB").resize((64, 64), Image.LANCZOS), dtype=np.int16)
    assert np.abs(halves(previews["cat2dog"])[0] - square).mean() < 8
    # No public-domain dog: dog2cat's before is cat2dog's drawing of the cat.
    assert np.abs(halves(previews["dog2cat"])[0] - halves(previews["cat2dog"])[1]).mean() < 8
    assert catalog.preview("dog2cat").through == "cat2dog"


def test_the_catalogue_previews_every_known_style_from_a_picture_on_disk() -> None:
    assert set(catalog.PREVIEWS) == set(catalog.KNOWN)
    for style, source in catalog.PREVIEWS.items():
        assert (catalog.PREVIEW_PICTURES / source.picture).is_file()
        assert source.through is None or catalog.split_pair(style)[1] == source.through


def test_b2a_archive_holds_the_b2a_generator(tmp_path: Path) -> None:
    store = tmp_path / "store"
    export_tiny_styles(store, "cat2dog", seed=3)
    original = torch.load(tmp_path / "cat2dog-3.ckpt", weights_only=False)["networks"]["genB2A"]
    with zipfile.ZipFile(store / "dog2cat.mar") as z:
        z.extract("generator.pt", tmp_path)
    exported = torch.load(tmp_path / "generator.pt", weights_only=True)
    for key, value in original.items():
        torch.testing.assert_close(exported[key].float(), value.half().float())


def test_names_titles_and_face_flags_from_the_command_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    export_tiny_styles(
        store, "selfie2anime", "--names", "toon", "untoon", "--title", "Toon", "Untoon",
        "--description", "Makes a toon.", "Unmakes a toon.", "--needs-face", "yes", "no",
    )
    styles = {name: a.entry for name, a in scan(store).items()}
    assert styles["toon"].title == "Toon" and styles["toon"].needs_face
    assert styles["untoon"].description == "Unmakes a toon." and not styles["untoon"].needs_face


def test_later_versions_sit_beside_the_first(tmp_path: Path) -> None:
    store = tmp_path / "store"
    export_tiny_styles(store, "cat2dog")
    export_tiny_styles(store, "cat2dog", "--version", "2.0", seed=1)
    assert (store / "cat2dog.mar").exists() and (store / "cat2dog-2.0.mar").exists()
    assert read_archive(store / "cat2dog-2.0.mar").version == "2.0"
    assert scan(store)["cat2dog"].version == "1.0"  # the first: what serves until 2.0 is deployed


def test_two_exports_of_one_style_at_once_each_pack_their_own_files(tmp_path: Path, monkeypatch) -> None:
    """torch-model-archiver staged every archive in $TMPDIR/<style>, deleting it first: two exports of one
    style at once packed each other's weights (or none). Each now stages in a folder of its own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    theirs = tmp_path / "selfie2anime"  # what torch-model-archiver would have been staging for another export
    theirs.mkdir()
    (theirs / "generator.pt").write_bytes(b"another export's weights")
    generators = []
    for seed in range(4):
        torch.manual_seed(seed)
        generators.append(ResnetGenerator(ngf=8, n_blocks=1, img_size=32, light=True).state_dict())
    config = model_config(ResnetGenerator(ngf=8, n_blocks=1, img_size=32, light=True).arch(), 32,
                          catalog.entry("selfie2anime"), workers=1, batch_size=1, max_batch_delay=50,
                          response_timeout=120)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda i: write_archive(tmp_path / f"store{i}", "selfie2anime", f"{i + 2}.0",
                                                      generators[i], config), range(4)))
    for path, weights in zip(paths, generators):
        packed = read_archive(path).generator_weights()
        assert all(torch.equal(packed[k], weights[k].half().float()) for k in weights)
    assert (theirs / "generator.pt").read_bytes() == b"another export's weights"


def test_unknown_pairs_get_generic_catalogue_entries() -> None:
    assert catalog.split_pair("sketch2photo") == ("sketch2photo", "photo2sketch")
    assert catalog.entry("photo2sketch") == catalog.Entry(
        "Photo to sketch", "Turns a photo picture into a sketch picture.", False
    )
    with pytest.raises(ValueError, match="name the styles"):
        catalog.split_pair("a2b2c")


def test_training_cli_registers_export(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path / "run.ckpt", "horse2zebra")
    result = subprocess.run(
        [sys.executable, "-m", "training", "export", str(ckpt), "--out", str(tmp_path / "store")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in (tmp_path / "store").glob("*.mar")} == {"horse2zebra.mar", "zebra2horse.mar"}


def test_a_style_may_reply_resampled_to_a_size_of_its_own(tmp_path: Path) -> None:
    """anime2selfie serves best enlarged by resampling (the learned upscalers made its faces less like photos):
    `--output-size` sets a direction's default reply side; a request's own size still wins."""
    store = tmp_path / "store"
    export_tiny_styles(store, "cat2dog", "--output-size", "0", "48")
    archives = scan(store)
    assert archives["cat2dog"].output_size == 32 and archives["dog2cat"].output_size == 48
    handler, service = load_eager(archives["dog2cat"], tmp_path / "cache")
    photo = (catalog.PREVIEW_PICTURES / "chelsea.jpg").read_bytes()
    default, asked = predict(handler, service, [(photo, {}), (photo, {"X-Size": "40"})])
    assert [Image.open(io.BytesIO(a.body)).size for a in (default, asked)] == [(48, 48), (40, 40)]
    assert handler.output_size == 48
