"""The trainer on tiny configurations: losses, gradients, schedule, exact resume, CLI."""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from waiting import START_S, until

from training.cli import main as training_main
from training.checkpoint import load_checkpoint
from training.distributed import Runtime
from training.options import TrainOptions
from training.trainer import LOSS_KEYS, Trainer, linear_decay

CPU = Runtime(device=torch.device("cpu"))
TINY = dict(img_size=32, ch=4, n_res=1, light=True, n_dis_global=5, n_dis_local=4, batch_size=1)
# Settings pinned: `auto` would time candidates, and two runs could choose differently.
TINY_FLAGS = ["--img-size", "32", "--ch", "4", "--n-res", "1", "--light",
              "--n-dis-global", "5", "--n-dis-local", "4", "--threads", "1",
              "--precision", "fp32", "--memory-format", "contiguous"]


def tiny_options(data: Path, out: Path, **overrides) -> TrainOptions:
    return TrainOptions(name="a2b", data=str(data), out_dir=str(out), **{**TINY, **overrides})


def test_one_step_gives_finite_losses_and_a_gradient_to_every_parameter(tiny_dataset, tmp_path) -> None:
    trainer = Trainer(tiny_options(tiny_dataset, tmp_path, iters=10), CPU)
    real_A, real_B = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    losses = trainer.train_step(real_A, real_B)
    assert set(losses) == set(LOSS_KEYS)
    assert all(math.isfinite(v) for v in losses.values())
    for name, net in trainer.nets.items():
        for pname, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname} got no gradient"
    assert trainer.step == 1


def test_rho_stays_in_unit_interval_while_training(tiny_dataset, tmp_path) -> None:
    trainer = Trainer(tiny_options(tiny_dataset, tmp_path, iters=10, lr=0.5), CPU)
    real_A, real_B = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    for _ in range(3):
        trainer.train_step(real_A, real_B)
    rhos = [p for g in ("genA2B", "genB2A") for n, p in trainer.nets[g].named_parameters() if n.endswith("rho")]
    assert rhos and all(((p >= 0) & (p <= 1)).all() for p in rhos)


def test_learning_rate_decays_linearly_over_the_second_half() -> None:
    f = linear_decay(100, decay=True)
    assert [f(0), f(49), f(50), f(75), f(100)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert linear_decay(100, decay=False)(99) == 1.0


def test_too_deep_discriminator_for_the_image_size_is_refused(tiny_dataset, tmp_path) -> None:
    with pytest.raises(ValueError, match="--n-dis-global"):
        Trainer(tiny_options(tiny_dataset, tmp_path, n_dis_global=7), CPU)


def read_losses(run: Path) -> list[dict[str, str]]:
    with (run / "losses.csv").open() as f:
        return list(csv.DictReader(f))


def test_stopped_and_resumed_run_gives_the_same_losses(tiny_dataset, tmp_path) -> None:
    common = ["fit", "--data", str(tiny_dataset), "--name", "a2b", *TINY_FLAGS,
              "--iters", "6", "--log-every", "1", "--sample-every", "100", "--save-every", "100"]
    assert training_main([*common, "--out-dir", str(tmp_path / "straight")]) == 0
    assert training_main([*common, "--out-dir", str(tmp_path / "resumed"), "--stop-after", "3"]) == 0
    assert load_checkpoint(tmp_path / "resumed/a2b/checkpoints/latest.pt")["step"] == 3
    assert training_main([*common, "--out-dir", str(tmp_path / "resumed"), "--resume"]) == 0
    straight, resumed = read_losses(tmp_path / "straight/a2b"), read_losses(tmp_path / "resumed/a2b")
    assert [r["step"] for r in resumed] == [str(i) for i in range(1, 7)]
    assert straight == resumed


def test_smoke_run_end_to_end_writes_samples_losses_and_checkpoint(tiny_dataset, tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    rc = training_main(["fit", "--data", str(tiny_dataset), "--name", "smoke", "--out-dir", str(tmp_path),
                        *TINY_FLAGS, "--iters", "4", "--log-every", "2", "--sample-every", "2"])
    assert rc == 0
    run = tmp_path / "smoke"
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["0000002.png", "0000004.png"]
    assert (run / "losses.png").stat().st_size > 0
    state = load_checkpoint(run / "checkpoints/latest.pt")
    assert state["step"] == 4 and state["options"]["img_size"] == 32
    assert set(state["networks"]) == {"genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB"}
    assert any("empty.jpg" in r.getMessage() for r in caplog.records), "unreadable file not named"


def test_keyboard_interrupt_saves_a_checkpoint(tiny_dataset, tmp_path, monkeypatch) -> None:
    trainer = Trainer(tiny_options(tiny_dataset, tmp_path, iters=10, sample_every=100, save_every=100), CPU)
    real_step = trainer.train_step

    def interrupted_after_two(real_A, real_B):
        if trainer.step == 2:
            raise KeyboardInterrupt
        return real_step(real_A, real_B)

    monkeypatch.setattr(trainer, "train_step", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert load_checkpoint(trainer.checkpoint_path)["step"] == 2


def test_summary_reports_the_light_generator(capsys) -> None:
    """The issue's command: the authors' light generator has 10,589,888 parameters, 105 GFLOPs."""
    assert training_main(["summary", "--light", "--img-size", "256", "--ch", "64", "--n-res", "4"]) == 0
    generator = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("generator"))
    assert generator.split()[-2:] == ["10,589,888", "105.01"]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_and_exit_cleanly(tiny_dataset, tmp_path) -> None:
    """DDP for real through the command line: two gloo processes train, save and both exit 0."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "training", "fit", "--data", str(tiny_dataset), "--name", "ddp",
           "--out-dir", str(tmp_path), *TINY_FLAGS, "--iters", "3", "--log-every", "1",
           "--sample-every", "100", "--save-every", "100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(tmp_path / "ddp/checkpoints/latest.pt")
    assert state["step"] == 3
    assert len(read_losses(tmp_path / "ddp")) == 3


@pytest.mark.slow
def test_torchrun_ranks_hold_identical_weights_and_a_drift_is_caught(tiny_dataset, tmp_path) -> None:
    """Each rank writes its own weights after DDP steps: every tensor equal bit for bit; one nudged weight
    on rank 1 makes the replicas check fail on every rank."""
    script = Path(__file__).with_name("ddp_replicas.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(tiny_dataset), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() and "ema-0.999.genA2B" in ranks[0]
    for net, weights in ranks[0].items():
        assert weights.keys() == ranks[1][net].keys()
        for name, tensor in weights.items():
            assert torch.equal(tensor, ranks[1][net][name]), f"{net}.{name} differs between ranks"
    initial = Trainer(tiny_options(tiny_dataset, tmp_path), CPU).nets["genA2B"].state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in ranks[0]["genA2B"].items()), "nothing trained"
    for r in (0, 1):
        assert "genB2A" in (tmp_path / f"rank{r}.drift").read_text()


async def test_sigterm_saves_a_checkpoint_and_exits(tiny_dataset, tmp_path) -> None:
    """`docker stop` sends SIGTERM: the run must save where it is, like Ctrl-C."""
    cmd = [sys.executable, "-m", "training", "fit", "--data", str(tiny_dataset), "--name", "term",
           "--out-dir", str(tmp_path), *TINY_FLAGS, "--iters", "100000", "--log-every", "1",
           "--sample-every", "100000", "--save-every", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    losses = tmp_path / "term" / "losses.csv"

    def two_steps_or_ended() -> bool:
        """The run has logged two steps (a header and two rows), or has ended."""
        return (losses.exists() and len(losses.read_text().splitlines()) > 2) or proc.poll() is not None

    try:
        await until(two_steps_or_ended, "two logged steps", every=0.2, within=START_S)
        assert proc.poll() is None, f"the run ended before its second step: {proc.communicate()[1][-3000:]}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:  # a failed check: the run must not go on for 100,000 steps
            proc.kill()
            proc.wait()
    assert load_checkpoint(tmp_path / "term/checkpoints/latest.pt")["step"] >= 2
