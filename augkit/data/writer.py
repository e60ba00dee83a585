"""Streaming, atomic writer of augkit datasets.

Rows are appended batch by batch, so no dataset has to fit in memory, into a temporary file beside
the target; the target appears (by an atomic rename) only when ``close()`` succeeds. An exception
inside ``with DatasetWriter(...)`` or a terminated process leaves no file at the target path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from augkit.data.schema import REAL, SCHEMA_VERSION, SPLIT_NAMES, chunk_rows
from augkit.errors import DataError


#: rows whose small columns (labels, origin, parents, split) are held in memory before being written:
#: about 1.7 MB at most
PENDING_ROWS = 65536


#: Batches of at least PARALLEL_HASH_BYTES are hashed in a background thread while HDF5 writes them,
#: on machines with at least PARALLEL_HASH_MIN_CORES cores: hashlib releases the GIL, so on a free core
#: SHA-256 (~7 µs per 64-px image) hides behind the write (~14 µs); measured 22 -> 15 µs per image with
#: a core free. With 2 cores, generating on the CPU keeps both busy (torch's threads and the write-behind
#: thread) and a third thread measured no better, so there the hash stays in line.
PARALLEL_HASH_BYTES = 1 << 20
PARALLEL_HASH_MIN_CORES = 4
_hash_pool: ThreadPoolExecutor | None = None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _background_hasher(nbytes: int) -> ThreadPoolExecutor | None:
    """The hashing thread for a batch of ``nbytes`` image bytes, or None to hash in line."""
    global _hash_pool
    if nbytes < PARALLEL_HASH_BYTES or _usable_cores() < PARALLEL_HASH_MIN_CORES:
        return None
    if _hash_pool is None:
        _hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="augkit-hash")
    return _hash_pool


def _as_column(value: int | np.ndarray | Sequence[int], n: int, name: str, dtype: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise DataError(f"{name}: expected {n} values (one per image), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name}: expected integers, got {arr.dtype}")
    return arr.astype(dtype, copy=False)


def refuse_existing(path: Path, overwrite: bool) -> None:
    """The writer's rule for an existing target, for callers that must apply it before long work."""
    if path.exists() and not overwrite:
        raise DataError(f"{path}: already exists (choose another path or allow overwriting)")


class DatasetWriter:
    """Write a schema-1 dataset: ``with DatasetWriter(path, ...) as w: w.append(images, labels)``.

    ``origins`` names what makes rows (``"real"`` first); ``append(..., origin=k)`` tags rows with the
    k-th. ``provenance`` is any JSON-able dict; augkit's version and the time are added to it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        class_names: Sequence[str],
        image_size: int | tuple[int, int],
        origins: Sequence[str] = (REAL,),
        provenance: dict[str, Any] | None = None,
        with_split: bool = False,
        with_source: bool = False,
        with_parent2: bool = False,
        overwrite: bool = False,
        compression: str | None = None,
        expected_rows: int = 0,
    ):
        from augkit import __version__, atomic

        self.path = Path(path)
        refuse_existing(self.path, overwrite)
        if not self.path.parent.is_dir():
            raise DataError(f"{self.path.parent}: output folder does not exist")
        if not class_names or len(set(class_names)) != len(class_names):
            raise DataError(f"class names must be non-empty and unique, got {list(class_names)}")
        origins = list(origins)
        if not origins or origins[0] != REAL or len(set(origins)) != len(origins):
            raise DataError(f"origins must be unique and start with '{REAL}', got {origins}")
        if len(origins) > 255:
            raise DataError("at most 255 origins fit in one dataset")
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.image_size = (int(h), int(w))
        self.class_names = list(class_names)
        self.origins = origins
        self.provenance = dict(provenance or {})
        self.provenance.setdefault("augkit", __version__)
        self.provenance.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self.with_split = with_split
        self.with_source = with_source
        self.with_parent2 = with_parent2
        self.num_rows = 0
        self._hash = hashlib.sha256()
        self._tmp = atomic.fresh_partial(self.path)  # a killed writer's leftover is removed here
        # libver v110: attributes may exceed 64 KiB (long provenance); readable by HDF5 >= 1.10
        self._file = h5py.File(self._tmp, "w", libver=("v110", "latest"))
        capacity = max(int(expected_rows), 0)
        rows = chunk_rows(h, w)
        f = self._file
        f.create_dataset(
            "images", shape=(capacity, h, w, 3), maxshape=(None, h, w, 3), dtype="uint8",
            chunks=(rows, h, w, 3), compression=compression,
        )
        small = max(1024, rows)
        f.create_dataset("labels", shape=(capacity,), maxshape=(None,), dtype="int64", chunks=(small,))
        f.create_dataset("origin", shape=(capacity,), maxshape=(None,), dtype="uint8", chunks=(small,))
        f.create_dataset("parent", shape=(capacity,), maxshape=(None,), dtype="int64", chunks=(small,))
        if with_parent2:
            f.create_dataset("parent2", shape=(capacity,), maxshape=(None,), dtype="int64", chunks=(small,))
        if with_split:
            f.create_dataset("split", shape=(capacity,), maxshape=(None,), dtype="int8", chunks=(small,))
            f["split"].attrs["names"] = json.dumps(list(SPLIT_NAMES))
        if with_source:
            f.create_dataset("source", shape=(capacity,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(small,))
        self._capacity = capacity
        # h5py looks a dataset up by name in about 50 µs: once here, not five times per append
        self._ds = {name: f[name] for name in self._columns()}
        # the small per-row columns wait in memory and go to the file in blocks: an HDF5 write costs
        # about 100 µs however few values it carries, which per 256-image batch was 4 µs per image
        self._pending: dict[str, list[np.ndarray]] = {
            name: [] for name in self._columns() if name not in ("images", "source")}
        self._pending_start = 0
        self._closed = False

    # -- writing ---------------------------------------------------------------------------
    def append(
        self,
        images: np.ndarray,
        labels: int | np.ndarray | Sequence[int],
        *,
        origin: int | np.ndarray = 0,
        parent: int | np.ndarray = -1,
        split: int | np.ndarray | None = None,
        source: Sequence[str] | None = None,
        parent2: int | np.ndarray = -1,
    ) -> None:
        """Append a batch of rows; checks everything before touching the file. ``parent2`` (a second
        parent row, for images made from two) is kept only by writers made with ``with_parent2``."""
        if self._closed:
            raise RuntimeError("writer is closed")
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.dtype != np.uint8 or images.shape[1:] != (*self.image_size, 3):
            raise DataError(
                f"images: expected (n, {self.image_size[0]}, {self.image_size[1]}, 3) uint8, "
                f"got {images.shape} {images.dtype}"
            )
        n = images.shape[0]
        if n == 0:
            return
        labels = _as_column(labels, n, "labels", "int64")
        origin = _as_column(origin, n, "origin", "int64")
        parent = _as_column(parent, n, "parent", "int64")
        if labels.min() < 0 or labels.max() >= len(self.class_names):
            raise DataError(f"labels: values must lie in [0, {len(self.class_names)}), got {labels.min()}..{labels.max()}")
        if origin.min() < 0 or origin.max() >= len(self.origins):
            raise DataError(f"origin: values must lie in [0, {len(self.origins)}), got {origin.min()}..{origin.max()}")
        if parent.min() < -1:
            raise DataError("parent: values must be a row index or -1")
        parent2 = _as_column(parent2, n, "parent2", "int64")
        if parent2.min() < -1:
            raise DataError("parent2: values must be a row index or -1")
        if not self.with_parent2 and (parent2 >= 0).any():
            raise DataError("parent2: this writer keeps one parent per row; create it with with_parent2=True")
        if (split is None) == self.with_split:
            raise DataError("split: give it on every append when the writer has with_split=True, never otherwise")
        if (source is None) == self.with_source:
            raise DataError("source: give it on every append when the writer has with_source=True, never otherwise")
        if source is not None and len(source) != n:
            raise DataError(f"source: expected {n} file names, got {len(source)}")
        columns = {"labels": labels, "origin": origin.astype("uint8"), "parent": parent}
        if self.with_parent2:
            columns["parent2"] = parent2
        if split is not None:
            columns["split"] = _as_column(split, n, "split", "int8")
        hashed = [np.ascontiguousarray(a) for a in (images, labels, origin, parent) + ((parent2,) if self.with_parent2 else ())]
        hasher = _background_hasher(images.nbytes)
        hashing = hasher.submit(self._update_hash, hashed) if hasher is not None else None
        try:
            start, stop = self.num_rows, self.num_rows + n
            self._reserve(stop)
            self._ds["images"][start:stop] = images
            if source is not None:
                self._ds["source"][start:stop] = list(source)
        finally:  # the hash is done before append returns: the caller may reuse its arrays, and batches hash in order
            if hashing is not None:
                hashing.result()
        if hashing is None:
            self._update_hash(hashed)
        for name, values in columns.items():
            self._pending[name].append(values)
        self.num_rows = stop
        if stop - self._pending_start >= PENDING_ROWS:
            self._flush()

    def _update_hash(self, arrays: list[np.ndarray]) -> None:
        for arr in arrays:
            self._hash.update(arr)  # the buffer itself: no copy as bytes

    def _flush(self) -> None:
        """Write the buffered small columns to the file."""
        start, stop = self._pending_start, self.num_rows
        if stop > start:
            for name, values in self._pending.items():
                self._ds[name][start:stop] = np.concatenate(values)
                values.clear()
        self._pending_start = stop

    def _reserve(self, rows: int) -> None:
        if rows <= self._capacity:
            return
        capacity = max(rows, int(self._capacity * 1.5) + 1024)
        for ds in self._ds.values():
            ds.resize(capacity, axis=0)
        self._capacity = capacity

    def _columns(self) -> list[str]:
        return (["images", "labels", "origin", "parent"] + ["parent2"] * self.with_parent2 + ["split"] * self.with_split
                + ["source"] * self.with_source)

    # -- finishing -------------------------------------------------------------------------
    def close(self) -> Path:
        """Finish the file and move it into place atomically; returns the target path."""
        if self._closed:
            return self.path
        try:
            f = self._file
            self._flush()
            for ds in self._ds.values():
                ds.resize(self.num_rows, axis=0)
            self._hash.update(json.dumps([self.class_names, self.origins]).encode())
            f.attrs["schema"] = SCHEMA_VERSION
            f.attrs["class_names"] = json.dumps(self.class_names)
            f.attrs["origins"] = json.dumps(self.origins)
            f.attrs["provenance"] = json.dumps(self.provenance, default=str)
            f.attrs["fingerprint"] = self._hash.hexdigest()
            f.attrs["num_rows"] = self.num_rows
            f.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the target path is left untouched."""
        self._closed = True
        try:
            self._file.close()
        except Exception:  # noqa: BLE001 - closing a broken handle must not hide the real error
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
