"""Tiny training and generation jobs that tests/test_distributed.py runs in one process and, through
tests/ddp_worker.py, in two torchrun processes: same data, same settings, so results can be compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from augkit.data.reader import ArrayDataset
from augkit.evaluate.trainer import TrainConfig, train_run
from augkit.train.gan import GANConfig, train_gan

CLASSES = ("a", "b", "c")


def tiny_data(n: int = 36, size: int = 16, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    images[..., 0] = (labels[:, None, None] * 100).astype(np.uint8)  # a learnable class signal
    return ArrayDataset(images, labels, CLASSES)


def tiny_networks(head: str = "projection"):
    from augkit_gan.networks import Discriminator, Generator

    torch.manual_seed(0)
    G = Generator(16, latent_dim=8, channels=16, upsample="resize", num_classes=len(CLASSES))
    D = Discriminator(16, 8, dropout=0.0, spectral_norm=True, num_classes=len(CLASSES), head=head)
    return G, D


def tiny_gan(run_dir: Path, device: str = "cpu", steps: int = 4, resume: bool = False, callback=None,
             data=None, head: str = "projection", **config) -> dict:
    """A class-conditional GAN with everything that DDP must get right: BatchNorm in G, spectral norm,
    EMA, DiffAugment, class-balanced batches, the reused fakes; ``config`` overrides GANConfig fields."""
    G, D = tiny_networks(head)
    ds = tiny_data() if data is None else data
    images = torch.from_numpy(ds.images) if data is None else data
    cfg = GANConfig(**{"steps": steps, "batch_size": 8, "loss": "hinge", "lr_g": 2e-3, "lr_d": 2e-3,
                       "diffaugment": "color,translation", "ema_decay": 0.9, "balanced_classes": True,
                       "checkpoint_every": 2, "sample_every": 100, "log_every": 1, **config})
    out = train_gan(G, D, images, torch.from_numpy(ds.labels), cfg, run_dir, kind="cgan", seed=1, device=device,
                    conditional=True, resume=resume, num_classes=len(CLASSES), callback=callback)
    return {"G": G.state_dict(), "D": D.state_dict(), "ema": out["ema"].module.state_dict(), "steps": out["steps"],
            "history": out["history"]}


def gan_ddp(folder: Path, device: str) -> dict:
    return tiny_gan(folder / "gan_ddp", device)


def gan_resumed(folder: Path, device: str) -> dict:
    """Continues, under DDP, the single-process run the test left in folder/gan_single (2 of 4 steps)."""
    return tiny_gan(folder / "gan_single", device, resume=True)


def gan_ddp_resumed(folder: Path, device: str) -> dict:
    """gan_ddp's run interrupted after 2 steps and resumed under DDP: should reach the same weights."""
    tiny_gan(folder / "gan_ddp_split", device, steps=2)
    return tiny_gan(folder / "gan_ddp_split", device, resume=True)


def tiny_diffusion(run_dir: Path, device: str = "cpu") -> dict:
    """The diffusion plugin's UNet, 4 steps: under DDP every rank denoises its own batch."""
    from augkit.augment import Context
    from augkit.registry import get_augmenter

    aug = get_augmenter("diffusion", {"steps": 4, "batch_size": 6, "channels": [8, 16], "attention": [False, True],
                                      "sample_steps": 2, "sample_every": 100, "checkpoint_every": 100,
                                      "log_every": 2})
    aug.fit(tiny_data(), Context(seed=0, device=device, workdir=run_dir))
    return {"ema": aug.G.unet.state_dict()}


def diffusion_ddp(folder: Path, device: str) -> dict:
    return tiny_diffusion(folder / "diffusion_ddp", device)


def classifier(folder: Path, device: str, streamed: bool = False) -> dict:
    ds = tiny_data(48)
    train = ds.subset(np.arange(36))
    val = ds.subset(np.arange(36, 48))
    x = train if streamed else torch.from_numpy(train.images)
    val_t = (torch.from_numpy(val.images), val.labels)
    cfg = TrainConfig(model="test_resnet", epochs=2, batch_size=6, lr=3e-3)
    run = train_run(x, torch.from_numpy(train.labels), val_t, val_t, len(CLASSES), cfg, seed=0, device=device,
                    keep_model=True)
    return {"model": run["model"].state_dict(), "y_pred": run["y_pred"], "history": run["history"],
            "steps": run["optimizer_steps"]}


def shard(folder: Path, device: str) -> dict:
    """Classical images into a shard: 300 per class, so each class is two chunks (256 + 44)."""
    from augkit.augment import Context
    from augkit.generate import augment_to_file
    from augkit.registry import get_augmenter

    summary = augment_to_file(get_augmenter("classical", {"rotate": 90}), tiny_data(), folder / "shard_ddp.h5",
                              {"per_class": 300}, Context(seed=5, device=device), overwrite=True)
    return {"total": summary["total"]}


def gan_ada_ddp(folder: Path, device: str) -> dict:
    """ADA (cgan's default) under DDP: a low target so that p moves within a few steps (as in test_gan)."""
    return tiny_gan(folder / "gan_ada_ddp", device, steps=6, ada_target=0.01, ada_interval=2, ada_images=64)


def gan_d2d_ddp(folder: Path, device: str) -> dict:
    """ReACGAN's class term under DDP: the proxies' gradients come through the forward pass."""
    return tiny_gan(folder / "gan_d2d_ddp", device, head="projection+d2d", class_loss="d2d")


def d2d_batch(n: int = 12, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A packed d2d head output (own-proxy cosine, unit embedding) in few dimensions, so that many
    pairs of other-class images are close enough to count as negatives."""
    g = torch.Generator().manual_seed(3)
    e = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    s = torch.rand(n, 1, generator=g) * 2 - 1
    return torch.cat([s, e], 1), torch.arange(n) % len(CLASSES)


def d2d_loss(folder: Path, device: str) -> dict:
    """ReACGAN's d2d term on this rank's half of one batch, with its gradient."""
    from augkit import distributed
    from augkit.train.losses import d2d_ce

    packed, y = d2d_batch()
    half = len(y) // 2
    rows = slice(distributed.rank() * half, (distributed.rank() + 1) * half)
    mine = packed[rows].clone().requires_grad_()
    loss = d2d_ce(mine, y[rows])
    loss.backward()
    return {"loss": loss.detach(), "grad": mine.grad}


CASES = {"d2d_loss": d2d_loss, "gan_ddp": gan_ddp, "gan_ada_ddp": gan_ada_ddp, "gan_d2d_ddp": gan_d2d_ddp, "gan_ddp_resumed": gan_ddp_resumed, "gan_resumed": gan_resumed,
         "classifier": classifier, "shard": shard, "diffusion_ddp": diffusion_ddp}
