"""Classifiers for the evaluator: any timm architecture, never downloaded weights.

This machine (and many hospital networks) cannot reach a model hub, so a model starts from random
weights or from a local checkpoint file; asking for hub weights is a clear error, not a hang.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from augkit.errors import UserError

DEFAULT_MODEL = "legacy_xception"  # the thesis's classifier


def _small_input_resnet(layers: list[int], channels: tuple[int, ...], **kwargs) -> nn.Module:
    """A timm ResNet whose stem suits 32-64 px images: one 3x3 stride-2 convolution and no max-pool,
    where ImageNet's 7x7 stride-2 convolution and max-pool would shrink a 32 px image to 1x1 before the
    last stage (CIFAR ResNets make the same change)."""
    from timm.models.resnet import BasicBlock, ResNet

    for key in ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's factory's own
        kwargs.pop(key, None)
    model = ResNet(BasicBlock, layers, channels=channels, **kwargs)
    model.conv1 = nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, 2, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _register_small_input_models() -> None:
    """augkit's own classifiers, registered in timm's registry so that they are timm names like any other."""
    from timm.models import is_model, register_model

    if is_model("resnet18_small") and is_model("resnet10_small"):
        return

    def resnet18_small(pretrained: bool = False, **kwargs) -> nn.Module:
        """ResNet-18 for 32-64 px: 3x3 stride-2 stem (64 channels), no max-pool, half stage widths (32-256)."""
        return _small_input_resnet([2, 2, 2, 2], (32, 64, 128, 256), **kwargs)

    def resnet10_small(pretrained: bool = False, **kwargs) -> nn.Module:
        """ResNet-10 for 32-64 px: as resnet18_small with one block per stage (about 2x its images/s)."""
        return _small_input_resnet([1, 1, 1, 1], (32, 64, 128, 256), **kwargs)

    for fn in (resnet18_small, resnet10_small):
        if not is_model(fn.__name__):
            fn.__module__ = __name__
            register_model(fn)


def check_model_name(name: str) -> None:
    """An error that offers close matches when ``name`` is neither a timm model nor one of augkit's."""
    import timm

    _register_small_input_models()
    if name not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
        raise UserError(f"unknown timm model '{name}'{hint}")


def create_classifier(name: str, num_classes: int, pretrained: str | Path | None = None) -> nn.Module:
    """A timm model with ``num_classes`` outputs; ``pretrained`` may only be a local file."""
    import timm

    check_model_name(name)
    if pretrained in (True, "true", "imagenet", "hub") or (isinstance(pretrained, str) and pretrained.startswith(("hf-hub:", "http://", "https://", "timm/"))):
        raise UserError(
            f"pretrained weights from a hub cannot be downloaded here; download the checkpoint elsewhere and pass "
            f"its local path (pretrained = \"/path/to/{name}.safetensors\"), or train from scratch (leave it unset)")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if pretrained:
        _load_local_weights(model, Path(pretrained))
    return model


def _load_local_weights(model: nn.Module, path: Path) -> None:
    """Load a local checkpoint (safetensors or a weights-only torch file); the classifier head is skipped
    when its shape differs (another number of classes)."""
    if not path.is_file():
        raise UserError(f"{path}: pretrained checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        # torch's refusal of a pickle that needs code runs over several lines: the first says why
        reason = " ".join(str(exc).split("\n")[0].split())[:200]
        raise UserError(f"{path}: cannot be read as a weights checkpoint ({exc.__class__.__name__}: {reason}); "
                        "give a state dict saved with torch.save(model.state_dict()) or a .safetensors file") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors; save one with "
                        "torch.save(model.state_dict(), path)")
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise UserError(f"{path}: no weights match this model's layers (is it the same architecture?)")
    model.load_state_dict(usable, strict=False)
