"""An exponential moving average (EMA) of a network's weights.

GAN generators sample visibly better from averaged weights (Karras et al., Yazici et al. 2019): the
average smooths the oscillation of the adversarial game. Buffers such as BatchNorm's running
statistics are copied rather than averaged, since an average of running statistics of different
weights describes none of them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _copy_module(module: nn.Module) -> nn.Module:
    """A deep copy that also works after a forward pass of old-style weight/spectral norm, whose
    computed (non-leaf) weights refuse ``copy.deepcopy``: they are copied detached instead."""
    memo: dict[int, object] = {}
    for sub in module.modules():
        for value in vars(sub).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(module, memo)


class EMA:
    """Keeps ``.module``, an averaged copy of a module (eval mode, no gradients); call :meth:`update` after each step.

    With ``warmup`` the decay starts low, ``min(decay, (1 + step) / (10 + step))``, so the average
    does not keep the random initial weights for thousands of steps.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999, *, warmup: bool = False) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.step = 0
        self.module = _copy_module(module).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if self.warmup:
            return min(self.decay, (1 + self.step) / (10 + self.step))
        return self.decay

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards ``module``'s current parameters; copy its buffers."""
        d = self.current_decay()
        live_params = dict(module.named_parameters())
        live_buffers = dict(module.named_buffers())
        ema_params = dict(self.module.named_parameters())
        ema_buffers = dict(self.module.named_buffers())
        if live_params.keys() != ema_params.keys() or live_buffers.keys() != ema_buffers.keys():
            raise ValueError("EMA.update: the module's parameters or buffers differ from those the EMA was made from")
        for name, avg in ema_params.items():
            new = live_params[name].detach().to(device=avg.device, dtype=avg.dtype)
            if avg.is_floating_point():
                avg.lerp_(new, 1.0 - d)
            else:
                avg.copy_(new)
        for name, buf in ema_buffers.items():
            buf.copy_(live_buffers[name])
        self.step += 1

    def state_dict(self) -> dict:
        """The averaged weights and the step count (decay and warmup come from the constructor)."""
        return {"step": self.step, "decay": self.decay, "warmup": self.warmup, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the averaged weights and the step count saved by :meth:`state_dict`."""
        self.module.load_state_dict(state["module"])
        self.step = int(state["step"])
