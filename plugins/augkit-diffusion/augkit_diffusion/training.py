"""One denoising step on augkit's training loop (the loop does the run folder, resume, budget, Ctrl-C).

Each step draws a batch of real images, a noise level t ~ U{0, T-1} and noise per image, noises the
images (the cosine schedule), drops each label to "no class" with probability ``p_uncond`` (so the
same UNet also learns the unconditional model classifier-free guidance needs) and regresses the UNet's
output on the target: the noise (epsilon prediction) or the velocity (v prediction).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from augkit import distributed
from augkit.images import save_grid, to_input, to_uint8
from augkit.train.ema import EMA
from augkit.train.loop import Streams, Task
from augkit_diffusion.sampler import TRAIN_TIMESTEPS, DiffusionSampler, train_scheduler


class DiffusionTask(Task):
    """A denoising step of a class-conditional UNet, with an EMA copy that the samples and snapshots use."""

    kind = "diffusion"

    def __init__(self, unet: nn.Module, images: torch.Tensor, labels: torch.Tensor, p: dict, streams: Streams,
                 device: torch.device, num_classes: int, size: int):
        self.unet, self.images, self.labels, self.p, self.streams, self.dev = unet, images, labels, p, streams, device
        self.num_classes, self.size = num_classes, size
        self.batch = min(int(p["batch_size"]), len(images))
        self.noising = train_scheduler(p["prediction"])
        cuda = device.type == "cuda"
        unet.to(device)
        if cuda:
            unet.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(unet.parameters(), lr=p["lr"], weight_decay=p["weight_decay"],
                                     fused=cuda)
        self.ema = EMA(unet, decay=p["ema_decay"], warmup=True)
        self.net = distributed.wrap(unet, device)
        self.amp = cuda and torch.cuda.is_bf16_supported()
        if cuda and images.numel() < 0.25 * torch.cuda.get_device_properties(device).total_memory:
            self.images = images.to(device)  # uint8 on the GPU: no host transfer per step
        rows = min(num_classes, 8)
        fixed = torch.Generator().manual_seed(int(p["seed"]) + 3)
        self.fixed_z = torch.randn(rows * 8, 3 * size * size, generator=fixed)
        self.fixed_y = torch.arange(rows).repeat_interleave(8)

    def step(self):
        idx = torch.from_numpy(self.streams.np.choice(len(self.images), self.batch, replace=False))
        x0 = to_input(self.images[idx.to(self.images.device)], self.dev)
        y = self.labels[idx].clone()
        drop = torch.rand(self.batch, generator=self.streams.torch["drop"]) < self.p["p_uncond"]
        y[drop] = self.num_classes  # the "no class" embedding
        noise = torch.randn(x0.shape, generator=self.streams.torch["noise"]).to(self.dev)
        t = torch.randint(0, TRAIN_TIMESTEPS, (self.batch,), generator=self.streams.torch["t"]).to(self.dev)
        noisy = self.noising.add_noise(x0, noise, t)
        target = noise if self.p["prediction"] == "epsilon" else self.noising.get_velocity(x0, noise, t)
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.net(noisy, t, class_labels=y.to(self.dev)).sample
        loss = F.mse_loss(out.float(), target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.ema.update(self.unet)
        return {"loss_denoise": loss.detach()}, self.batch

    def state_dict(self):
        return {"unet": self.unet.state_dict(), "opt": self.opt.state_dict(), "ema": self.ema.state_dict()}

    def load_state_dict(self, state):
        self.unet.load_state_dict(state["unet"])
        self.opt.load_state_dict(state["opt"])
        self.ema.load_state_dict(state["ema"])

    def generating_net(self) -> DiffusionSampler:
        """The EMA UNet behind the generation settings: what samples, snapshots and the augmenter use."""
        p = self.p
        return DiffusionSampler(self.ema.module, self.size, self.num_classes, p["prediction"], p["sampler"],
                                p["sample_steps"], p["guidance"])

    def sample(self, step: int, path: Path) -> None:
        out = self.generating_net()(self.fixed_z.to(self.dev), self.fixed_y.to(self.dev))
        save_grid(to_uint8(out), path, columns=8)

    def note(self, means, rate):
        return f"loss {means['loss_denoise']:.4f}  {rate:.0f} img/s"
