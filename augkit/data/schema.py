"""Schema 1 of the augkit HDF5 dataset, and the checks every reader runs before trusting a file.

One file per dataset, readable with plain h5py by any other pipeline:

- ``images``  (N, H, W, 3) uint8, chunked along N for random access, uncompressed by default
- ``labels``  (N,) int64 class index into ``attrs["class_names"]``
- ``origin``  (N,) uint8 index into ``attrs["origins"]``; origin 0 is always ``"real"``
- ``parent``  (N,) int64 row of the real image a row derives from, -1 where none
- ``parent2`` optional (N,) int64 second parent row, -1 where none: images made from two real images
  (latent interpolation); present only in files that hold such rows
- ``split``   optional (N,) int8 index into ("train", "val", "test"), -1 unassigned; present only when
  the source itself fixed a split (split folders on disk)
- attrs: ``schema`` = 1, ``class_names`` / ``origins`` / ``provenance`` as JSON, ``fingerprint``
  (sha256 of the content, computed while writing) and ``num_rows``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from augkit.errors import DataError

SCHEMA_VERSION = 1
REAL = "real"
SPLIT_NAMES = ("train", "val", "test")
COLUMNS = ("images", "labels", "origin", "parent")

#: Target bytes per chunk. Measured here: one image per chunk reads fastest at random, chunks of a
#: whole training batch are 100x slower for random batches; a few KiB keeps tiny images efficient.
CHUNK_BYTES = 16 * 1024


def chunk_rows(height: int, width: int) -> int:
    """Rows per HDF5 chunk: as many small images as fit in CHUNK_BYTES, at least one."""
    return max(1, CHUNK_BYTES // (height * width * 3))


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset file holds, read from its attributes and small columns."""

    path: Path
    num_rows: int
    image_size: tuple[int, int]
    class_names: tuple[str, ...]
    origins: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    has_split: bool = False


def _json_attr(path: Path, f: h5py.File, name: str) -> Any:
    if name not in f.attrs:
        raise DataError(f"{path}: attribute '{name}' is missing (schema {SCHEMA_VERSION} requires it)")
    raw = f.attrs[name]
    try:
        return json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: attribute '{name}' is not valid JSON ({exc})") from None


def open_h5(path: str | Path) -> h5py.File:
    """Open a dataset file read-only, turning every way it can fail into a DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an augkit .h5 dataset (import it with `augkit data import`)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot be read as HDF5 ({exc.__class__.__name__}: {exc})") from None


def read_info(f: h5py.File, path: str | Path) -> DatasetInfo:
    """Validate an open file against schema 1 and return its description."""
    path = Path(path)
    if "schema" not in f.attrs:
        raise DataError(
            f"{path}: not an augkit dataset (attribute 'schema' missing); convert it with `augkit data import`"
        )
    schema = int(f.attrs["schema"])
    if schema != SCHEMA_VERSION:
        raise DataError(f"{path}: schema {schema} is not supported (this augkit reads schema {SCHEMA_VERSION})")
    for name in COLUMNS:
        if name not in f:
            raise DataError(f"{path}: dataset '{name}' is missing")
    images = f["images"]
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != "uint8":
        raise DataError(f"{path}: 'images' must be (N, H, W, 3) uint8, found {images.shape} {images.dtype}")
    n = images.shape[0]
    columns = list(COLUMNS[1:]) + [name for name in ("split", "source") if name in f]
    for name in columns:
        if f[name].shape != (n,):
            raise DataError(f"{path}: '{name}' has shape {f[name].shape}, expected ({n},) like 'images'")
    class_names = _json_attr(path, f, "class_names")
    origins = _json_attr(path, f, "origins")
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names) or not class_names:
        raise DataError(f"{path}: attribute 'class_names' must be a non-empty JSON list of strings")
    if not isinstance(origins, list) or not origins or origins[0] != REAL:
        raise DataError(f"{path}: attribute 'origins' must be a JSON list starting with \"{REAL}\"")
    provenance = _json_attr(path, f, "provenance") if "provenance" in f.attrs else {}
    return DatasetInfo(
        path=path,
        num_rows=n,
        image_size=(int(images.shape[1]), int(images.shape[2])),
        class_names=tuple(class_names),
        origins=tuple(origins),
        provenance=provenance,
        fingerprint=str(f.attrs.get("fingerprint", "")),
        has_split="split" in f,
    )
