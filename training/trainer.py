"""The U-GAT-IT trainer: two generators, four discriminators, the paper's losses.

Names follow the authors' code: `real_A`, `fake_A2B`, `fake_A2B2A` (cycle),
`fake_A2A` (identity), `disGA`/`disLA` (global/local discriminators of
domain A), `*_cam_logit` (auxiliary CAM classifier outputs).

Each iteration updates the generators first, then the discriminators on the
same (detached) translations. The discriminators thus see exactly the
translations of the generators before their update, as in the authors'
D-then-G order, without running the generators twice.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import random
import time
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import NETWORKS, load_checkpoint, save_checkpoint
from training.data import SAMPLE_IMAGES, UnpairedBatches, fixed_images
from training.distributed import Runtime
from styles.payload.networks import Discriminator, ResnetGenerator, clip_rho, min_image_size
from training.options import TrainOptions
from training.hardware import cpu_name
from training.visualize import direction_grid, heatmap_overlay, plot_losses, stack_vertically

log = logging.getLogger(__name__)

GENERATORS = ("genA2B", "genB2A")
LOSS_KEYS = (
    "D_loss", "D_loss_A", "D_loss_B",
    "G_loss", "G_adv", "G_cycle", "G_identity", "G_cam",
)


def ema_key(decay: float) -> str:
    """How a moving average is named in checkpoints and on the command line: `ema-0.999`."""
    return f"ema-{decay:g}"


def lsgan(logit: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss against a constant target."""
    return F.mse_loss(logit.float(), torch.full_like(logit, target, dtype=torch.float32))


def cam_bce(logit: torch.Tensor, target: float) -> torch.Tensor:
    """CAM classifier loss: is this image from the source domain (1) or not (0)."""
    return F.binary_cross_entropy_with_logits(
        logit.float(), torch.full_like(logit, target, dtype=torch.float32)
    )


def linear_decay(iters: int, decay: bool) -> Callable[[int], float]:
    """lr factor: 1 for the first half, then linearly to 0 at the last iteration (paper)."""
    half = iters // 2

    def factor(step: int) -> float:
        if not decay or step < half:
            return 1.0
        return max(0.0, (iters - step) / max(1, iters - half))

    return factor


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32.

    On a CPU `auto` is settled before the trainer is built (`training.speed`
    measures fp32 against bf16); one still `auto` here means float32.
    """
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a CUDA device; use bf16 or fp32 on a CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def resolve_memory_format(memory_format: str, device: torch.device) -> torch.memory_format:
    """channels-last for `auto` on CUDA (tensor cores want it); on a CPU `auto` is settled by measurement first."""
    if memory_format == "channels_last" or (memory_format == "auto" and device.type == "cuda"):
        return torch.channels_last
    return torch.contiguous_format


def machine_name(device: torch.device) -> str:
    """The GPU's or CPU's name (with the thread count), for the record of who trained what."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


class Trainer:
    """Builds the six networks and their optimisers; trains, samples, saves and resumes."""

    def __init__(self, opts: TrainOptions, runtime: Runtime) -> None:
        for size_name, n in (("global", opts.n_dis_global), ("local", opts.n_dis_local)):
            if opts.img_size < min_image_size(n):
                raise ValueError(
                    f"--img-size {opts.img_size} is too small for a {n}-layer {size_name} "
                    f"discriminator (needs >= {min_image_size(n)}); lower --n-dis-{size_name}"
                )
        self.opts, self.rt = opts, runtime
        self.run_dir = Path(opts.out_dir) / opts.name
        self.step = 0
        self.history: list[dict[str, Any]] = []  # earlier stretches of this run
        self._stretch_start = (0, time.time())
        self._samples: dict[Path, torch.Tensor] = {}
        torch.manual_seed(opts.seed)
        dev = runtime.device
        gen = dict(ngf=opts.ch, n_blocks=opts.n_res, img_size=opts.img_size, light=opts.light,
                   tf_compat=opts.tf_compat)
        self.nets: dict[str, nn.Module] = {
            "genA2B": ResnetGenerator(**gen).to(dev),
            "genB2A": ResnetGenerator(**gen).to(dev),
            "disGA": Discriminator(ndf=opts.ch, n_layers=opts.n_dis_global).to(dev),
            "disGB": Discriminator(ndf=opts.ch, n_layers=opts.n_dis_global).to(dev),
            "disLA": Discriminator(ndf=opts.ch, n_layers=opts.n_dis_local).to(dev),
            "disLB": Discriminator(ndf=opts.ch, n_layers=opts.n_dis_local).to(dev),
        }
        # DDP wrappers average gradients over ranks; the generator step calls the
        # bare discriminators with frozen weights, so no wrapper sees a half-used graph.
        self.ddp: dict[str, nn.Module] = {
            k: DDP(m, device_ids=[dev.index] if dev.type == "cuda" else None)
            if runtime.distributed else m
            for k, m in self.nets.items()
        }
        g_params = chain(self.nets["genA2B"].parameters(), self.nets["genB2A"].parameters())
        d_params = chain(*(self.nets[k].parameters() for k in ("disGA", "disGB", "disLA", "disLB")))
        adam = dict(lr=opts.lr, betas=(0.5, 0.999), weight_decay=opts.weight_decay)
        self.G_optim = torch.optim.Adam(g_params, **adam)
        self.D_optim = torch.optim.Adam(d_params, **adam)
        factor = linear_decay(opts.iters, opts.decay)
        self.G_sched = torch.optim.lr_scheduler.LambdaLR(self.G_optim, factor)
        self.D_sched = torch.optim.lr_scheduler.LambdaLR(self.D_optim, factor)
        self.amp_dtype = resolve_precision(opts.precision, dev)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp_dtype == torch.float16)
        self.memory_format = resolve_memory_format(opts.memory_format, dev)
        for m in self.nets.values():
            m.to(memory_format=self.memory_format)
        self.ema: dict[str, dict[str, nn.Module]] = {}
        self.reset_ema()

    # -------------------------------------------------- averaged generators
    def reset_ema(self) -> None:
        """Start every moving average at the generators' current weights."""
        self.ema = {
            ema_key(decay): {k: copy.deepcopy(self.nets[k]).requires_grad_(False).eval() for k in GENERATORS}
            for decay in self.opts.ema_decay
        }

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * weights, for each decay and both generators.

        GAN generators' weights wander from step to step with the critics; their
        average draws steadier pictures (Yazici et al., ICLR 2019). Buffers
        (none in these networks but kept general) are copied, not averaged.
        """
        for decay in self.opts.ema_decay:
            for k in GENERATORS:
                avg, live = self.ema[ema_key(decay)][k], self.nets[k]
                torch._foreach_lerp_(list(avg.parameters()), list(live.parameters()), 1.0 - decay)
                for b_avg, b_live in zip(avg.buffers(), live.buffers()):
                    b_avg.copy_(b_live)

    # ----------------------------------------------------------------- steps
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.rt.device.type, dtype=self.amp_dtype)

    def _discriminate(self, nets: dict[str, nn.Module], domain: str, x: torch.Tensor):
        """Global and local discriminator outputs for one domain: 4 logit tensors."""
        g_logit, g_cam, _ = nets[f"disG{domain}"](x)
        l_logit, l_cam, _ = nets[f"disL{domain}"](x)
        return g_logit, g_cam, l_logit, l_cam

    def _set_discriminators_trainable(self, flag: bool) -> None:
        for k in ("disGA", "disGB", "disLA", "disLB"):
            self.nets[k].requires_grad_(flag)

    def train_step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, float]:
        """One generator update, then one discriminator update; returns the losses."""
        o, nets, ddp = self.opts, self.nets, self.ddp
        real_A = real_A.to(self.rt.device, memory_format=self.memory_format)
        real_B = real_B.to(self.rt.device, memory_format=self.memory_format)
        n = real_A.shape[0]

        # ---- generators: translation and identity share one batched call each
        self._set_discriminators_trainable(False)
        self.G_optim.zero_grad(set_to_none=True)
        with self.autocast():
            out_B, cam_B, _ = ddp["genA2B"](torch.cat([real_A, real_B]))
            out_A, cam_A, _ = ddp["genB2A"](torch.cat([real_B, real_A]))
            fake_A2B, fake_B2B = out_B[:n], out_B[n:]
            fake_A2B_cam_logit, fake_B2B_cam_logit = cam_B[:n], cam_B[n:]
            fake_B2A, fake_A2A = out_A[:n], out_A[n:]
            fake_B2A_cam_logit, fake_A2A_cam_logit = cam_A[:n], cam_A[n:]
            fake_A2B2A, _, _ = ddp["genB2A"](fake_A2B)
            fake_B2A2B, _, _ = ddp["genA2B"](fake_B2A)

            G_adv = sum(
                lsgan(t, 1.0)
                for t in (*self._discriminate(nets, "A", fake_B2A), *self._discriminate(nets, "B", fake_A2B))
            )
            G_cycle = F.l1_loss(fake_A2B2A.float(), real_A) + F.l1_loss(fake_B2A2B.float(), real_B)
            G_identity = F.l1_loss(fake_A2A.float(), real_A) + F.l1_loss(fake_B2B.float(), real_B)
            G_cam = (
                cam_bce(fake_B2A_cam_logit, 1.0) + cam_bce(fake_A2A_cam_logit, 0.0)
                + cam_bce(fake_A2B_cam_logit, 1.0) + cam_bce(fake_B2B_cam_logit, 0.0)
            )
            G_loss = (
                o.adv_weight * G_adv + o.cycle_weight * G_cycle
                + o.identity_weight * G_identity + o.cam_weight * G_cam
            )
        self.scaler.scale(G_loss).backward()
        self.scaler.step(self.G_optim)
        clip_rho(self.nets["genA2B"])
        clip_rho(self.nets["genB2A"])
        self.update_ema()

        # ---- discriminators: real and (detached) fake in one batch per network
        self._set_discriminators_trainable(True)
        self.D_optim.zero_grad(set_to_none=True)
        with self.autocast():
            D_loss_A = self._discriminator_loss("A", real_A, fake_B2A.detach())
            D_loss_B = self._discriminator_loss("B", real_B, fake_A2B.detach())
            D_loss = o.adv_weight * (D_loss_A + D_loss_B)
        self.scaler.scale(D_loss).backward()
        self.scaler.step(self.D_optim)
        self.scaler.update()
        self.G_sched.step()
        self.D_sched.step()
        self.step += 1
        return {
            "D_loss": D_loss.item(), "D_loss_A": D_loss_A.item(), "D_loss_B": D_loss_B.item(),
            "G_loss": G_loss.item(), "G_adv": G_adv.item(), "G_cycle": G_cycle.item(),
            "G_identity": G_identity.item(), "G_cam": G_cam.item(),
        }

    def discriminator_step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, float]:
        """One discriminator update against the current generators, which stay fixed."""
        real_A = real_A.to(self.rt.device, memory_format=self.memory_format)
        real_B = real_B.to(self.rt.device, memory_format=self.memory_format)
        with torch.no_grad(), self.autocast():
            fake_A2B, _, _ = self.ddp["genA2B"](real_A)
            fake_B2A, _, _ = self.ddp["genB2A"](real_B)
        self._set_discriminators_trainable(True)
        self.D_optim.zero_grad(set_to_none=True)
        with self.autocast():
            D_loss_A = self._discriminator_loss("A", real_A, fake_B2A)
            D_loss_B = self._discriminator_loss("B", real_B, fake_A2B)
            D_loss = self.opts.adv_weight * (D_loss_A + D_loss_B)
        self.scaler.scale(D_loss).backward()
        self.scaler.step(self.D_optim)
        self.scaler.update()
        return {"D_loss": D_loss.item(), "D_loss_A": D_loss_A.item(), "D_loss_B": D_loss_B.item()}

    def warm_up_discriminators(self, steps: int) -> None:
        """Train only the discriminators for `steps` batches before the joint steps.

        A run continued from archives brings generators trained for thousands
        of iterations but, without a warm-start file, critics from scratch;
        trained jointly at once, the generators follow untrained critics' noise
        for hundreds of iterations and get worse before they get better (the
        first 128 px stretch measured so). Warm-up batches use their own seed
        and do not count as iterations of the run.
        """
        if steps <= 0:
            return
        o = self.opts
        self._follow_threads_file()
        log.info("warming up the discriminators for %d batches (generators fixed)", steps)
        dataset = UnpairedBatches(Path(o.data), o.img_size, o.batch_size, o.seed + 1, self.rt.rank, 0, steps)
        window: list[dict[str, float]] = []
        for i, real_A, real_B in tqdm(DataLoader(dataset, batch_size=None), total=steps,
                                      disable=not self.rt.is_main, desc="discriminator warm-up"):
            window.append(self.discriminator_step(real_A, real_B))
            if (i + 1) % o.log_every == 0 or i + 1 == steps:
                mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
                log.info("warm-up %d/%d: %s", i + 1, steps, " ".join(f"{k}={v:.3f}" for k, v in mean.items()))
                window = []

    def _discriminator_loss(self, domain: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """LSGAN on the patch and CAM outputs of both discriminators of a domain."""
        n = real.shape[0]
        loss = real.new_zeros((), dtype=torch.float32)
        for t in self._discriminate(self.ddp, domain, torch.cat([real, fake.to(real.dtype)])):
            loss = loss + lsgan(t[:n], 1.0) + lsgan(t[n:], 0.0)
        return loss

    # ------------------------------------------------------------- training
    def batches(self, stop: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Deterministic batches for steps [self.step, stop)."""
        o = self.opts
        workers = o.num_workers if o.num_workers >= 0 else (4 if self.rt.device.type == "cuda" else 0)
        dataset = UnpairedBatches(
            Path(o.data), o.img_size, o.batch_size, o.seed, self.rt.rank, self.step, stop
        )
        loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                            pin_memory=self.rt.device.type == "cuda")
        yield from loader

    def fit(self, stop_after: int | None = None, deadline: float | None = None) -> None:
        """Train to `opts.iters` (or `stop_after` more steps, or until `time.monotonic()`
        passes `deadline`), saving on Ctrl-C and at the end."""
        o = self.opts
        stop = o.iters if stop_after is None else min(o.iters, self.step + stop_after)
        if self.rt.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            log.info("training %s from step %d to %d on %s\n%s", o.name, self.step, stop,
                     self.rt.device, o.describe())
        bar = tqdm(total=stop, initial=self.step, disable=not self.rt.is_main,
                   dynamic_ncols=True, desc=o.name)
        window: list[dict[str, float]] = []
        self._follow_threads_file()
        try:
            for step, real_A, real_B in self.batches(stop):
                assert step == self.step, f"data step {step} != trainer step {self.step}"
                losses = self.train_step(real_A, real_B)
                window.append(losses)
                bar.update(1)
                if self.step % o.log_every == 0 or self.step == stop:
                    self._follow_threads_file()
                    self._log_losses(window)
                    bar.set_postfix(d=f"{losses['D_loss']:.3f}", g=f"{losses['G_loss']:.3f}")
                    window = []
                if self.step % o.sample_every == 0:
                    self.write_samples()
                if self.step % o.save_every == 0:
                    self.save()
                if deadline is not None and time.monotonic() >= deadline:
                    log.info("time limit reached at step %d", self.step)
                    self._log_losses(window)
                    break
        except KeyboardInterrupt:
            log.warning("interrupted at step %d: saving a checkpoint before exiting", self.step)
            self.save()
            raise
        finally:
            bar.close()
        if self.step % o.save_every:
            self.save()
        if self.step % o.sample_every:
            self.write_samples()

    def _follow_threads_file(self) -> None:
        """Use the CPU thread count written in RUN_DIR/threads, if any.

        A long CPU run shares its machine: `echo 1 > runs/NAME/threads` while a
        test suite runs (oversubscribed OpenMP threads slow a step several
        times over), `echo 2 > ...` afterwards; read before the warm-up, at the
        first step and at every log step (a run started with the file already
        there must not spend its first steps oversubscribed).
        """
        if self.rt.device.type != "cpu":
            return
        try:
            wanted = int((self.run_dir / "threads").read_text().strip())
        except (OSError, ValueError):
            return
        if wanted > 0 and wanted != torch.get_num_threads():
            log.info("step %d: %d CPU threads (from %s)", self.step, wanted, self.run_dir / "threads")
            torch.set_num_threads(wanted)

    def _log_losses(self, window: list[dict[str, float]]) -> None:
        """Append the window's mean losses to losses.csv (rank 0 only)."""
        if not self.rt.is_main or not window:
            return
        path = self.run_dir / "losses.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", *LOSS_KEYS])
            writer.writerow([self.step, *(f"{np.mean([w[k] for w in window]):.6g}" for k in LOSS_KEYS)])

    # -------------------------------------------------------------- samples
    @torch.inference_mode()
    def sample_grid(self) -> Any:
        """Real, CAM heatmap, translation and cycle for train and test images, both directions."""
        o, dev = self.opts, self.rt.device
        blocks = []
        for src, dst in (("A", "B"), ("B", "A")):
            g, back = self.nets[f"gen{src}2{dst}"], self.nets[f"gen{dst}2{src}"]
            g.eval(), back.eval()
            for split in ("train", "test"):
                folder = Path(o.data) / f"{split}{src}"
                if not folder.is_dir():
                    continue
                real = self._sample_inputs(folder).to(dev, memory_format=self.memory_format)
                with self.autocast():
                    fake, _, heatmap = g(real)
                    cycle, _, _ = back(fake)
                rows = [real.cpu(), heatmap_overlay(heatmap, real), fake.cpu(), cycle.cpu()]
                blocks.append(direction_grid(f"{src} -> {dst} ({split})", rows))
            g.train(), back.train()
        return stack_vertically(blocks)

    def _sample_inputs(self, folder: Path) -> torch.Tensor:
        """The same few images at every sample step, read once."""
        if folder not in self._samples:
            self._samples[folder] = fixed_images(folder, self.opts.img_size, SAMPLE_IMAGES)
        return self._samples[folder]

    def write_samples(self) -> None:
        """Save the sample grid and refresh the loss curves (rank 0 only)."""
        if not self.rt.is_main:
            return
        samples = self.run_dir / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        grid = self.sample_grid()
        grid.save(samples / f"{self.step:07d}.png")
        grid.save(self.run_dir / "samples_latest.png")
        if (self.run_dir / "losses.csv").exists():
            plot_losses(self.run_dir / "losses.csv", self.run_dir / "losses.png")

    # ---------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "latest.pt"

    def state(self) -> dict[str, Any]:
        """Everything an exact resume needs."""
        return {
            "options": self.opts.to_dict(),
            "generator_arch": self.nets["genA2B"].arch(),
            "step": self.step,
            "networks": {k: self.nets[k].state_dict() for k in NETWORKS},
            "ema": {key: {k: m.state_dict() for k, m in nets.items()} for key, nets in self.ema.items()},
            "optimizers": {"G": self.G_optim.state_dict(), "D": self.D_optim.state_dict()},
            "schedulers": {"G": self.G_sched.state_dict(), "D": self.D_sched.state_dict()},
            "scaler": self.scaler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            "history": self.history_record(),
            "saved_at": time.time(),
        }

    def history_record(self) -> dict[str, Any]:
        """Iterations, hours and machines so far: earlier stretches plus this one (see `training.warm_start`)."""
        start_step, start_time = self._stretch_start
        stretches = list(self.history)
        if self.step > start_step:
            o = self.opts
            stretches.append({
                "iterations": [start_step, self.step], "img_size": o.img_size, "batch_size": o.batch_size,
                "precision": o.precision, "machine": machine_name(self.rt.device),
                "hours": round((time.time() - start_time) / 3600, 3),
            })
        return {
            "iterations": self.step,
            "hours": round(sum(s["hours"] for s in stretches), 2),
            "stretches": stretches,
        }

    def check_replicas_in_sync(self) -> None:
        """Under DDP every rank must hold the same weights, bit for bit; fail loudly if they drifted.

        Rank 0 broadcasts every network's weights and each rank compares its own
        with them exactly (sums of weights would hide a swap or a small drift).
        """
        if not self.rt.distributed:
            return
        drifted = []
        with torch.no_grad():
            for name, net in self.nets.items():
                for pname, p in net.state_dict().items():
                    theirs = p.detach().clone()
                    torch.distributed.broadcast(theirs, src=0)
                    if not torch.equal(theirs, p):
                        drifted.append(f"{name}.{pname}")
        every: list[list[str]] = [[] for _ in range(self.rt.world_size)]
        torch.distributed.all_gather_object(every, drifted)
        bad = {rank: names for rank, names in enumerate(every) if names}
        if bad:
            raise RuntimeError(f"DDP replicas diverged from rank 0 at step {self.step}: {bad}")

    def release_process_group(self) -> None:
        """Drop the DDP wrappers, which hold the process group, before it is destroyed."""
        self.ddp = dict(self.nets)

    def save(self) -> None:
        """Write checkpoints/latest.pt (rank 0 only) after checking DDP replicas agree."""
        self.check_replicas_in_sync()
        if self.rt.is_main:
            save_checkpoint(self.checkpoint_path, self.state())
            log.info("saved %s at step %d", self.checkpoint_path, self.step)

    def load(self, source: Path | dict[str, Any]) -> None:
        """Restore from a checkpoint file or a state dict: the networks it has, and
        optimisers and RNG states where it has them (a warm start has neither)."""
        state = load_checkpoint(source) if isinstance(source, Path) else source
        for k in NETWORKS:
            if k in state["networks"]:
                self.nets[k].load_state_dict(state["networks"][k])
        self.reset_ema()  # a run from archives or a warm start averages from the weights it starts with
        for key, nets in state.get("ema", {}).items():
            if key in self.ema:
                for k, sd in nets.items():
                    self.ema[key][k].load_state_dict(sd)
        self.step = int(state.get("step", 0))
        self.history = list(state.get("history", {}).get("stretches", []))
        self._stretch_start = (self.step, time.time())
        if "optimizers" in state:
            self.G_optim.load_state_dict(state["optimizers"]["G"])
            self.D_optim.load_state_dict(state["optimizers"]["D"])
            self.G_sched.load_state_dict(state["schedulers"]["G"])
            self.D_sched.load_state_dict(state["schedulers"]["D"])
            self.scaler.load_state_dict(state["scaler"])
            rng = state["rng"]
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
        # The schedule follows this run's length even when --iters was extended on resume.
        factor = linear_decay(self.opts.iters, self.opts.decay)
        for sched in (self.G_sched, self.D_sched):
            sched.lr_lambdas = [factor]
            for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
                group["lr"] = base * factor(self.step)
