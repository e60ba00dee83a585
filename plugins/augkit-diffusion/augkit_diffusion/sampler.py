"""The networks: a diffusers UNet with a class embedding, and the sampler that makes it a generator.

The generator contract wants ``G(z, y)``: latents in, images out, deterministic. A diffusion model
with a deterministic sampler (DDIM with eta = 0, or DPM-Solver++) is exactly that, with the starting
noise as the latent: ``z`` has 3 x H x W numbers, reshaped to the image's shape. So sampling,
per-class generation and interpolation between two noises come from the contract unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: the noise schedule the model trains with (its betas); the samplers are built from the same config
TRAIN_TIMESTEPS = 1000
SAMPLERS = ("ddim", "dpm")
#: images denoised together on a CPU: per image, larger batches run slower there (the cpu preset's UNet
#: at 32 px with guidance, 2 cores: 1.9 images/s at 16, 1.75 at 64, 1.4 at 128), and augkit generates
#: in chunks of 256
CPU_BATCH = 16


def build_unet(arch: dict) -> nn.Module:
    """The UNet an architecture record describes: ``size``, ``channels`` (per resolution),
    ``attention`` (per resolution, bools), ``layers_per_block`` and ``num_classes`` (the class
    embedding has one more entry, the "no class" of classifier-free guidance)."""
    from diffusers import UNet2DModel

    attention = list(arch["attention"])
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    channels = tuple(arch["channels"])
    # heads of 32 channels (fewer where the attended width is narrower); groups of GroupNorm divide every width
    attended = [c for c, a in zip(channels, attention) if a]
    head_dim = min([32, *attended])
    groups = math.gcd(32, *channels)
    return UNet2DModel(sample_size=arch["size"], in_channels=3, out_channels=3, block_out_channels=channels,
                       down_block_types=down, up_block_types=up, layers_per_block=arch["layers_per_block"],
                       norm_num_groups=groups, attention_head_dim=head_dim, num_class_embeds=arch["num_classes"] + 1)


def train_scheduler(prediction: str):
    """The forward (noising) process: DDPM's, with the cosine schedule, predicting ``prediction``
    ("epsilon" or "v_prediction")."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2",
                         prediction_type=prediction, clip_sample=False)


def sampling_scheduler(kind: str, prediction: str):
    """A fresh few-step sampler over the training schedule (fresh: DPM-Solver keeps a history).

    Both clip each step's estimate of the clean image to the data's range [-1, 1]. Without it an
    epsilon model cannot sample: the first step is at t = T - 1, where the cosine schedule's alpha-bar
    is ~2e-9, so the clean-image estimate (x - sqrt(1 - alpha-bar) eps) / sqrt(alpha-bar) multiplies
    the network's error in eps by ~20,000, and the images come out as saturated noise.
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    config = train_scheduler(prediction).config
    if kind == "ddim":
        # "trailing" spacing starts at the last training step: with few steps, "leading" never starts
        # from pure noise, and the images come out grey (Lin et al. 2023)
        return DDIMScheduler.from_config(config, timestep_spacing="trailing", clip_sample=True,
                                         clip_sample_range=1.0, set_alpha_to_one=False)
    # DPM-Solver's thresholding with a maximum of 1 is a plain clip to [-1, 1]
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2,
                                                   timestep_spacing="trailing", thresholding=True,
                                                   sample_max_value=1.0)


class DiffusionSampler(nn.Module):
    """``G(z, y)``: denoise the noise ``z`` (n, 3 * size * size) into images of classes ``y`` with
    ``steps`` steps of a deterministic sampler and classifier-free guidance ``guidance``
    (0: unconditional, 1: conditional, above 1: guided). Images in [-1, 1]."""

    def __init__(self, unet: nn.Module, size: int, num_classes: int, prediction: str, sampler: str = "ddim",
                 steps: int = 25, guidance: float = 2.0):
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        self.unet, self.size, self.num_classes = unet, size, num_classes
        self.latent_dim = 3 * size * size
        self.prediction, self.sampler, self.steps, self.guidance = prediction, sampler, steps, guidance

    def _predict(self, x: torch.Tensor, t, y: torch.Tensor) -> torch.Tensor:
        null = torch.full_like(y, self.num_classes)
        if self.guidance == 1.0:
            return self.unet(x, t, class_labels=y).sample
        if self.guidance == 0.0:
            return self.unet(x, t, class_labels=null).sample
        # one batch of both: larger matrix products, one pass of the weights through the cache
        both = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([y, null])).sample
        cond, uncond = both.chunk(2)
        return uncond + self.guidance * (cond - uncond)

    @torch.no_grad()
    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("the diffusion generator is class-conditional: pass labels")
        if z.device.type == "cpu" and len(z) > CPU_BATCH:
            return torch.cat([self._denoise(z[s:s + CPU_BATCH], y[s:s + CPU_BATCH])
                              for s in range(0, len(z), CPU_BATCH)])
        return self._denoise(z, y)

    def _denoise(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        scheduler = sampling_scheduler(self.sampler, self.prediction)
        scheduler.set_timesteps(self.steps, device=z.device)
        x = z.reshape(len(z), 3, self.size, self.size).float() * scheduler.init_noise_sigma
        amp = z.device.type == "cuda"
        for t in scheduler.timesteps:
            with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=amp):
                out = self._predict(scheduler.scale_model_input(x, t), t, y)
            x = scheduler.step(out.float(), t, x).prev_sample
        return x.clamp(-1, 1)
