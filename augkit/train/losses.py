"""Adversarial losses on raw logits: the networks end without a sigmoid, so BCE stays numerically stable.

Three classic choices, picked by name so a recipe can switch between them:

* ``bce``: the non-saturating GAN loss (Goodfellow et al. 2014); G maximises log D(G(z)) so its
  gradients do not vanish early in training, when D easily rejects fakes.
* ``hinge``: the hinge loss of SN-GAN/BigGAN; D stops pushing logits past the margin of 1.
* ``wgan-gp``: the Wasserstein critic loss; it needs :func:`gradient_penalty` (Gulrajani et al. 2017)
  added to the critic's loss to keep the critic about 1-Lipschitz.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("bce", "hinge", "wgan-gp")


def _check_kind(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"unknown adversarial loss '{kind}': choose one of {', '.join(LOSSES)}")


def d_loss(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's (critic's) loss, to minimise: low when real logits are high and fake ones low."""
    _check_kind(kind)
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return fake_logits.mean() - real_logits.mean()


def g_loss(kind: str, fake_logits: Tensor) -> Tensor:
    """The generator's loss, to minimise: low when the discriminator scores the fakes as real."""
    _check_kind(kind)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return -fake_logits.mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP's penalty mean((||grad critic(x_hat)||_2 - 1)^2) at random points x_hat between real and fake.

    The mixing weights come from ``generator`` (a CPU generator; the global RNG when None) so that a
    resumed run draws the same ones. ``real`` and ``fake`` are detached: the penalty trains the critic
    only. The graph is kept (create_graph) so the penalty itself can be back-propagated. Critics with
    batch normalisation break the per-sample gradient this assumes; use layer/instance norm or none.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    n = real.shape[0]
    eps = torch.rand(n, generator=generator).to(device=real.device, dtype=real.dtype)
    eps = eps.view(n, *([1] * (real.dim() - 1)))
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
