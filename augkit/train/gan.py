"""One training loop for every GAN augkit ships: vanilla DCGAN, AC-GAN (thesis and full) and cgan.

What differs between them is only the networks passed in and a few switches: the adversarial loss,
whether D has an auxiliary classifier (AC-GAN) or takes labels (projection), DiffAugment, EMA, and
class-balanced batches. The loop owns the rest: device and precision, reproducible randomness,
checkpoints that resume to the same weights, sample grids, loss curves and a progress bar.

A run folder holds ``config.json``, ``checkpoints/latest.pt``, ``samples/step_XXXXXXX.png``,
``losses.csv`` and ``losses.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augkit import distributed
from augkit.data.reader import ImageDataset
from augkit.errors import UserError
from augkit.images import save_grid, to_input, to_uint8
from augkit.progress import track
from augkit.train.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from augkit.train.diffaugment import diff_augment
from augkit.train.ema import EMA
from augkit.train.losses import d_loss, g_loss, gradient_penalty


@dataclass(frozen=True)
class GANConfig:
    """Optimisation settings shared by every GAN."""

    steps: int = field(default=2000, metadata={"min": 1, "help": "generator updates"})
    batch_size: int = field(default=64, metadata={"min": 2})
    loss: Literal["bce", "hinge", "wgan-gp"] = field(default="bce", metadata={"help": "adversarial loss"})
    lr_g: float = field(default=2e-4, metadata={"min": 0})
    lr_d: float = field(default=2e-4, metadata={"min": 0})
    betas_g: tuple[float, float] = (0.5, 0.999)
    betas_d: tuple[float, float] = (0.5, 0.999)
    n_critic: int = field(default=1, metadata={"min": 1, "help": "D updates per G update"})
    gp_weight: float = field(default=10.0, metadata={"min": 0, "help": "WGAN-GP penalty weight"})
    aux_weight: float = field(default=1.0, metadata={"min": 0, "help": "auxiliary classifier loss weight"})
    diffaugment: str = field(default="", metadata={"help": "e.g. 'color,translation,cutout'; '' = off"})
    ema_decay: float = field(default=0.0, metadata={"min": 0, "max": 1, "help": "generator EMA; 0 = off"})
    balanced_classes: bool = field(default=False, metadata={"help": "draw real batches class-balanced"})
    checkpoint_every: int = field(default=500, metadata={"min": 1})
    sample_every: int = field(default=500, metadata={"min": 1})
    log_every: int = field(default=25, metadata={"min": 1})
    max_minutes: float = field(default=0.0, metadata={
        "min": 0, "help": "stop after this much wall time (this session), saving samples and a checkpoint; 0 = no limit"})


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key in [k for k in history[0] if k.startswith("loss_")]:
        ax.plot(steps, [h[key] for h in history], label=key)
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def checkpoint_path(run_dir: Path, resume: bool) -> Path:
    """The run's checkpoint file, after checking that the folder suits a new run or a resumed one."""
    path = run_dir / "checkpoints" / "latest.pt"
    if path.exists() and not resume:
        raise UserError(f"{run_dir}: holds a run already; resume it (--resume) or choose another folder")
    if resume and not path.exists():
        raise UserError(f"{run_dir}: no checkpoint to resume from ({path} is missing)")
    return path


def write_history(history: list[dict], path: Path) -> None:
    """The logged rows (step, losses, images/s) as CSV."""
    with open(path, "w", newline="") as f:
        if history:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)


class StopFlag:
    """Ctrl-C asks the loop to stop after the current step, so the checkpoint it saves is consistent."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: Ctrl-C then falls back to the last periodic checkpoint
            self._previous = None
        return self

    def _handler(self, signum, frame):  # noqa: ARG002
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train_gan(
    G: nn.Module,
    D: nn.Module,
    images: torch.Tensor | ImageDataset,
    labels: torch.Tensor | None,
    cfg: GANConfig,
    run_dir: str | Path,
    *,
    kind: str,
    seed: int = 0,
    device: str = "cpu",
    conditional: bool = False,
    resume: bool = False,
    num_classes: int = 0,
    callback: Callable[[int], None] | None = None,
) -> dict:
    """Train G and D on uint8 NHWC ``images``; the trained weights stay in G, D (and the returned EMA).

    ``conditional``: G and D take labels; D's auxiliary logits (when it returns some) are trained with
    cross-entropy as in AC-GAN. Only parameters with ``requires_grad`` are optimised, so frozen
    layers stay exactly as they were.

    ``images`` is a uint8 tensor in memory, or a lazy :class:`ImageDataset` (larger than memory) whose
    batches DataLoader workers read ahead; each batch's rows are then a function of (seed, rank, draw),
    so a resumed run reads what an uninterrupted one would.

    Under torchrun (:mod:`augkit.distributed`) G and D train in DistributedDataParallel: every rank
    draws its own batch of ``cfg.batch_size`` (the global batch is ``batch_size x world size``), from its
    own random streams; rank 0 alone writes checkpoints, samples and loss curves; checkpoints hold the
    unwrapped networks, so a run started under DDP resumes in one process and vice versa.
    """
    run_dir = Path(run_dir)
    dev = torch.device(device)
    ckpt_path = checkpoint_path(run_dir, resume)
    if conditional and labels is None:
        raise ValueError("conditional training needs labels")
    streamed = isinstance(images, ImageDataset)
    n = len(images)
    if n < 2:
        raise UserError(f"GAN training needs at least 2 images, got {n}")
    batch = min(cfg.batch_size, n)

    G.to(dev).to(memory_format=torch.channels_last)
    D.to(dev).to(memory_format=torch.channels_last)
    # fused Adam: one kernel for all parameters (CPU and CUDA), fewer passes over memory per step
    opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=cfg.lr_g, betas=cfg.betas_g,
                             fused=True)
    d_trainable = [p for p in D.parameters() if p.requires_grad]
    opt_d = torch.optim.Adam(d_trainable, lr=cfg.lr_d, betas=cfg.betas_d, fused=True)
    ema = EMA(G, decay=cfg.ema_decay, warmup=True) if cfg.ema_decay > 0 else None

    # each rank draws from its own streams; rank 0's are those of a single process
    rank, world, main = distributed.rank(), distributed.world_size(), distributed.is_main()
    torch.manual_seed(distributed.rank_seed(seed))  # dropout and anything else drawing from the global generator
    np_rng = np.random.default_rng(distributed.rank_seed(seed))
    gen_z = torch.Generator().manual_seed(distributed.rank_seed(seed, 1))
    gen_aug = torch.Generator().manual_seed(distributed.rank_seed(seed, 2))
    fixed_z = torch.randn(64, G.latent_dim, generator=torch.Generator().manual_seed(seed + 3))
    generators = {"z": gen_z, "aug": gen_aug}
    history: list[dict] = []
    start = 0
    if resume:
        state = load_checkpoint(ckpt_path, kind=kind)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start = int(state["step"])
        per_rank = state.get("rng_ranks")
        if per_rank is not None and len(per_rank) == world:
            restore_rng_state(per_rank[rank], np_rng=np_rng, generators=generators)
        elif rank == 0:
            restore_rng_state(state["rng"], np_rng=np_rng, generators=generators)
        else:  # a world size other than the checkpoint's: this rank's streams start afresh, past `start`
            torch.manual_seed(distributed.rank_seed(seed, 10 + start))
            np_rng = np.random.default_rng([distributed.rank_seed(seed), start])
            gen_z.manual_seed(distributed.rank_seed(seed, 11 + start))
            gen_aug.manual_seed(distributed.rank_seed(seed, 12 + start))
        history = json.loads(state["history"])
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"kind": kind, "seed": seed, "device": device, "images": n, "world_size": world,
             "config": dataclasses.asdict(cfg)}, indent=2))
    # DDP when several ranks run; the plain modules stay what is checkpointed, sampled and averaged
    G_dp, D_dp = distributed.wrap(G, dev), distributed.wrap(D, dev)

    by_class = None
    if cfg.balanced_classes and labels is not None:
        members = [np.flatnonzero(np.asarray(labels) == c) for c in range(num_classes)]
        by_class = [m for m in members if len(m)]
    if (not streamed and dev.type == "cuda"
            and images.numel() < 0.25 * torch.cuda.get_device_properties(dev).total_memory):
        images = images.to(dev)  # uint8 on the GPU: no host transfer per step
    amp = dev.type == "cuda" and torch.cuda.is_bf16_supported()

    def pick(rng: np.random.Generator) -> np.ndarray:
        if by_class is not None:
            classes = rng.integers(0, len(by_class), batch)
            return np.array([by_class[c][rng.integers(0, len(by_class[c]))] for c in classes])
        return rng.choice(n, size=batch, replace=False)

    if streamed:
        label_column = np.zeros(n, np.int64) if labels is None else np.asarray(labels, np.int64)
        stream_seed = distributed.rank_seed(seed, 4)
        draws = (pick(np.random.default_rng([stream_seed, k]))
                 for k in range(start * cfg.n_critic, cfg.steps * cfg.n_critic))
        from augkit.loading import stream_batches

        batches = iter(stream_batches(images, label_column, draws, pin=dev.type == "cuda"))

    def draw_real():
        if streamed:
            x, y = next(batches)
            return to_input(x, dev), (y.to(dev, non_blocking=True) if labels is not None else None)
        idx = pick(np_rng)
        x = to_input(images[torch.from_numpy(idx).to(images.device)], dev)
        y = labels[torch.from_numpy(idx)].to(dev) if labels is not None else None
        return x, y

    def augment(x):
        return diff_augment(x, cfg.diffaugment, generator=gen_aug) if cfg.diffaugment else x

    def generate(z, y, net=G_dp):
        return net(z, y if conditional else None)  # the generator contract: G(z, y=None)

    def discriminate(x, y, net=D_dp):
        logit, aux = net(x, y if conditional else None)
        return logit.float(), (aux.float() if aux is not None else None)

    def sample_grid(step: int) -> None:
        net = ema.module if ema is not None else G
        was_training = net.training
        net.eval()
        with torch.no_grad():
            if conditional:
                rows = min(num_classes, 8)
                out = net(fixed_z[: rows * 8].to(dev), torch.arange(rows).repeat_interleave(8).to(dev))
            else:
                out = net(fixed_z.to(dev))
        net.train(was_training)
        save_grid(to_uint8(out), run_dir / "samples" / f"step_{step:07d}.png", columns=8)

    def checkpoint(step: int) -> None:
        rngs = distributed.all_gather_object(rng_state(np_rng=np_rng, generators=generators))
        if not main:
            return
        state = {"step": step, "G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(),
                 "opt_d": opt_d.state_dict(), "rng": rngs[0],
                 "history": json.dumps(history), "config": json.dumps(dataclasses.asdict(cfg))}
        if world > 1:
            state["rng_ranks"] = rngs
        if ema is not None:
            state["ema"] = ema.state_dict()
        save_checkpoint(ckpt_path, state, kind=kind)
        write_history(history, run_dir / "losses.csv")

    G.train()
    D.train()
    sums = {"loss_d": 0.0, "loss_g": 0.0, "loss_aux": 0.0}
    count, t0, seen = 0, time.perf_counter(), 0
    deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes > 0 else None
    stopped_early = False
    with StopFlag() as stop, track(f"training {kind}", cfg.steps) as bar:
        bar(start)
        step = start
        while step < cfg.steps:
            # -- discriminator: n_critic updates on real and (detached) fake batches ---------------
            for critic_step in range(cfg.n_critic):
                real, y_real = draw_real()
                z = torch.randn(batch, G.latent_dim, generator=gen_z).to(dev)
                last = critic_step == cfg.n_critic - 1
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    # the last critic step's fakes keep their graph: the G step reuses them instead of
                    # running G again (one G forward less per step, as in the common DCGAN loop)
                    with torch.set_grad_enabled(last):
                        fake = generate(z, y_real, G_dp if last else G).float()
                    real_in, fake_in = augment(real), augment(fake.detach())
                    # one D pass over real and fake together: larger matrix products run faster on a CPU,
                    # and D has no batch statistics (no BatchNorm) that mixing the two could change
                    logits, aux_both = discriminate(torch.cat([real_in, fake_in]),
                                                    None if y_real is None else torch.cat([y_real, y_real]))
                    logit_real, logit_fake = logits[:batch], logits[batch:]
                    aux_real, aux_fake = (None, None) if aux_both is None else (aux_both[:batch], aux_both[batch:])
                    loss = d_loss(cfg.loss, logit_real, logit_fake)
                    aux_loss = torch.zeros((), device=dev)
                    if aux_real is not None:  # AC-GAN: D classifies real and fake images
                        aux_loss = F.cross_entropy(aux_real, y_real) + F.cross_entropy(aux_fake, y_real)
                        loss = loss + cfg.aux_weight * aux_loss
                if cfg.loss == "wgan-gp":
                    y_gp = y_real
                    # through the plain D: DDP cannot take a second forward (and double backward) per step
                    loss = loss + cfg.gp_weight * gradient_penalty(
                        lambda x: discriminate(x, y_gp, D)[0], real_in, fake_in, generator=gen_aug)
                opt_d.zero_grad(set_to_none=True)
                loss.backward()
                opt_d.step()
                seen += batch
            loss_d = loss.detach()
            # -- generator: through the updated D, on the fakes of the last critic step ---------
            # The plain D, its parameters frozen for this pass: the G step needs gradients with respect
            # to D's input only, so autograd skips D's weight gradients (the common loop computes and
            # discards them), and DDP has nothing of D's to average.
            for p in d_trainable:
                p.requires_grad_(False)
            try:
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    logit, aux = discriminate(augment(fake), y_real, D)
                    loss_g = g_loss(cfg.loss, logit)
                    if aux is not None:
                        loss_g = loss_g + cfg.aux_weight * F.cross_entropy(aux, y_real)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
            finally:
                for p in d_trainable:
                    p.requires_grad_(True)
            opt_g.step()
            if ema is not None:
                ema.update(G)
            step += 1
            bar(1)
            out_of_time = deadline is not None and step < cfg.steps and time.monotonic() >= deadline
            if world > 1:  # every rank stops at the same step
                out_of_time, = distributed.any_true(out_of_time)
            if out_of_time:
                stopped_early = True  # the time budget is spent: finish this step like the last one

            sums["loss_d"] += float(loss_d)
            sums["loss_g"] += float(loss_g.detach())
            sums["loss_aux"] += float(aux_loss.detach())
            count += 1
            final = step == cfg.steps or stopped_early
            if step % cfg.log_every == 0 or final:
                rate = seen * world / max(time.perf_counter() - t0, 1e-9)
                means = distributed.mean_over_ranks({k: v / count for k, v in sums.items()})
                history.append({"step": step, **means, "images_per_s": rate})
                bar.note(f"D {means['loss_d']:.3f}  G {means['loss_g']:.3f}  {rate:.0f} img/s")
                sums = dict.fromkeys(sums, 0.0)
                count, t0, seen = 0, time.perf_counter(), 0
            if (step % cfg.sample_every == 0 or final) and main:
                sample_grid(step)
            if step % cfg.checkpoint_every == 0 or final:
                checkpoint(step)
            if callback is not None:
                callback(step)
            stop_requested = stop.requested
            if world > 1:
                stop_requested, = distributed.any_true(stop_requested)
            if stop_requested:
                if step % cfg.checkpoint_every and not final:
                    checkpoint(step)
                raise KeyboardInterrupt(f"stopped at step {step}; continue with --resume")
            if stopped_early:
                break
    if main:
        plot_losses(history, run_dir / "losses.png")
    return {"steps": step, "history": history, "ema": ema, "stopped_early": stopped_early}
