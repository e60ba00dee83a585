"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

With a few hundred images per class a discriminator memorises the real set and GAN training
collapses. DiffAugment applies the same random, differentiable augmentations to real *and* fake
batches every time D sees them (in the D and the G step), so D cannot memorise while G still gets
gradients through the augmentation, and the augmentations do not leak into the generated images.

Images are NCHW in [-1, 1]. All randomness is drawn on the CPU from the given ``torch.Generator``
and then moved to the images' device, so a seed gives the same augmentations on CPU and CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

POLICIES = ("color", "translation", "cutout")

TRANSLATION_RATIO = 0.125  # shift by up to 1/8 of the size, as in the paper
CUTOUT_RATIO = 0.5  # cut out a square of half the size


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """``"color,translation"`` or ``["color", "translation"]`` as a checked tuple; ``""`` is no augmentation."""
    parts = policy.split(",") if isinstance(policy, str) else list(policy)
    names = tuple(p.strip() for p in parts if p.strip())
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy '{name}': choose from {', '.join(POLICIES)}")
    return names


def _rand(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One U(0, 1) number per image, shaped to broadcast over CHW."""
    r = torch.rand(x.shape[0], generator=generator)
    return r.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _randint(low: int, high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randint(low, high, (n,), generator=generator).to(device)


def _color(x: Tensor, generator: torch.Generator | None) -> Tensor:
    # brightness: shift by U(-0.5, 0.5); saturation: scale distance from the grey value by U(0, 2);
    # contrast: scale distance from the image mean by U(0.5, 1.5)
    x = x + (_rand(x, generator) - 0.5)
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * (_rand(x, generator) * 2) + grey
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, generator) + 0.5) + mean


def _translation(x: Tensor, generator: torch.Generator | None) -> Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    ty = _randint(-sh, sh + 1, n, generator, x.device)
    tx = _randint(-sw, sw + 1, n, generator, x.device)
    # out[y, x] = in[y - ty, x - tx]; indices that fall outside read the one-pixel zero border
    # of the padded image, so the uncovered band is zero (the paper's zero padding)
    ys = (torch.arange(h, device=x.device)[None, :] - ty[:, None]).clamp(-1, h) + 1
    xs = (torch.arange(w, device=x.device)[None, :] - tx[:, None]).clamp(-1, w) + 1
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # N, H+2, W+2, C
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)


def _cutout(x: Tensor, generator: torch.Generator | None) -> Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    # the square's centre may sit anywhere on the image, so the square is clipped at the borders
    cy = _randint(0, h + (1 - ch % 2), n, generator, x.device) - ch // 2
    cx = _randint(0, w + (1 - cw % 2), n, generator, x.device) - cw // 2
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= cy[:, None]) & (ys < cy[:, None] + ch)  # N, H
    in_x = (xs >= cx[:, None]) & (xs < cx[:, None] + cw)  # N, W
    keep = ~(in_y[:, :, None] & in_x[:, None, :])
    return x * keep[:, None].to(x.dtype)


_OPS: dict[str, Callable[[Tensor, torch.Generator | None], Tensor]] = {
    "color": _color,
    "translation": _translation,
    "cutout": _cutout,
}


def diff_augment(x: Tensor, policy: str | Sequence[str], generator: torch.Generator | None = None) -> Tensor:
    """Augment a batch (NCHW, in [-1, 1]) differentiably with the policies in order; ``""`` returns ``x`` itself.

    Use one policy for real and fake batches. ``generator`` must be a CPU generator (None: the global
    RNG); each image gets its own random parameters.
    """
    names = parse_policy(policy)
    if not names:
        return x
    if x.dim() != 4:
        raise ValueError(f"diff_augment: expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("diff_augment: pass a CPU torch.Generator; its numbers are moved to the images' device")
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = x
    for name in names:
        out = _OPS[name](out, generator)
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def diff_augment_some(x: Tensor, policy: str | Sequence[str], p: float, generator: torch.Generator | None = None
                      ) -> Tensor:
    """ADA's form of :func:`diff_augment`: each image is augmented with probability ``p``, the others pass
    unchanged. Only the chosen images are computed: ADA keeps p near 0 on most of a run, where augmenting
    the whole batch and discarding it cost about a tenth of a GAN step."""
    chosen = torch.rand(len(x), generator=generator) < p
    if not bool(chosen.any()):
        return x
    idx = chosen.nonzero().squeeze(1).to(x.device)
    return x.index_copy(0, idx, diff_augment(x.index_select(0, idx), policy, generator))
