"""augkit's GAN augmenters: the thesis's vanilla DCGAN and AC-GAN, and cgan, the mode-collapse fix.

Registered through the ``augkit`` entry-point group like any third-party plugin.
"""

from augkit import hookimpl
from augkit_gan.augmenters import ACGAN, CGAN, VanillaGAN

__all__ = ["ACGAN", "CGAN", "VanillaGAN"]


@hookimpl
def augkit_augmenters():
    return [VanillaGAN, ACGAN, CGAN]
