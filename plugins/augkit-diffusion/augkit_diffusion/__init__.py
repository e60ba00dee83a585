"""augkit-diffusion: a class-conditional denoising diffusion model as an augkit generator.

A diffusers ``UNet2DModel`` with a class embedding (one extra "no class" entry for classifier-free
guidance) learns to denoise the team's own images on augkit's training loop; a few-step DDIM or
DPM-Solver sampler turns noise into images of a chosen class. It follows augkit's generator contract
(:mod:`augkit.generator`), so recipes, ``augkit augment``, quality checks, the expert test and the
evaluator take it like any generator. It imports only augkit's public modules.
"""

from augkit import hookimpl
from augkit_diffusion.augmenter import Diffusion

__all__ = ["Diffusion"]


@hookimpl
def augkit_augmenters():
    return [Diffusion]
