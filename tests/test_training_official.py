"""Importing the authors' PyTorch checkpoints; refusing what we cannot reproduce, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from styles.archive import read_archive
from training.checkpoint import load_checkpoint
from training.cli import main as training_main
from styles.payload.networks import Discriminator, ResnetGenerator
from training.official import REPRODUCES

ROOT = Path(__file__).resolve().parents[1]

ARCH = dict(ngf=8, n_blocks=2, img_size=32)


def official_file(light: bool) -> dict[str, dict[str, torch.Tensor]]:
    """A file in the authors' format: six state dicts under their network names."""
    torch.manual_seed(3)
    nets = {
        "genA2B": ResnetGenerator(**ARCH, light=light), "genB2A": ResnetGenerator(**ARCH, light=light),
        "disGA": Discriminator(ndf=8, n_layers=5), "disGB": Discriminator(ndf=8, n_layers=5),
        "disLA": Discriminator(ndf=8, n_layers=4), "disLB": Discriminator(ndf=8, n_layers=4),
    }
    return {k: v.state_dict() for k, v in nets.items()}


def translate(state: dict[str, torch.Tensor], arch: dict) -> torch.Tensor:
    g = ResnetGenerator(**arch).eval()
    g.load_state_dict(state)
    with torch.inference_mode():
        return g(torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32))[0]


@pytest.mark.parametrize("light", [False, True])
def test_import_official_gives_the_same_translations(tmp_path, capsys, light: bool) -> None:
    raw = official_file(light)
    torch.save(raw, tmp_path / "100000_params.pt")
    rc = training_main(["import-official", str(tmp_path / "100000_params.pt"), "--out",
                        str(tmp_path / "ours.pt"), "--name", "selfie2anime", "--img-size", "32"])
    assert rc == 0
    assert REPRODUCES in capsys.readouterr().out  # says which of the authors' code versions it matches
    ours = load_checkpoint(tmp_path / "ours.pt")
    assert ours["generator_arch"] == {"input_nc": 3, "output_nc": 3, **ARCH, "light": light}
    assert ours["options"]["n_dis_global"] == 5 and ours["options"]["n_dis_local"] == 4
    arch = ours["generator_arch"]
    for k in ("genA2B", "genB2A"):
        torch.testing.assert_close(translate(ours["networks"][k], arch), translate(raw[k], arch))
    # what `export` serves it with: the bundled pair's upscalers at 32 px, a full model's first MLP layer in int8
    assert ours["upscalers"] == [{"name": "realcugan-se", "scale": 4, "denoise": "denoise3x"},
                                 {"name": "realcugan-se", "scale": 2, "denoise": "no-denoise"}]
    assert ours["fc0_weight"] == ("float" if light else "int8")


def test_export_serves_an_import_as_recorded_unless_told(tmp_path) -> None:
    torch.save(official_file(light=False), tmp_path / "full.pt")
    assert training_main(["import-official", str(tmp_path / "full.pt"), "--out", str(tmp_path / "ours.pt"),
                          "--name", "selfie2anime", "--upscaler", "none", "realcugan-se:2:conservative"]) == 0
    assert training_main(["export", str(tmp_path / "ours.pt"), "--out", str(tmp_path / "store")]) == 0
    a2b, b2a = (read_archive(tmp_path / "store" / f"{s}.mar").handler for s in ("selfie2anime", "anime2selfie"))
    assert a2b["arch"]["fc0_weight"] == b2a["arch"]["fc0_weight"] == "int8" and "upscaler" not in a2b
    assert b2a["upscaler"] == {"name": "realcugan-se", "scale": 2, "denoise": "conservative"}
    assert training_main(["export", str(tmp_path / "ours.pt"), "--out", str(tmp_path / "float"),
                          "--fc0-weight", "float"]) == 0
    assert "fc0_weight" not in read_archive(tmp_path / "float" / "selfie2anime.mar").handler["arch"]


def test_import_refuses_the_pre_relu_mlp_code(tmp_path) -> None:
    """Before 7 August 2019 the MLP had no ReLUs (its second layer is FC.1): it would translate differently."""
    raw = official_file(light=False)
    for k in ("genA2B", "genB2A"):
        raw[k] = {key.replace("FC.2.", "FC.1."): v for key, v in raw[k].items()}
    torch.save(raw, tmp_path / "old.pt")
    with pytest.raises(SystemExit, match="before 7 August 2019.*not imported"):
        training_main(["import-official", str(tmp_path / "old.pt"), "--out", str(tmp_path / "o.pt")])
    assert not (tmp_path / "o.pt").exists()


def test_light_file_without_img_size_ends_in_one_clear_line(tmp_path) -> None:
    torch.save(official_file(light=True), tmp_path / "light.pt")
    cmd = [sys.executable, "-m", "training", "import-official", str(tmp_path / "light.pt"),
           "--out", str(tmp_path / "o.pt")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "pass --img-size" in done.stderr
    assert not (tmp_path / "o.pt").exists()


def test_import_rejects_other_files(tmp_path) -> None:
    torch.save({"genA2B": {}}, tmp_path / "x.pt")
    with pytest.raises(SystemExit, match="not a U-GAT-IT checkpoint"):
        training_main(["import-official", str(tmp_path / "x.pt"), "--out", str(tmp_path / "y.pt")])


def test_our_loader_explains_official_files(tmp_path) -> None:
    torch.save(official_file(light=True), tmp_path / "raw.pt")
    with pytest.raises(ValueError, match="import-official"):
        load_checkpoint(tmp_path / "raw.pt")
