"""Training an image-to-latent encoder against a frozen generator (thesis section 4.6).

E learns z = E(x) such that G(z) (or G(z, label) for a class-conditional G) reconstructs x, with an L1
loss in pixel space while G's weights stay fixed. Perturbing or interpolating E(x) then makes new
images that stay close to real ones. The run folder mirrors a GAN run: ``config.json``,
``checkpoints/latest.pt`` (resumable to the same weights), ``samples/step_XXXXXXX.png`` (real and
reconstruction side by side), ``losses.csv`` and ``losses.png``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augkit.errors import UserError
from augkit.images import save_grid, to_input, to_uint8
from augkit.train.loop import Cadence, Streams, Task, run_training


@dataclass(frozen=True)
class EncoderConfig:
    steps: int = field(default=1000, metadata={"min": 1, "help": "encoder updates"})
    batch_size: int = field(default=64, metadata={"min": 2})
    lr: float = field(default=1e-3, metadata={"min": 0})
    checkpoint_every: int = field(default=500, metadata={"min": 1})
    sample_every: int = field(default=500, metadata={"min": 1})
    log_every: int = field(default=25, metadata={"min": 1})
    max_minutes: float = field(default=0.0, metadata={"min": 0, "help": "wall-time budget; 0 = none"})


def reconstruct(E: nn.Module, G: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
                device: torch.device, batch_size: int = 256) -> np.ndarray:
    """G(E(x)) for uint8 NHWC ``images``, as uint8 NHWC (eval mode, no gradients)."""
    E.eval()
    G.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_input(images[start:start + batch_size], device)
            z = E(x)
            y = None if labels is None else labels[start:start + batch_size].to(device)
            out.append(to_uint8(G(z, y)))
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.uint8)


def reconstruction_l1(E: nn.Module, G: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
                      device: torch.device) -> float:
    """Mean absolute pixel error |x - G(E(x))| with pixels scaled to [0, 1]."""
    rec = reconstruct(E, G, images, labels, device)
    return float(np.abs(rec.astype(np.float64) - images.numpy().astype(np.float64)).mean() / 255.0)


class EncoderTask(Task):
    """One encoder step: L1 between a batch of real images and G(E(x)), G frozen."""

    def __init__(self, E: nn.Module, G: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
                 cfg: EncoderConfig, streams: Streams, *, kind: str, device: torch.device, seed: int):
        self.kind, self.E, self.G, self.images, self.labels, self.cfg = kind, E, G, images, labels, cfg
        self.streams, self.dev = streams, device
        self.n = len(images)
        self.batch = min(cfg.batch_size, self.n)
        G.to(device).eval().requires_grad_(False)
        E.to(device).to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(E.parameters(), lr=cfg.lr)
        self.fixed = np.sort(np.random.default_rng(seed + 3).choice(self.n, min(32, self.n), replace=False))

    def state_dict(self) -> dict:
        return {"E": self.E.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.E.load_state_dict(state["E"])
        self.opt.load_state_dict(state["opt"])

    def begin(self, start: int) -> None:
        self.E.train()

    def step(self) -> tuple[dict[str, float], int]:
        idx = torch.from_numpy(self.streams.np.choice(self.n, size=self.batch, replace=False))
        x = to_input(self.images[idx], self.dev)
        rec = self.G(self.E(x), None if self.labels is None else self.labels[idx].to(self.dev))
        loss = F.l1_loss(rec, x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss_l1": loss.detach()}, self.batch

    def sample(self, step: int, path: Path) -> None:
        x = self.images[torch.from_numpy(self.fixed)]
        y = None if self.labels is None else self.labels[torch.from_numpy(self.fixed)]
        rec = reconstruct(self.E, self.G, x, y, self.dev)
        self.E.train()
        pairs = np.stack([x.numpy(), rec], 1).reshape(-1, *rec.shape[1:])  # real, reconstruction, ...
        save_grid(pairs, path, columns=8)

    def note(self, means: dict[str, float], rate: float) -> str:
        return f"L1 {means['loss_l1']:.4f}  {rate:.0f} img/s"


def train_encoder(E: nn.Module, G: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
                  cfg: EncoderConfig, run_dir: str | Path, *, kind: str, seed: int = 0, device: str = "cpu",
                  resume: bool = False) -> dict:
    """Fit ``E`` so that G(E(x)) reconstructs uint8 NHWC ``images``; ``G`` is frozen (never updated).

    ``labels`` (for a class-conditional G) are passed to G with each image. Every rank trains the same
    encoder (the same streams, no DDP), so each can generate from it.
    """
    n = len(images)
    if n < 2:
        raise UserError(f"encoder training needs at least 2 images, got {n}")
    streams = Streams(seed, per_rank=False)
    task = EncoderTask(E, G, images, labels, cfg, streams, kind=kind, device=torch.device(device), seed=seed)
    config = {"kind": kind, "seed": seed, "device": device, "images": n, "config": dataclasses.asdict(cfg)}
    cadence = Cadence(cfg.steps, cfg.log_every, cfg.sample_every, cfg.checkpoint_every, cfg.max_minutes)
    result = run_training(task, streams, cadence, run_dir, config=config, resume=resume, mean_over_ranks=False)
    E.eval()
    return result
