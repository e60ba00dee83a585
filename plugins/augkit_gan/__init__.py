"""augkit's GAN augmenters: the thesis's vanilla DCGAN and AC-GAN, cgan (the mode-collapse fix), and the
latent-space augmenters latent_perturb and latent_interp built on any of them.

Registered through the ``augkit`` entry-point group like any third-party plugin.
"""

from augkit import hookimpl
from augkit_gan.augmenters import ACGAN, CGAN, VanillaGAN
from augkit_gan.latent import LatentInterp, LatentPerturb

__all__ = ["ACGAN", "CGAN", "LatentInterp", "LatentPerturb", "VanillaGAN"]


@hookimpl
def augkit_augmenters():
    return [VanillaGAN, ACGAN, CGAN, LatentPerturb, LatentInterp]
