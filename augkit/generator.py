"""The generator contract: an augmenter whose images are ``G(z, y)`` for latent codes ``z ~ N(0, I)``.

A plugin's generator subclasses :class:`GenerativeAugmenter` and, in ``fit`` and ``load``, sets ``self.G``:
a torch module whose ``forward(z, y=None)`` maps latents (n, latent_dim) and, when the augmenter is
``conditional``, class labels (n,) to images (n, 3, H, W) in [-1, 1]. It declares ``latent_dim`` and
``image_size`` (properties reading its network, by default ``G.latent_dim`` and ``G.size``). In return
it gets ``generate`` (conditional generators), ``sample``, ``decode`` and ``interpolate``, and everything
built on the contract works with it: the latent augmenters (perturbation and interpolation through an
encoder), quality checks, the expert test and ``augkit interpolate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from augkit.augment import Augmenter, Context, Samples
from augkit.errors import DataError, UserError
from augkit.images import to_uint8

BATCH = 256  # latents decoded per forward pass


class GenerativeAugmenter(Augmenter):
    """An augmenter that decodes latent codes with a generator network ``G(z, y=None)``."""

    trains = True
    described_as: ClassVar[str] = "a generator"  # in messages about a parameter that needs one
    #: whether an encoder can be trained through ``G`` (the latent augmenters back-propagate through it);
    #: False for a generator whose ``G`` is a long sampling loop (a diffusion model's)
    encodable: ClassVar[bool] = True

    def __init__(self, params=None):
        super().__init__(params)
        self.G: torch.nn.Module | None = None

    # -- what a generator declares ----------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return int(self.trained_G().latent_dim)

    @property
    def image_size(self) -> int:
        return int(self.trained_G().size)

    def trained_G(self) -> torch.nn.Module:
        """The generator network, or an error that says it must be trained first."""
        if self.G is None:
            raise UserError(f"augmenter '{self.name}': call fit() (or load a trained one) before generating")
        return self.G

    # -- what the contract gives ------------------------------------------------------------------
    def latents(self, n: int, ctx: Context) -> torch.Tensor:
        """``n`` latent codes from N(0, I), drawn from ``ctx``'s seed on the CPU (the same on any device).
        Drawn BATCH at a time: torch's normal sampler gives other numbers for one large draw than for
        several small ones, and seeded shards must keep their content."""
        gen = ctx.torch_generator()
        parts = [torch.randn(min(BATCH, n - s), self.latent_dim, generator=gen) for s in range(0, n, BATCH)]
        return torch.cat(parts) if parts else torch.zeros(0, self.latent_dim)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, label: int | np.ndarray | torch.Tensor | None, device: str) -> np.ndarray:
        """uint8 (n, H, W, 3) images of latents ``z``; ``label`` (one class, or one per latent) is required
        by a conditional generator and refused by an unconditional one."""
        G = self.trained_G()
        if self.conditional == (label is None):
            raise UserError(f"augmenter '{self.name}': " + ("a class-conditional generator needs a class"
                                                            if self.conditional else "cannot choose a class"))
        dev = torch.device(device)
        G.to(dev).eval()
        y = None
        if label is not None:
            y = torch.as_tensor(label, dtype=torch.long).flatten()
            y = y.expand(len(z)) if len(y) == 1 else y
            if len(y) != len(z):
                raise ValueError(f"{len(y)} labels for {len(z)} latents")
        out = [to_uint8(G(z[s:s + BATCH].to(dev), None if y is None else y[s:s + BATCH].to(dev)))
               for s in range(0, len(z), BATCH)]
        return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)

    def sample(self, n: int, ctx: Context, label: int | None = None) -> np.ndarray:
        """``n`` images from random latents (of class ``label`` when the generator is conditional)."""
        return self.decode(self.latents(n, ctx), label, ctx.device)

    def generate(self, label: int, n: int, ctx: Context) -> Samples:
        if not self.conditional:
            raise UserError(cannot_choose_a_class(self.name))
        return Samples(self.sample(n, ctx, label))

    def interpolate_latents(self, z_a: torch.Tensor, z_b: torch.Tensor, steps: int, label: int | None,
                            device: str) -> np.ndarray:
        """G((1 - t) z_a + t z_b) for ``steps`` values of t from 0 to 1, as uint8 (steps, H, W, 3)."""
        if steps < 2:
            raise UserError(f"interpolation needs at least 2 steps, got {steps}")
        t = torch.linspace(0, 1, steps)[:, None]
        z = (1 - t) * z_a[None].cpu() + t * z_b[None].cpu()
        return self.decode(z, label if self.conditional else None, device)

    def interpolate(self, steps: int, ctx: Context, images: np.ndarray | None = None,
                    label: int | None = None) -> np.ndarray:
        """``steps`` images between two random latents (t = 0 ... 1), for `augkit interpolate`. Starting
        from two images needs an encoder: the latent augmenters have one."""
        if images is not None:
            raise UserError(f"augmenter '{self.name}' has no encoder, so it cannot start from images; train "
                            "latent_interp or latent_perturb on it and interpolate with that")
        ends = self.latents(2, ctx)
        return self.interpolate_latents(ends[0], ends[1], steps, label, ctx.device)


def load_generator(path: str | Path, needs: str = "latent augmenters need a generator") -> GenerativeAugmenter:
    """The saved augmenter in ``path`` when it follows the generator contract; otherwise an error that
    names the folder, what it holds and what ``needs`` it."""
    from augkit.registry import get_registry

    name = Augmenter.saved_meta(path)["augmenter"]
    cls = get_registry().get(name).cls
    if not issubclass(cls, GenerativeAugmenter):
        raise DataError(f"{path}: holds augmenter '{name}', which is not a generator; {needs} "
                        f"({', '.join(generator_names())})")
    return cls.load(path)


def encodable_generator(cls: type) -> bool:
    """Whether augmenter class ``cls`` is a generator an encoder can be trained through: what the latent
    augmenters' ``generator`` parameter accepts (an AUGMENTER_REF test)."""
    return issubclass(cls, GenerativeAugmenter) and cls.encodable


encodable_generator.described_as = "a generator an encoder can be trained through"


def cannot_choose_a_class(name: str) -> str:
    """The message for asking an unconditional augmenter for images of a class."""
    conditional = ", ".join(generator_names(conditional=True)) or "none is installed"
    return (f"augmenter '{name}' cannot choose a class, so it cannot make images per class; use a "
            f"class-conditional generator ({conditional})")


def generator_names(conditional: bool | None = None) -> list[str]:
    """The installed augmenters that follow the generator contract (only the class-conditional ones, or
    only the unconditional ones, with ``conditional``)."""
    from augkit.registry import get_registry

    registry = get_registry()
    classes = {n: registry.get(n).cls for n in registry.names()}
    return [n for n, cls in classes.items() if issubclass(cls, GenerativeAugmenter)
            and (conditional is None or cls.conditional == conditional)]
