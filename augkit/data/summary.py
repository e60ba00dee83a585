"""What a dataset holds, as plain data (`augkit data info`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augkit.data.reader import H5Dataset
from augkit.data.schema import SPLIT_NAMES


def dataset_summary(path: str | Path) -> dict:
    """Counts per class and origin, image size, fingerprint, fixed split and provenance of a dataset."""
    ds = H5Dataset(path)
    counts = np.zeros((len(ds.class_names), len(ds.origins)), dtype=np.int64)
    np.add.at(counts, (ds.labels, ds.origin), 1)
    info = {
        "path": str(path), "rows": len(ds), "image_size": list(ds.image_size), "fingerprint": ds.info.fingerprint,
        "origins": {o: int(counts[:, k].sum()) for k, o in enumerate(ds.origins)},
        "classes": {c: {o: int(counts[i, k]) for k, o in enumerate(ds.origins)} for i, c in enumerate(ds.class_names)},
        "provenance": ds.provenance,
    }
    if ds.split is not None:
        info["fixed_split"] = {name: int((ds.split == k).sum()) for k, name in enumerate(SPLIT_NAMES)}
    return info
