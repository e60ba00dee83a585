"""The GAN step every GAN augkit ships trains with: vanilla DCGAN, AC-GAN (thesis and full) and cgan.

What differs between them is the networks passed in and a few switches: the objective's terms
(adversarial loss, auxiliary class loss, gradient penalty: :mod:`augkit.train.losses`), whether D has
an auxiliary classifier (AC-GAN) or takes labels (projection), DiffAugment, EMA, and class-balanced
batches. :class:`GANTask` is one step (device and precision, batches, the D and G phases);
:mod:`augkit.train.loop` runs it: run folder, resume, budget, Ctrl-C, cadence.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from augkit import distributed
from augkit.data.reader import ImageDataset
from augkit.errors import UserError
from augkit.images import save_grid, to_input, to_uint8
from augkit.params import field_defaults
from augkit.train.diffaugment import diff_augment, diff_augment_some
from augkit.train.ema import EMA
from augkit.train.loop import Cadence, Streams, Task, run_training
from augkit.train.losses import DPhase, GPhase, Objective, objectives


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
    aux_on_fakes: bool = field(default=True, metadata={
        "help": "D's auxiliary classifier also learns the fakes' classes (AC-GAN); false: real images only"})
    class_loss: Literal["ce", "d2d"] = field(default="ce", metadata={
        "help": "D's class term: ce, cross-entropy on class logits (AC-GAN); d2d, ReACGAN's data-to-data "
                "cross-entropy on a d2d head's embeddings"})
    diffaugment: str = field(default="", metadata={"help": "e.g. 'color,translation,cutout'; '' = off"})
    ada_target: float = field(default=0.0, metadata={
        "min": 0, "max": 1, "help": "adaptive augmentation (ADA, Karras et al. 2020): apply DiffAugment to each image "
                                    "with a probability p tuned so that E[sign D(real)] stays at this target (0.6 in "
                                    "the paper); 0 = off (DiffAugment on every image)"})
    ada_interval: int = field(default=4, metadata={"min": 1, "help": "steps between adjustments of p"})
    ada_images: int = field(default=20000, metadata={
        "min": 1, "help": "images over which p can move from 0 to 1 (the paper: 500k, for far longer runs)"})
    recon_weight: float = field(default=0.0, metadata={
        "min": 0, "help": "self-supervised D (FastGAN): weight of its decoder's L1 reconstruction of the real images; "
                          "needs a D with a decoder; 0 = off"})
    ema_decay: float = field(default=0.0, metadata={"min": 0, "max": 1, "help": "generator EMA; 0 = off"})
    balanced_classes: bool = field(default=False, metadata={"help": "draw real batches class-balanced"})
    checkpoint_every: int = field(default=500, metadata={"min": 1})
    sample_every: int = field(default=500, metadata={"min": 1})
    log_every: int = field(default=25, metadata={"min": 1})
    max_minutes: float = field(default=0.0, metadata={
        "min": 0, "help": "stop after this much wall time (this session), saving samples and a checkpoint; 0 = no limit"})


class GANTask(Task):
    """One GAN step: ``n_critic`` discriminator updates on real and fake batches, then one generator
    update through the updated D. What differs between GANs is the networks and ``terms`` (the
    objective's parts, :mod:`augkit.train.losses`); the loop (:mod:`augkit.train.loop`) does the rest."""

    def __init__(self, G: nn.Module, D: nn.Module, images, labels, cfg: GANConfig, streams: Streams, *, kind: str,
                 device: torch.device, seed: int, conditional: bool, num_classes: int,
                 terms: list[Objective] | None = None):
        self.kind, self.cfg, self.streams, self.dev = kind, cfg, streams, device
        self.G, self.D, self.labels, self.conditional, self.num_classes = G, D, labels, conditional, num_classes
        self.terms = terms if terms is not None else objectives(cfg.loss, cfg.aux_weight, cfg.gp_weight,
                                                                cfg.aux_on_fakes, cfg.recon_weight, cfg.class_loss)
        if (cfg.recon_weight > 0) != (getattr(D, "decoder", None) is not None):
            # (a decoder without its loss would leave parameters without gradients, which DDP refuses)
            raise ValueError("recon_weight > 0 and a discriminator with a decoder go together")
        if (cfg.class_loss == "d2d") != (getattr(D, "d2d", None) is not None):
            # each reads the other's output as its own: class logits as cosines, or the reverse
            raise ValueError("class_loss 'd2d' and a discriminator with a d2d head go together")
        self.streamed = isinstance(images, ImageDataset)
        self.n = len(images)
        self.batch = min(cfg.batch_size, self.n)
        self.seed = seed
        G.to(device).to(memory_format=torch.channels_last)
        D.to(device).to(memory_format=torch.channels_last)
        # fused Adam: one kernel for all parameters (CPU and CUDA), fewer passes over memory per step
        self.opt_g = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=cfg.lr_g, betas=cfg.betas_g,
                                      fused=True)
        self.d_trainable = [p for p in D.parameters() if p.requires_grad]
        self.opt_d = torch.optim.Adam(self.d_trainable, lr=cfg.lr_d, betas=cfg.betas_d, fused=True)
        self.ema = EMA(G, decay=cfg.ema_decay, warmup=True) if cfg.ema_decay > 0 else None
        self.fixed_z = torch.randn(64, G.latent_dim, generator=torch.Generator().manual_seed(seed + 3))
        # DDP when several ranks run; the plain modules stay what is checkpointed, sampled and averaged
        self.G_dp, self.D_dp = distributed.wrap(G, device), distributed.wrap(D, device)
        self.by_class = None
        if cfg.balanced_classes and labels is not None:
            members = [np.flatnonzero(np.asarray(labels) == c) for c in range(num_classes)]
            self.by_class = [m for m in members if len(m)]
        if (not self.streamed and device.type == "cuda"
                and images.numel() < 0.25 * torch.cuda.get_device_properties(device).total_memory):
            images = images.to(device)  # uint8 on the GPU: no host transfer per step
        self.images = images
        self.amp = device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.batches = None
        self.ada_p, self.ada_sum, self.ada_count, self.ada_steps = 0.0, 0.0, 0, 0  # ADA's state

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"G": self.G.state_dict(), "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
                 "opt_d": self.opt_d.state_dict(), "config": json.dumps(dataclasses.asdict(self.cfg))}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.cfg.ada_target:
            state["ada"] = {"p": self.ada_p, "sum": self.ada_sum, "count": self.ada_count, "steps": self.ada_steps}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.cfg.ada_target:
            ada = state["ada"]
            self.ada_p, self.ada_sum, self.ada_count, self.ada_steps = (float(ada["p"]), float(ada["sum"]),
                                                                         int(ada["count"]), int(ada["steps"]))

    # -- batches -----------------------------------------------------------------------------------
    def _pick(self, rng: np.random.Generator) -> np.ndarray:
        if self.by_class is not None:
            classes = rng.integers(0, len(self.by_class), self.batch)
            return np.array([self.by_class[c][rng.integers(0, len(self.by_class[c]))] for c in classes])
        return rng.choice(self.n, size=self.batch, replace=False)

    def begin(self, start: int) -> None:
        if self.streamed:  # each batch's rows a function of (seed, rank, draw): a resumed run reads the same
            from augkit.loading import stream_batches

            label_column = np.zeros(self.n, np.int64) if self.labels is None else np.asarray(self.labels, np.int64)
            stream_seed = distributed.rank_seed(self.seed, 4)
            draws = (self._pick(np.random.default_rng([stream_seed, k]))
                     for k in range(start * self.cfg.n_critic, self.cfg.steps * self.cfg.n_critic))
            self.batches = iter(stream_batches(self.images, label_column, draws, pin=self.dev.type == "cuda"))
        self.G.train()
        self.D.train()

    def _real(self):
        if self.streamed:
            x, y = next(self.batches)
            return to_input(x, self.dev), (y.to(self.dev, non_blocking=True) if self.labels is not None else None)
        idx = self._pick(self.streams.np)
        x = to_input(self.images[torch.from_numpy(idx).to(self.images.device)], self.dev)
        y = self.labels[torch.from_numpy(idx)].to(self.dev) if self.labels is not None else None
        return x, y

    def _augment(self, x):
        if not self.cfg.diffaugment:
            return x
        gen = self.streams.torch["aug"]
        if not self.cfg.ada_target:
            return diff_augment(x, self.cfg.diffaugment, generator=gen)
        # ADA: the same p for real and fake, as D must not learn to tell them apart by their augmentation
        return diff_augment_some(x, self.cfg.diffaugment, self.ada_p, generator=gen)

    def _adapt(self, logit_real: torch.Tensor) -> None:
        """ADA's controller: every ``ada_interval`` steps, move p towards the value that keeps D's
        overfitting heuristic r = E[sign D(real)] at ``ada_target``."""
        cfg = self.cfg
        self.ada_sum += float(torch.sign(logit_real.detach()).sum())
        self.ada_count += len(logit_real)
        self.ada_steps += 1
        if self.ada_steps % cfg.ada_interval:
            return
        r = distributed.mean_over_ranks({"r": self.ada_sum / max(self.ada_count, 1)})["r"]
        step = self.ada_count * distributed.world_size() / cfg.ada_images
        self.ada_p = float(min(1.0, max(0.0, self.ada_p + (step if r > cfg.ada_target else -step))))
        self.ada_sum, self.ada_count = 0.0, 0

    def _discriminate(self, x, y, net):
        logit, aux = net(x, y if self.conditional else None)
        return logit.float(), (aux.float() if aux is not None else None)

    def _discriminate_both(self, x, y, reconstruct: int):
        """D's logits on real and fake together and, for a self-supervised D, its decoder's images of the
        first ``reconstruct`` (the real ones), from the same pass (through DDP: one forward per critic step)."""
        if not self.cfg.recon_weight:
            return (*self._discriminate(x, y, self.D_dp), None)
        logit, aux, recon = self.D_dp(x, y if self.conditional else None, reconstruct=reconstruct)
        return logit.float(), (aux.float() if aux is not None else None), recon

    # -- one step ----------------------------------------------------------------------------------
    def step(self) -> tuple[dict[str, float], int]:
        cfg, dev, batch, G, D = self.cfg, self.dev, self.batch, self.G, self.D
        logs: dict = {}
        # -- discriminator: n_critic updates on real and (detached) fake batches -------------------
        for critic_step in range(cfg.n_critic):
            real, y_real = self._real()
            z = torch.randn(batch, G.latent_dim, generator=self.streams.torch["z"]).to(dev)
            last = critic_step == cfg.n_critic - 1
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
                # the last critic step's fakes keep their graph: the G step reuses them instead of
                # running G again (one G forward less per step, as in the common DCGAN loop)
                with torch.set_grad_enabled(last):
                    net = self.G_dp if last else G
                    fake = net(z, y_real if self.conditional else None).float()  # the contract: G(z, y=None)
                real_in, fake_in = self._augment(real), self._augment(fake.detach())
                # one D pass over real and fake together: larger matrix products run faster on a CPU,
                # and D has no batch statistics (no BatchNorm) that mixing the two could change (a
                # self-supervised D's decoder has, but it sees the real rows only)
                logits, aux_both, recon = self._discriminate_both(
                    torch.cat([real_in, fake_in]), None if y_real is None else torch.cat([y_real, y_real]), batch)
                aux_real, aux_fake = (None, None) if aux_both is None else (aux_both[:batch], aux_both[batch:])
                # through the plain D: DDP cannot take a second forward (and double backward) per step
                if cfg.ada_target and last:
                    self._adapt(logits[:batch])
                phase = DPhase(logits[:batch], logits[batch:], aux_real, aux_fake, y_real, real_in, fake_in,
                               lambda x, y=y_real: self._discriminate(x, y, D)[0], self.streams.torch["aug"],
                               recon_real=recon)
                loss, logs = self._sum(phase, "d_phase", autocast=True)
            extra, more = self._sum(phase, "d_phase", autocast=False)
            if extra is not None:
                loss = loss + extra
                logs.update(more)
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_d.step()
        loss_d = loss.detach()
        # -- generator: through the updated D, on the fakes of the last critic step ---------------
        # The plain D, its parameters frozen for this pass: the G step needs gradients with respect to
        # D's input only, so autograd skips D's weight gradients (the common loop computes and discards
        # them), and DDP has nothing of D's to average.
        for p in self.d_trainable:
            p.requires_grad_(False)
        try:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
                logit, aux = self._discriminate(self._augment(fake), y_real, D)
                loss_g, _ = self._sum(GPhase(logit, aux, y_real), "g_phase", autocast=True)
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        finally:
            for p in self.d_trainable:
                p.requires_grad_(True)
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update(G)
        aux_loss = logs.get("loss_aux")
        values = {"loss_d": loss_d, "loss_g": loss_g.detach(), "loss_aux": 0.0 if aux_loss is None else aux_loss.detach()}
        if cfg.ada_target:
            values["ada_p"] = self.ada_p
        if cfg.recon_weight:
            values["loss_recon"] = logs["loss_recon"].detach() if "loss_recon" in logs else 0.0
        return values, batch * cfg.n_critic

    def _sum(self, phase, which: str, autocast: bool):
        """The sum of the terms' ``which`` phase (those computed with or without autocast), in order."""
        total, logs = None, {}
        for term in self.terms:
            if term.autocast != autocast:
                continue
            part = getattr(term, which)(phase)
            if part is None:
                continue
            total = part[0] if total is None else total + part[0]
            logs.update(part[1])
        return total, logs

    # -- what the run shows ------------------------------------------------------------------------
    def generating_net(self) -> nn.Module:
        """The network that makes the run's images: the EMA generator when there is one."""
        return self.ema.module if self.ema is not None else self.G

    def sample(self, step: int, path: Path) -> None:
        net = self.generating_net()
        was_training = net.training
        net.eval()
        with torch.no_grad():
            if self.conditional:
                rows = min(self.num_classes, 8)
                out = net(self.fixed_z[: rows * 8].to(self.dev), torch.arange(rows).repeat_interleave(8).to(self.dev))
            else:
                out = net(self.fixed_z.to(self.dev))
        net.train(was_training)
        save_grid(to_uint8(out), path, columns=8)

    def note(self, means: dict[str, float], rate: float) -> str:
        return f"D {means['loss_d']:.3f}  G {means['loss_g']:.3f}  {rate:.0f} img/s"


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
    terms: list[Objective] | None = None,
    identity: dict | None = None,
    judge=None,
) -> dict:
    """Train G and D on uint8 NHWC ``images``; the trained weights stay in G, D (and the returned EMA).

    ``conditional``: G and D take labels; D's auxiliary logits (when it returns some) are trained with
    cross-entropy as in AC-GAN. Only parameters with ``requires_grad`` are optimised, so frozen
    layers stay exactly as they were. ``terms``: the objective (default: ``cfg.loss``, the auxiliary
    class loss and, for wgan-gp, the gradient penalty). ``identity``: what a resumed run must share with
    the one it continues (the networks' settings; the loop adds the optimisation settings but the budget).
    ``judge`` (an :class:`augkit.train.snapshots.SnapshotJudge`): score the generator every
    ``judge.spec.every`` steps and keep the best snapshot (``checkpoints/best.pt``, ``metrics.jsonl``).

    ``images`` is a uint8 tensor in memory, or a lazy :class:`ImageDataset` (larger than memory) whose
    batches DataLoader workers read ahead; each batch's rows are then a function of (seed, rank, draw),
    so a resumed run reads what an uninterrupted one would.

    Under torchrun (:mod:`augkit.distributed`) G and D train in DistributedDataParallel: every rank
    draws its own batch of ``cfg.batch_size`` (the global batch is ``batch_size x world size``), from its
    own random streams; rank 0 alone writes checkpoints, samples and loss curves; checkpoints hold the
    unwrapped networks, so a run started under DDP resumes in one process and vice versa.
    """
    if conditional and labels is None:
        raise ValueError("conditional training needs labels")
    n = len(images)
    if n < 2:
        raise UserError(f"GAN training needs at least 2 images, got {n}")
    dev = torch.device(device)
    streams = Streams(seed, {"z": 1, "aug": 2})  # each rank its own; rank 0's are those of a single process
    task = GANTask(G, D, images, labels, cfg, streams, kind=kind, device=dev, seed=seed, conditional=conditional,
                   num_classes=num_classes, terms=terms)
    config = {"kind": kind, "seed": seed, "device": device, "images": n, "world_size": distributed.world_size(),
              "config": dataclasses.asdict(cfg)}
    cadence = Cadence(cfg.steps, cfg.log_every, cfg.sample_every, cfg.checkpoint_every, cfg.max_minutes)
    budget = ("steps", "max_minutes", "checkpoint_every", "sample_every", "log_every")
    identity = {**(identity or {}), "seed": seed, "conditional": conditional,
                "optimisation": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in budget}}
    snapshots = None
    if judge is not None and judge.spec.every > 0:
        from augkit.train.snapshots import snapshots_for

        identity["snapshots"] = dataclasses.asdict(judge.spec)
        snapshots = snapshots_for(judge, task.generating_net, dev)
    result = run_training(task, streams, cadence, run_dir, config=config, resume=resume, callback=callback,
                          identity=identity, identity_defaults=_option_defaults(), snapshots=snapshots)
    return {**result, "ema": task.ema}


def _option_defaults() -> dict:
    """GANConfig's defaults by identity key: a run started before an option existed resumes when the
    option is at its default (new options default to the behaviour that came before them)."""
    return {f"optimisation.{name}": value for name, value in field_defaults(GANConfig).items()}
