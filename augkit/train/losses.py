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

from augkit import distributed

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


# ---- objectives: the terms of a GAN's loss, each with a discriminator phase and a generator phase ----

class Objective:
    """One term of a GAN's objective. ``d_phase`` adds to the discriminator's (critic's) loss and
    ``g_phase`` to the generator's; either returns None where the term has no part in that phase.
    Each returns (the weighted term, values to log). ``autocast``: computed under mixed precision with
    the networks' forward passes (False: in full precision after them, as a gradient penalty needs)."""

    autocast = True

    def d_phase(self, p: "DPhase") -> tuple[Tensor, dict] | None:
        return None

    def g_phase(self, p: "GPhase") -> tuple[Tensor, dict] | None:
        return None


class DPhase:
    """What the discriminator's terms see: its logits (and class logits) on real and fake batches,
    the real labels, the (augmented) inputs, the critic and the stream that draws a penalty's mixing."""

    def __init__(self, logit_real, logit_fake, aux_real, aux_fake, y, real_in, fake_in, critic, generator,
                 recon_real=None):
        self.logit_real, self.logit_fake, self.aux_real, self.aux_fake = logit_real, logit_fake, aux_real, aux_fake
        self.y, self.real_in, self.fake_in, self.critic, self.generator = y, real_in, fake_in, critic, generator
        self.recon_real = recon_real  # D's decoder's images of real_in (a self-supervised D), else None


class GPhase:
    """What the generator's terms see: the discriminator's logits (and class logits) on its fakes and
    the labels they were made for."""

    def __init__(self, logit_fake, aux_fake, y):
        self.logit_fake, self.aux_fake, self.y = logit_fake, aux_fake, y


class Adversarial(Objective):
    """The adversarial loss by name: ``bce``, ``hinge`` or ``wgan-gp`` (the Wasserstein critic loss)."""

    def __init__(self, kind: str):
        _check_kind(kind)
        self.kind = kind

    def d_phase(self, p):
        return d_loss(self.kind, p.logit_real, p.logit_fake), {}

    def g_phase(self, p):
        return g_loss(self.kind, p.logit_fake), {}


class AuxiliaryClass(Objective):
    """AC-GAN's auxiliary classifier (Odena et al. 2017): D classifies real and fake images by class and
    G is rewarded when its fakes are classified as the class asked for. Active where D has class logits."""

    def __init__(self, weight: float = 1.0, on_fakes: bool = True):
        """``on_fakes``: D also learns to give fakes the class they were made for (AC-GAN); False: D's
        classifier learns from real images only, so it stays a classifier of real cells, and G is
        rewarded only for fakes that classifier recognises (less pull towards easy, prototypical fakes)."""
        self.weight, self.on_fakes = weight, on_fakes

    #: the loss of D's class output against the labels (a subclass brings its own)
    criterion = staticmethod(F.cross_entropy)

    def d_phase(self, p):
        if p.aux_real is None:
            return None
        aux = self.criterion(p.aux_real, p.y)
        if self.on_fakes:
            aux = aux + self.criterion(p.aux_fake, p.y)
        return self.weight * aux, {"loss_aux": aux}

    def g_phase(self, p):
        if p.aux_fake is None:
            return None
        return self.weight * self.criterion(p.aux_fake, p.y), {}


def d2d_ce(packed: Tensor, y: Tensor, temperature: float = 0.5, margin: float = 0.98) -> Tensor:
    """ReACGAN's data-to-data cross-entropy (Kang et al. 2021), averaged over the batch.

    ``packed`` is what a "d2d" discriminator head returns: column 0 the cosine s_i between image i's
    embedding and its class's proxy, the rest the unit embeddings e_i. Each image is pulled to its
    proxy and pushed from the other classes' images in the batch (not from other proxies: the data-
    to-data part, which keeps the gradients informative where AC-GAN's softmax saturates); margins
    skip the easy cases, a positive already within ``margin`` of its proxy and a negative whose
    cosine is below 1 - ``margin``, so that the term stops rewarding easy, prototypical images:

        loss_i = -log(exp(-pos_i) / (exp(-pos_i) + sum_{j: y_j != y_i} exp(neg_ij)))
        pos_i = relu((margin - s_i) / T),  neg_ij = relu((e_i . e_j - (1 - margin)) / T)

    Under torchrun the negatives j are the global batch's, every rank's images (as ReACGAN gathers
    them); the mean is over this rank's rows, so DDP's averaging gives the one-process gradient.
    """
    s, e = packed[:, 0].float(), packed[:, 1:].float()
    e_all, y_all = distributed.all_gather_rows(e), distributed.all_gather_rows(y)
    pos = F.relu((margin - s) / temperature)
    with torch.autocast(e.device.type, enabled=False):  # bfloat16 would blur cosines by ~1/5 of 1 - margin
        sim = e @ e_all.T
    neg = F.relu((sim - (1 - margin)) / temperature)
    neg = neg.masked_fill(y[:, None] == y_all[None, :], float("-inf"))  # same class (and i itself): no negative
    return (pos + torch.logsumexp(torch.cat([-pos[:, None], neg], 1), 1)).mean()


class DataToDataCE(AuxiliaryClass):
    """ReACGAN's class term (:func:`d2d_ce`) on a "d2d" head, in AC-GAN's phases: D learns it on real
    images (and with ``on_fakes`` on the fakes too), G is rewarded for fakes whose embeddings lie by
    their class's proxy and away from the other classes' images. Active where D returns a d2d head's output."""

    criterion = staticmethod(d2d_ce)

    def __init__(self, weight: float = 1.0, on_fakes: bool = False):
        super().__init__(weight, on_fakes)


#: D's class term by name: AC-GAN's cross-entropy on class logits, or ReACGAN's data-to-data one
CLASS_TERMS: dict[str, type[AuxiliaryClass]] = {"ce": AuxiliaryClass, "d2d": DataToDataCE}


class GradientPenalty(Objective):
    """WGAN-GP's penalty (:func:`gradient_penalty`) on the critic, in full precision."""

    autocast = False

    def __init__(self, weight: float = 10.0):
        self.weight = weight

    def d_phase(self, p):
        return self.weight * gradient_penalty(p.critic, p.real_in, p.fake_in, generator=p.generator), {}


class Reconstruction(Objective):
    """The self-supervised discriminator's term (FastGAN, Liu et al. 2021): D's decoder must rebuild
    the real images D saw from its 8x8 map (L1 in pixels: the paper adds a perceptual loss, whose
    pretrained network augkit cannot download). Active where D returns reconstructions."""

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def d_phase(self, p):
        if p.recon_real is None:
            return None
        loss = F.l1_loss(p.recon_real.float(), p.real_in.float())
        return self.weight * loss, {"loss_recon": loss}


def objectives(loss: str, aux_weight: float = 1.0, gp_weight: float = 10.0,
               aux_on_fakes: bool = True, recon_weight: float = 0.0, class_loss: str = "ce") -> list[Objective]:
    """The terms of a GAN's objective for the adversarial loss ``loss``: it, the class term (where D
    has a class head: ``class_loss`` "ce", :class:`AuxiliaryClass`, or "d2d", :class:`DataToDataCE`;
    ``aux_on_fakes``: whether D learns it on fakes too), for ``wgan-gp`` the gradient penalty, and with
    ``recon_weight`` > 0 the self-supervised D's reconstruction."""
    if class_loss not in CLASS_TERMS:
        raise ValueError(f"unknown class loss '{class_loss}': choose one of {', '.join(CLASS_TERMS)}")
    terms: list[Objective] = [Adversarial(loss), CLASS_TERMS[class_loss](aux_weight, aux_on_fakes)]
    if loss == "wgan-gp":
        terms.append(GradientPenalty(gp_weight))
    if recon_weight > 0:
        terms.append(Reconstruction(recon_weight))
    return terms
