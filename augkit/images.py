"""Image conversions between storage and networks, and PNG grids: one home for every layer.

Images are stored and streamed as uint8 NHWC (what HDF5 holds and what augmenters return); networks see
float NCHW in [-1, 1] with channels-last memory. The conversion happens on the device, inside the
step, so the host moves 4x fewer bytes than it would as floats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def to_input(batch: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 NHWC on any device -> float NCHW in [-1, 1], channels-last, on ``device``."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().mul_(2 / 255).sub_(1)
    return x.contiguous(memory_format=torch.channels_last)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A network's output in [-1, 1] NCHW -> uint8 NHWC on the CPU (values outside [-1, 1] are clipped)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def save_grid(images: np.ndarray, path: Path | str, columns: int) -> None:
    """A PNG grid of uint8 NHWC images (row-major), with a 1-pixel white gutter."""
    from PIL import Image

    n, h, w, _ = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
