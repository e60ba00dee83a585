"""A dataset back to image files, for looking at: FOLDER/<origin>/<class>/<row>.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augkit import atomic
from augkit.data.reader import H5Dataset
from augkit.errors import UserError
from augkit.progress import track


def export_folder(path: str | Path, folder: str | Path, *, origin: str | None = None, limit: int | None = None,
                  overwrite: bool = False) -> int:
    """Write the rows of ``path`` (of ``origin`` only, at most ``limit`` per class and origin) as PNG files
    under ``folder``, which appears complete or not at all; returns the number of images written."""
    from PIL import Image

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise UserError(f"{folder}: already exists; pass --force to replace it")
    if limit is not None and limit < 1:
        raise UserError(f"--limit: expected a positive integer, got {limit}")
    ds = H5Dataset(path)
    if origin is not None:
        ds = ds.where(origin=origin)
    if limit is not None and len(ds):
        key = ds.origin.astype(np.int64) * len(ds.class_names) + ds.labels
        keep = np.sort(np.concatenate([np.flatnonzero(key == k)[:limit] for k in np.unique(key)]))
        ds = ds.subset(keep)
    with atomic.folder(folder) as tmp, track("Exporting", len(ds)) as advance:
        tmp.mkdir(parents=True)
        for images, pos in ds.iter_batches(512):
            for img, row, lab, org in zip(images, ds.rows[pos], ds.labels[pos], ds.origin[pos]):
                target = tmp / ds.origins[org] / ds.class_names[lab]
                target.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(target / f"{row:07d}.png")
            advance(len(images))
    return len(ds)
