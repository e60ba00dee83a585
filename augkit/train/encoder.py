"""Training an image-to-latent encoder against a frozen generator (thesis section 4.6).

E learns z = E(x) such that G(z) (or G(z, label) for a class-conditional G) reconstructs x, with an L1
loss in pixel space while G's weights stay fixed. Perturbing or interpolating E(x) then makes new
images that stay close to real ones. The run folder mirrors a GAN run: ``config.json``,
``checkpoints/latest.pt`` (resumable to the same weights), ``samples/step_XXXXXXX.png`` (real and
reconstruction side by side), ``losses.csv`` and ``losses.png``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augkit.errors import UserError
from augkit.progress import track
from augkit.train.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from augkit.images import save_grid, to_input, to_uint8
from augkit.train.gan import StopFlag, checkpoint_path, plot_losses, write_history


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


def train_encoder(E: nn.Module, G: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
                  cfg: EncoderConfig, run_dir: str | Path, *, kind: str, seed: int = 0, device: str = "cpu",
                  resume: bool = False) -> dict:
    """Fit ``E`` so that G(E(x)) reconstructs uint8 NHWC ``images``; ``G`` is frozen (never updated).

    ``labels`` (for a class-conditional G) are passed to G with each image.
    """
    run_dir = Path(run_dir)
    dev = torch.device(device)
    ckpt_path = checkpoint_path(run_dir, resume)
    n = len(images)
    if n < 2:
        raise UserError(f"encoder training needs at least 2 images, got {n}")
    batch = min(cfg.batch_size, n)
    G.to(dev).eval().requires_grad_(False)
    E.to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(E.parameters(), lr=cfg.lr)
    torch.manual_seed(seed)
    np_rng = np.random.default_rng(seed)
    fixed = np.sort(np.random.default_rng(seed + 3).choice(n, min(32, n), replace=False))
    history: list[dict] = []
    start = 0
    if resume:
        state = load_checkpoint(ckpt_path, kind=kind)
        E.load_state_dict(state["E"])
        opt.load_state_dict(state["opt"])
        restore_rng_state(state["rng"], np_rng=np_rng)
        history = json.loads(state["history"])
        start = int(state["step"])
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"kind": kind, "seed": seed, "device": device, "images": n, "config": dataclasses.asdict(cfg)}, indent=2))

    def sample_grid(step: int) -> None:
        x = images[torch.from_numpy(fixed)]
        y = None if labels is None else labels[torch.from_numpy(fixed)]
        rec = reconstruct(E, G, x, y, dev)
        E.train()
        pairs = np.stack([x.numpy(), rec], 1).reshape(-1, *rec.shape[1:])  # real, reconstruction, ...
        save_grid(pairs, run_dir / "samples" / f"step_{step:07d}.png", columns=8)

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt_path, {"step": step, "E": E.state_dict(), "opt": opt.state_dict(),
                                    "rng": rng_state(np_rng=np_rng), "history": json.dumps(history)}, kind=kind)
        write_history(history, run_dir / "losses.csv")

    E.train()
    total, count, t0 = 0.0, 0, time.perf_counter()
    deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes > 0 else None
    stopped_early = False
    step = start
    with StopFlag() as stop, track(f"training {kind}", cfg.steps) as bar:
        bar(start)
        while step < cfg.steps:
            idx = torch.from_numpy(np_rng.choice(n, size=batch, replace=False))
            x = to_input(images[idx], dev)
            z = E(x)
            rec = G(z, None if labels is None else labels[idx].to(dev))
            loss = F.l1_loss(rec, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar(1)
            total += float(loss.detach())
            count += 1
            if deadline is not None and step < cfg.steps and time.monotonic() >= deadline:
                stopped_early = True
            final = step == cfg.steps or stopped_early
            if step % cfg.log_every == 0 or final:
                rate = count * batch / max(time.perf_counter() - t0, 1e-9)
                history.append({"step": step, "loss_l1": total / count, "images_per_s": rate})
                bar.note(f"L1 {total / count:.4f}  {rate:.0f} img/s")
                total, count, t0 = 0.0, 0, time.perf_counter()
            if step % cfg.sample_every == 0 or final:
                sample_grid(step)
            if step % cfg.checkpoint_every == 0 or final:
                checkpoint(step)
            if stop.requested:
                if step % cfg.checkpoint_every and not final:
                    checkpoint(step)
                raise KeyboardInterrupt(f"stopped at step {step}; continue with --resume")
            if stopped_early:
                break
    if history:
        plot_losses(history, run_dir / "losses.png")
    E.eval()
    return {"steps": step, "history": history, "stopped_early": stopped_early}
