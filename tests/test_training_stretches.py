"""Training in stretches across machines: a run continues from its archives, ends on time,
records what trained it, and picks its CPU settings by measuring them."""

from __future__ import annotations

import io
import os
import zipfile
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from training import speed, warm_start
from training.checkpoint import load_checkpoint
from training.cli import main as training_main
from training.distributed import Runtime
from training.options import TrainOptions
from training.trainer import Trainer

TINY = ["--img-size", "32", "--ch", "4", "--n-res", "1", "--light", "--n-dis-global", "5",
        "--n-dis-local", "4", "--threads", "1", "--precision", "fp32", "--memory-format", "contiguous",
        "--sample-every", "1000", "--save-every", "1000", "--log-every", "1"]
CPU = Runtime(device=torch.device("cpu"))


def fit(data: Path, out: Path, *extra: str) -> None:
    assert training_main(["fit", "--data", str(data), "--name", "a2b", "--out-dir", str(out), *TINY, *extra]) == 0


def export(ckpt: Path, store: Path, warm: Path | None = None, *extra: str) -> None:
    args = ["export", str(ckpt), "--out", str(store), *extra]
    assert training_main(args) == 0
    if warm is not None:  # what `--warm-start` writes, but into a test folder
        state = load_checkpoint(ckpt)
        warm_start.save_discriminators(state["networks"], "a2b", int(state["step"]), folder=warm)


def handler_config(archive: Path) -> dict:
    with zipfile.ZipFile(archive) as z:
        return yaml.safe_load(z.read("model-config.yaml"))["handler"]


@pytest.fixture
def first_stretch(tiny_dataset: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Three iterations, exported with the discriminators: (model store, warm-start folder)."""
    fit(tiny_dataset, tmp_path / "runs", "--iters", "10", "--stop-after", "3")
    store, warm = tmp_path / "model_store", tmp_path / "warm"
    export(tmp_path / "runs/a2b/checkpoints/latest.pt", store, warm)
    return store, warm


def test_archive_records_iterations_resolution_machine_and_hours(first_stretch) -> None:
    store, _ = first_stretch
    record = handler_config(store / "a2b.mar")["training"]
    assert record["iterations"] == 3 and record["hours"] >= 0
    (stretch,) = record["stretches"]
    assert stretch["iterations"] == [0, 3] and stretch["img_size"] == 32
    assert "1 threads" in stretch["machine"]


def test_next_stretch_continues_from_the_archives_and_warm_start(first_stretch, tiny_dataset, tmp_path) -> None:
    store, warm = first_stretch
    initial = warm_start.initial_state(store / "b2a.mar", "a2b", warm / "a2b.pt")
    trained = load_checkpoint(tmp_path / "runs/a2b/checkpoints/latest.pt")["networks"]
    assert initial["step"] == 3
    for key in ("genA2B", "genB2A", "disGA", "disLB"):  # generators from the right archive, fp16-exact
        for name, tensor in trained[key].items():
            assert torch.allclose(initial["networks"][key][name], tensor.half().float()), (key, name)

    fit(tiny_dataset, tmp_path / "next", "--iters", "10", "--stop-after", "2", "--init-from", str(store / "a2b.mar"),
        "--discriminator-warmup", "3")
    state = load_checkpoint(tmp_path / "next/a2b/checkpoints/latest.pt")
    assert state["step"] == 5  # warm-up batches are not iterations of the run
    assert [s["iterations"] for s in state["history"]["stretches"]] == [[0, 3], [3, 5]]


def test_a_stretch_that_did_not_ship_carries_on_from_its_packed_generators(first_stretch, tiny_dataset, tmp_path) -> None:
    """The archives keep the better pictures; the run continues from the generators packed beside the warm start."""
    store, warm = first_stretch
    fit(tiny_dataset, tmp_path / "runs", "--iters", "10", "--resume", "--stop-after", "2")
    warm_start.pack(tmp_path / "runs/a2b/checkpoints/latest.pt", warm)
    initial = warm_start.initial_state(store / "a2b.mar", "a2b", warm / "a2b.pt")
    later = load_checkpoint(tmp_path / "runs/a2b/checkpoints/latest.pt")
    assert initial["step"] == 5 and initial["history"]["iterations"] == 5
    for name, tensor in later["networks"]["genB2A"].items():
        assert torch.allclose(initial["networks"]["genB2A"][name], tensor.half().float()), name
    (warm / "a2b.generators.pt").rename(warm / "old.generators.pt")  # gone: back to the archives
    assert warm_start.initial_state(store / "a2b.mar", "a2b", warm / "a2b.pt")["step"] == 3


def test_discriminator_warmup_trains_only_the_discriminators(first_stretch, tiny_dataset) -> None:
    store, _ = first_stretch
    opts = TrainOptions.from_dict({**load_checkpoint(store.parent / "runs/a2b/checkpoints/latest.pt")["options"],
                                   "data": str(tiny_dataset)})
    trainer = Trainer(opts, CPU)
    initial = warm_start.initial_state(store / "a2b.mar", "a2b", discriminators=None)
    assert not initial["discriminators_warm"]
    trainer.load(initial)
    before = {k: {n: t.clone() for n, t in trainer.nets[k].state_dict().items()} for k in trainer.nets}
    trainer.warm_up_discriminators(4)
    after = {k: trainer.nets[k].state_dict() for k in trainer.nets}
    changed = {k for k in after if any(not torch.equal(before[k][n], t) for n, t in after[k].items())}
    assert changed == {"disGA", "disGB", "disLA", "disLB"}
    assert trainer.step == 3


def test_init_from_says_what_is_missing(tiny_dataset, tmp_path, first_stretch) -> None:
    store, _ = first_stretch
    (store / "b2a.mar").unlink()
    with pytest.raises(SystemExit, match="b2a.mar"):
        fit(tiny_dataset, tmp_path / "next", "--iters", "10", "--init-from", str(store / "a2b.mar"))
    with pytest.raises(SystemExit, match="not an archive of"):
        fit(tiny_dataset, tmp_path / "next", "--iters", "10", "--init-from", str(store / "x2y.mar"))


def test_time_limit_ends_the_stretch_with_a_checkpoint(tiny_dataset, tmp_path) -> None:
    fit(tiny_dataset, tmp_path, "--iters", "100000", "--time-limit", "0")
    assert load_checkpoint(tmp_path / "a2b/checkpoints/latest.pt")["step"] == 1


def test_auto_settings_on_a_cpu_are_the_fastest_measured(monkeypatch) -> None:
    """Only the CPU's own bf16 instructions make bf16 a candidate; the quickest candidate wins."""
    opts = TrainOptions(name="a2b", data="", img_size=32, ch=4, n_res=1, light=True,
                        n_dis_global=5, n_dis_local=4)
    monkeypatch.setattr(speed, "cpu_has_bf16", lambda: False)
    assert {(c.precision, c.memory_format) for c in speed.cpu_candidates(opts)} == {
        ("fp32", "contiguous"), ("fp32", "channels_last")}
    monkeypatch.setattr(speed, "cpu_has_bf16", lambda: True)
    assert len(speed.cpu_candidates(opts)) == 4
    assert speed.cpu_candidates(replace(opts, precision="fp32", memory_format="contiguous")) == [
        replace(opts, precision="fp32", memory_format="contiguous")]

    rates = {("bf16", "channels_last"): 3.0, ("fp32", "contiguous"): 2.0}
    monkeypatch.setattr(speed, "images_per_second",
                        lambda o, rt, steps: rates.get((o.precision, o.memory_format), 1.0))
    chosen = speed.settle_auto(opts, CPU)
    assert (chosen.precision, chosen.memory_format) == ("bf16", "channels_last")


def test_images_per_second_times_real_training_steps() -> None:
    opts = TrainOptions(name="a2b", data="", img_size=32, ch=4, n_res=1, light=True, n_dis_global=5,
                        n_dis_local=4, batch_size=2, precision="fp32", memory_format="channels_last")
    assert speed.images_per_second(opts, CPU, steps=1) > 0


def test_a_running_fit_follows_the_threads_file(tiny_dataset, tmp_path, monkeypatch) -> None:
    """`echo 1 > runs/NAME/threads` gives the machine back to a test suite without stopping the run,
    from its very first step: a run started beside another one must not spend its first log window
    oversubscribed (two 2-thread runs on 2 cores measured 20x slower per step)."""
    threads_per_step: list[int] = []
    train_step = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step",
                        lambda self, *a: (threads_per_step.append(torch.get_num_threads()), train_step(self, *a))[1])
    fit(tiny_dataset, tmp_path / "without", "--iters", "2", "--threads", "2")
    assert threads_per_step == [2, 2]
    (tmp_path / "with" / "a2b").mkdir(parents=True)
    (tmp_path / "with" / "a2b" / "threads").write_text("1\n")
    threads_per_step.clear()
    fit(tiny_dataset, tmp_path / "with", "--iters", "2", "--threads", "2")
    assert threads_per_step == [1, 1]
    torch.set_num_threads(1)


def test_pack_carries_a_run_off_its_machine_in_fp16(first_stretch, tmp_path) -> None:
    """What a lent GPU brings back: a generators checkpoint `export` takes, and the discriminators."""
    assert training_main(["pack", str(tmp_path / "runs/a2b/checkpoints/latest.pt"), "--out", str(tmp_path / "out")]) == 0
    gens = load_checkpoint(tmp_path / "out" / "a2b.generators.pt")
    assert set(gens["networks"]) == {"genA2B", "genB2A"} and "optimizers" not in gens
    assert all(t.dtype == torch.float16 for t in gens["networks"]["genA2B"].values() if t.is_floating_point())
    assert gens["history"]["iterations"] == 3
    assert set(warm_start.load_discriminators(tmp_path / "out" / "a2b.pt")) == set(warm_start.DISCRIMINATORS)
    export(tmp_path / "out" / "a2b.generators.pt", tmp_path / "store")
    assert handler_config(tmp_path / "store" / "b2a.mar")["training"]["iterations"] == 3


def test_pack_data_keeps_training_images_small_and_samples_few(tiny_dataset, tmp_path) -> None:
    assert training_main(["pack-data", str(tiny_dataset), str(tmp_path / "pack"), "--img-size", "32"]) == 0
    train = sorted((tmp_path / "pack" / "trainA").iterdir())
    assert len(train) == 5  # five 40 px pictures; the empty file is skipped
    assert all(p.suffix == ".webp" and Image.open(p).size == (32, 32) for p in train)
    assert len(list((tmp_path / "pack" / "testB").iterdir())) == 4


def test_showcase_puts_each_archive_beside_the_inputs_at_its_own_size(first_stretch, tmp_path) -> None:
    store, _ = first_stretch
    faces = sorted((Path(__file__).parent / "fixtures").glob("*_256.jpg"))[:2]
    out = tmp_path / "strip.png"
    assert training_main(["showcase", "--archives", str(store / "a2b.mar"), str(store / "b2a.mar"),
                          "--inputs", *map(str, faces), "--out", str(out)]) == 0
    strip = Image.open(out)
    assert strip.height > 2 * 192 and strip.width >= 192 + 2 * 130


@pytest.mark.slow
def test_train_speed_bench_compares_every_setting_against_the_demo_configuration(capsys, monkeypatch) -> None:
    """bench/train_speed.py: the demo's configuration first (1.00x), then each combination, with the CPU named."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import train_speed

    monkeypatch.setattr(sys, "argv", ["train_speed.py", "--img-size", "48", "--ch", "4", "--quick"])
    train_speed.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CPU ") and "family" in lines[0]
    rows = [line.split() for line in lines[3:]]
    assert rows[0][:4] == ["1", "1", "fp32", "contiguous"] and rows[0][-1] == "1.00x"
    threads = [1, 2] if (os.cpu_count() or 1) >= 2 else [1]
    precisions = 2 if speed.cpu_has_bf16() else 1
    assert len(rows) == len(threads) * 2 * precisions * 2  # threads x batch 1/4 x precisions x layouts
    torch.set_num_threads(1)


def test_an_archive_pair_is_repackaged_with_todays_handler_keeping_weights_and_record(first_stretch, tmp_path) -> None:
    store, _ = first_stretch
    again = tmp_path / "again"
    assert training_main(["export", str(store / "b2a.mar"), "--out", str(again)]) == 0
    for style in ("a2b", "b2a"):
        before, after = (warm_start.read_archive(s / f"{style}.mar") for s in (store, again))
        assert before[1] == after[1]  # size, catalogue entry, training record
        assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])


def rewrite_config(archive: Path, **handler: object) -> None:
    """`archive` with its model-config's handler section updated: a direction from another stretch."""
    with zipfile.ZipFile(archive) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = yaml.safe_load(files["model-config.yaml"])
    config["handler"].update(handler)
    files["model-config.yaml"] = yaml.safe_dump(config).encode()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def test_repackaging_keeps_each_directions_own_size_and_record(first_stretch, tmp_path) -> None:
    """A pair's directions may ship from different stretches (zebra2horse at 96 px beside horse2zebra at 128):
    re-packaging gave both the named archive's size and record once; the next stretch continues the further."""
    store, _ = first_stretch
    a2b = handler_config(store / "a2b.mar")
    earlier = {**a2b["training"], "iterations": 2, "weights": "ema-0.999"}
    rewrite_config(store / "b2a.mar", img_size=24, draw_size=48, output_size=64,
                   arch={**a2b["arch"], "img_size": 24}, training=earlier)
    before = {style: handler_config(store / f"{style}.mar") for style in ("a2b", "b2a")}
    assert training_main(["export", str(store / "a2b.mar"), "--out", str(tmp_path / "again")]) == 0
    for style in ("a2b", "b2a"):
        after = handler_config(tmp_path / "again" / f"{style}.mar")
        for key in ("img_size", "draw_size", "output_size", "arch", "training", "upscaler"):
            assert after.get(key) == before[style].get(key), (style, key)
    assert warm_start.initial_state(store / "b2a.mar", "a2b", None)["step"] == 3
    assert training_main(["export", str(store / "a2b.mar"), "--out", str(tmp_path / "drawn"),
                          "--draw-size-factor", "2", "1"]) == 0  # each direction's own: a painting drawn larger
    assert handler_config(tmp_path / "drawn" / "a2b.mar")["draw_size"] == 2 * a2b["img_size"]
    assert "draw_size" not in handler_config(tmp_path / "drawn" / "b2a.mar")  # 24 px, drawn at 24
    with pytest.raises(SystemExit, match="an archive has only the weights it ships"):
        training_main(["export", str(store / "a2b.mar"), "--out", str(tmp_path / "x"), "--weights", "ema-0.999"])


def test_moving_averages_follow_the_generators_at_their_decay(tiny_dataset, tmp_path) -> None:
    opts = TrainOptions(name="a2b", data=str(tiny_dataset), out_dir=str(tmp_path), img_size=32, ch=4, n_res=1,
                        light=True, n_dis_global=5, n_dis_local=4, iters=10, lr=0.01, ema_decay=(0.5, 0.9))
    trainer = Trainer(opts, CPU)
    before = {k: p.detach().clone() for k, p in trainer.nets["genA2B"].named_parameters()}
    averages = {key: {k: p.detach().clone() for k, p in gens["genA2B"].named_parameters()}
                for key, gens in trainer.ema.items()}
    assert all(torch.equal(averages["ema-0.5"][k], before[k]) for k in before)  # they start at the weights
    real_A, real_B = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    trainer.train_step(real_A, real_B)
    after = dict(trainer.nets["genA2B"].named_parameters())
    for key, decay in (("ema-0.5", 0.5), ("ema-0.9", 0.9)):
        ema = dict(trainer.ema[key]["genA2B"].named_parameters())
        for k in before:
            assert torch.allclose(ema[k], decay * before[k] + (1 - decay) * after[k], atol=1e-6), (key, k)
    assert any(not torch.equal(ema[k], after[k]) for k in before)


def test_averages_survive_resume_pack_and_the_next_stretch_and_export_says_which(first_stretch, tiny_dataset, tmp_path) -> None:
    store, warm = first_stretch
    fit(tiny_dataset, tmp_path / "runs", "--iters", "10", "--resume", "--stop-after", "2")
    state = load_checkpoint(tmp_path / "runs/a2b/checkpoints/latest.pt")
    assert set(state["ema"]) == {"ema-0.999", "ema-0.9999"}
    averaged = state["ema"]["ema-0.999"]["genA2B"]
    assert any(not torch.equal(t, state["networks"]["genA2B"][k]) for k, t in averaged.items())

    warm_start.pack(tmp_path / "runs/a2b/checkpoints/latest.pt", warm)
    initial = warm_start.initial_state(store / "a2b.mar", "a2b", warm / "a2b.pt")
    for name, tensor in averaged.items():  # the next stretch resumes the average, not the weights
        assert torch.allclose(initial["ema"]["ema-0.999"]["genA2B"][name], tensor.half().float()), name
    opts = TrainOptions.from_dict({**state["options"], "data": str(tiny_dataset)})
    trainer = Trainer(opts, CPU)
    trainer.load(initial)
    assert torch.equal(next(iter(trainer.ema["ema-0.999"]["genA2B"].parameters())),
                       next(iter(initial["ema"]["ema-0.999"]["genA2B"].values())))

    export(warm / "a2b.generators.pt", tmp_path / "store", None, "--weights", "ema-0.999")
    assert handler_config(tmp_path / "store" / "a2b.mar")["training"]["weights"] == "ema-0.999"
    with zipfile.ZipFile(tmp_path / "store" / "a2b.mar") as z:
        shipped = torch.load(io.BytesIO(z.read("generator.pt")), weights_only=True)
    assert all(torch.equal(shipped[k], t.half()) for k, t in averaged.items())
    with pytest.raises(SystemExit, match="has no ema-0.5 weights"):
        training_main(["export", str(warm / "a2b.generators.pt"), "--out", str(tmp_path / "x"), "--weights", "ema-0.5"])


def test_export_sets_each_directions_upscaler_and_repackaging_keeps_it(first_stretch, tmp_path) -> None:
    store, _ = first_stretch
    export(tmp_path / "runs/a2b/checkpoints/latest.pt", tmp_path / "up", None,
           "--upscaler", "realcugan-se:4:denoise3x", "none")
    assert handler_config(tmp_path / "up" / "a2b.mar")["upscaler"] == {
        "name": "realcugan-se", "scale": 4, "denoise": "denoise3x"}
    assert "upscaler" not in handler_config(tmp_path / "up" / "b2a.mar")
    export(tmp_path / "up" / "b2a.mar", tmp_path / "again")  # re-packaged from archives: each keeps its own
    assert handler_config(tmp_path / "again" / "a2b.mar")["upscaler"]["scale"] == 4
    assert "upscaler" not in handler_config(tmp_path / "again" / "b2a.mar")
    with pytest.raises(SystemExit, match="has no scale 5 with denoise 'denoise3x'"):
        training_main(["export", str(tmp_path / "up" / "a2b.mar"), "--out", str(tmp_path / "x"),
                       "--upscaler", "realcugan-se:5:denoise3x", "none"])
