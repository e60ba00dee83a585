"""Training data in memory when it fits, streamed from HDF5 when it does not.

Trainers read batches of positions. When a training set fits the memory budget it is read once into
RAM (the fastest path on a CPU: a batch is one numpy gather); when it does not, batches are read from
the lazy :class:`~augkit.data.reader.H5Dataset` views by DataLoader workers, a few batches ahead,
so resident memory stays at a few batches however large the file is.

The budget is explicit: ``AUGKIT_MEMORY_BUDGET`` (bytes, or with a unit: ``8GB``, ``512MiB``), else a quarter
of this machine's physical memory (room for the models, a copy while arms are assembled, and other
jobs) shared by the processes torchrun started on it. ``AUGKIT_IN_MEMORY``
= ``1``/``0`` forces one path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from augkit import distributed
from augkit.data.reader import ImageDataset
from augkit.errors import UserError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str, what: str = "AUGKIT_MEMORY_BUDGET") -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise UserError(f"{what}: '{text}' is not a size; write e.g. 8GB, 512MiB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def memory_budget() -> int:
    """Bytes of images one process may hold in memory."""
    env = os.environ.get("AUGKIT_MEMORY_BUDGET")
    if env:
        return parse_bytes(env)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total // 4 // max(1, distributed.local_world_size())


def fits_in_memory(nbytes: int) -> bool:
    """The explicit in-memory-or-stream decision (see the module docstring)."""
    forced = os.environ.get("AUGKIT_IN_MEMORY")
    if forced is not None and forced.strip() != "":
        if forced.strip() not in ("0", "1"):
            raise UserError(f"AUGKIT_IN_MEMORY: expected 0 or 1, got '{forced}'")
        return forced.strip() == "1"
    return nbytes <= memory_budget()


def image_bytes(ds: ImageDataset | Sequence[ImageDataset]) -> int:
    parts = [ds] if isinstance(ds, ImageDataset) else list(ds)
    return sum(len(p) * p.image_size[0] * p.image_size[1] * 3 for p in parts)


def loader_workers() -> int:
    """DataLoader workers per process when streaming (``AUGKIT_LOADER_WORKERS``; default 2)."""
    return int(os.environ.get("AUGKIT_LOADER_WORKERS", "2"))


class StackedImages(Dataset):
    """Several image views as one dataset, each with its own labels (e.g. real rows plus synthetic shards
    whose classes map onto the real ones). Reads stay lazy; ``read`` fetches a batch with one sorted read
    per view."""

    def __init__(self, parts: Sequence[tuple[ImageDataset, np.ndarray]]):
        if not parts:
            raise ValueError("StackedImages needs at least one part")
        self.parts = [view for view, _ in parts]
        self.labels = np.concatenate([np.asarray(lab, np.int64) for _, lab in parts])
        self.offsets = np.cumsum([0] + [len(v) for v in self.parts])
        self.image_size = self.parts[0].image_size

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        h, w = self.image_size
        out = np.empty((len(positions), h, w, 3), np.uint8)
        which = np.searchsorted(self.offsets, positions, side="right") - 1
        for k in np.unique(which):
            mask = which == k
            out[mask] = self.parts[k].read(positions[mask] - self.offsets[k])
        return out

    def __getitem__(self, i: int):
        return torch.from_numpy(self.read([i])[0]), int(self.labels[i])


class _Batches(Dataset):
    """Item = a whole batch: an array of positions -> (uint8 NHWC tensor, int64 labels)."""

    def __init__(self, source, labels: np.ndarray):
        self.source, self.labels = source, np.asarray(labels)

    def __getitem__(self, positions: np.ndarray):
        positions = np.asarray(positions, dtype=np.int64)
        return torch.from_numpy(self.source.read(positions)), torch.from_numpy(self.labels[positions])


def stream_batches(source, labels: np.ndarray, batches: Iterable[np.ndarray], *, workers: int | None = None,
                   prefetch: int = 4, pin: bool = False) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Read the given batches of positions from a lazy ``source`` (anything with ``read(positions)``) in
    DataLoader workers, ahead of use; yields (uint8 NHWC, labels) in the order of ``batches``."""
    workers = loader_workers() if workers is None else workers
    return DataLoader(_Batches(source, labels), sampler=batches, batch_size=None, num_workers=workers,
                      prefetch_factor=prefetch if workers > 0 else None, persistent_workers=False,
                      pin_memory=pin)
