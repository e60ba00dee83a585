"""Reading augkit datasets: a lazy torch Dataset over an HDF5 file, and an in-memory twin.

Both share one interface (:class:`ImageDataset`) that augmenters and the evaluator rely on:
``len(ds)``, ``ds[i] -> (uint8 HWC tensor, label)``, ``ds.labels``, ``ds.rows`` (each item's row in
the source file, which becomes a synthetic image's ``parent``), ``ds.read(positions)`` for a batch,
``ds.subset(positions)`` and ``ds.where(origin=..., split=...)`` for views.

The HDF5 reader never holds images in memory: only the small per-row columns are read eagerly.
Each process opens its own file handle on first use, so DataLoader workers (fork or spawn) are safe.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from augkit.data.schema import REAL, SPLIT_NAMES, DatasetInfo, open_h5, read_info
from augkit.errors import DataError


def _runs(sorted_rows: np.ndarray) -> list[tuple[int, int, int]]:
    """Split sorted row ids into maximal runs of consecutive rows: (start_pos, row_start, length)."""
    if len(sorted_rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(sorted_rows)]])
    return [(int(s), int(sorted_rows[s]), int(e - s)) for s, e in zip(starts, ends)]


class ImageDataset(Dataset):
    """Common behaviour of the HDF5 and in-memory datasets; subclasses provide ``_read_storage``."""

    class_names: tuple[str, ...]
    origins: tuple[str, ...]
    image_size: tuple[int, int]

    # storage-indexed columns, shared between views; _sel picks this view's storage indices
    _labels: np.ndarray
    _origin: np.ndarray
    _parent: np.ndarray
    _split: np.ndarray | None
    _row_ids: np.ndarray
    _sel: np.ndarray

    # -- columns of this view ----------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        return self._labels[self._sel]

    @property
    def origin(self) -> np.ndarray:
        return self._origin[self._sel]

    @property
    def parent(self) -> np.ndarray:
        return self._parent[self._sel]

    @property
    def parent2(self) -> np.ndarray:
        """Second parent row (images made from two real images), -1 where none."""
        p2 = getattr(self, "_parent2", None)
        return np.full(len(self._sel), -1, np.int64) if p2 is None else p2[self._sel]

    @property
    def has_parent2(self) -> bool:
        return getattr(self, "_parent2", None) is not None

    @property
    def split(self) -> np.ndarray | None:
        """Split code per item (index into SPLIT_NAMES, -1 unassigned) when the source fixed one."""
        return None if self._split is None else self._split[self._sel]

    @property
    def rows(self) -> np.ndarray:
        """Each item's row in the source dataset: what a derived image records as its parent."""
        return self._row_ids[self._sel]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    # -- torch Dataset -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._sel)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        storage = int(self._sel[i])
        image = self._read_storage(np.array([storage]))[0]
        return torch.from_numpy(image), int(self._labels[storage])

    def __getitems__(self, positions: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched fetch used by DataLoader: one sorted read per batch instead of one per item."""
        images = torch.from_numpy(self.read(positions))
        labels = self._labels[self._sel[np.asarray(positions, dtype=np.int64)]]
        return [(images[k], int(labels[k])) for k in range(len(labels))]

    # -- batches -------------------------------------------------------------------------------
    def read(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images at these positions of the view, (k, H, W, 3) uint8, in the order asked."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < -len(self) or positions.max() >= len(self)):
            raise IndexError(f"positions out of range for {len(self)} items")
        return self._read_storage(self._sel[positions])

    def iter_batches(self, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, slice]]:
        """Stream the whole view in order: yields (images, slice of positions)."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield self.read(np.arange(start, stop)), slice(start, stop)

    # -- views ---------------------------------------------------------------------------------
    def subset(self, positions: Sequence[int] | np.ndarray) -> "ImageDataset":
        """A view of some items of this view; shares storage, reads nothing."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"positions out of range for {len(self)} items")
        view = copy.copy(self)
        view._sel = self._sel[positions]
        view._on_new_view()
        return view

    def where(self, *, origin: str | None = None, split: str | None = None) -> "ImageDataset":
        """A view of the items with this origin name and/or fixed split name."""
        mask = np.ones(len(self), dtype=bool)
        if origin is not None:
            if origin not in self.origins:
                raise DataError(f"origin '{origin}' not in this dataset (it has {list(self.origins)})")
            mask &= self.origin == self.origins.index(origin)
        if split is not None:
            if split not in SPLIT_NAMES:
                raise DataError(f"split must be one of {list(SPLIT_NAMES)}, got '{split}'")
            if self._split is None:
                raise DataError("this dataset has no fixed split; make one with augkit.data.stratified_split")
            mask &= self.split == SPLIT_NAMES.index(split)
        return self.subset(np.flatnonzero(mask))

    def real(self) -> "ImageDataset":
        return self.where(origin=REAL)

    def _on_new_view(self) -> None:
        """Hook for subclasses whose views must not share per-process state."""

    def _read_storage(self, storage: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ArrayDataset(ImageDataset):
    """A dataset held in memory: for small sets, tests and generated batches."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | Sequence[int],
        class_names: Sequence[str],
        *,
        origins: Sequence[str] = (REAL,),
        origin: np.ndarray | None = None,
        parent: np.ndarray | None = None,
        rows: np.ndarray | None = None,
        split: np.ndarray | None = None,
        parent2: np.ndarray | None = None,
    ):
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise DataError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
        n = len(images)
        self._images = images
        self._labels = np.asarray(labels, dtype=np.int64)
        if self._labels.shape != (n,):
            raise DataError(f"labels: expected {n} values, got shape {self._labels.shape}")
        self.class_names = tuple(class_names)
        if n and (self._labels.min() < 0 or self._labels.max() >= len(self.class_names)):
            raise DataError(f"labels must lie in [0, {len(self.class_names)})")
        self.origins = tuple(origins)
        self.image_size = (int(images.shape[1]), int(images.shape[2]))
        self._origin = np.zeros(n, np.uint8) if origin is None else np.asarray(origin, np.uint8)
        self._parent = np.full(n, -1, np.int64) if parent is None else np.asarray(parent, np.int64)
        self._parent2 = None if parent2 is None else np.asarray(parent2, np.int64)
        self._row_ids = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        self._split = None if split is None else np.asarray(split, np.int8)
        self._sel = np.arange(n, dtype=np.int64)

    @property
    def images(self) -> np.ndarray:
        """The images of this view as one array (a copy for views, the array itself otherwise)."""
        if len(self._sel) == len(self._images) and np.array_equal(self._sel, np.arange(len(self._images))):
            return self._images
        return self._images[self._sel]

    def _read_storage(self, storage: np.ndarray) -> np.ndarray:
        return self._images[storage]


class H5Dataset(ImageDataset):
    """A lazy view of an augkit HDF5 dataset; ``H5Dataset(path)`` holds no images in memory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open_h5(self.path) as f:
            self.info: DatasetInfo = read_info(f, self.path)
            self._labels = f["labels"][:].astype(np.int64)
            self._origin = f["origin"][:]
            self._parent = f["parent"][:].astype(np.int64)
            self._parent2 = f["parent2"][:].astype(np.int64) if "parent2" in f else None
            self._split = f["split"][:] if self.info.has_split else None
        info = self.info
        if len(self._labels) and (self._labels.min() < 0 or self._labels.max() >= len(info.class_names)):
            raise DataError(f"{self.path}: 'labels' holds values outside [0, {len(info.class_names)})")
        if len(self._origin) and self._origin.max() >= len(info.origins):
            raise DataError(f"{self.path}: 'origin' holds values outside [0, {len(info.origins)})")
        self.class_names = info.class_names
        self.origins = info.origins
        self.image_size = info.image_size
        self._row_ids = np.arange(info.num_rows, dtype=np.int64)
        self._sel = self._row_ids
        self._file = None
        self._pid = None

    @property
    def provenance(self) -> dict:
        return self.info.provenance

    def _images(self):
        # A handle opened before a fork must not be used by the child: reopen per process.
        if self._file is None or self._pid != os.getpid():
            self._file = open_h5(self.path)
            self._pid = os.getpid()
        return self._file["images"]

    def _read_storage(self, storage: np.ndarray) -> np.ndarray:
        h, w = self.image_size
        out = np.empty((len(storage), h, w, 3), dtype=np.uint8)
        if len(storage) == 0:
            return out
        order = np.argsort(storage, kind="stable")
        sorted_rows = storage[order]
        unique_rows = np.unique(sorted_rows)
        buf = out if len(unique_rows) == len(storage) else np.empty((len(unique_rows), h, w, 3), np.uint8)
        images = self._images()
        long_run = max(1, (1 << 20) // (h * w * 3))  # rows in 1 MiB
        for pos, row, length in _runs(unique_rows):
            if length < long_run:
                # h5py's fast path for plain slices costs ~10 us a call, read_direct ~60 us (its
                # selections are built in Python): 5x faster for random batches, at one small copy
                buf[pos:pos + length] = images[row:row + length]
            else:
                images.read_direct(buf, np.s_[row:row + length], np.s_[pos:pos + length])
        if buf is out:
            # rows were read in sorted order; put them back in the order asked
            result = np.empty_like(out)
            result[order] = out
            return result
        inverse = np.searchsorted(unique_rows, storage)
        return buf[inverse]

    @property
    def has_source(self) -> bool:
        return "source" in self._images().file

    def read_sources(self, positions: Sequence[int] | np.ndarray) -> list[str]:
        """The file each item was imported from ("" for rows not imported from files)."""
        if not self.has_source:
            return [""] * len(positions)
        column = self._images().file["source"]
        rows = self._sel[np.asarray(positions, dtype=np.int64)]
        order = np.argsort(rows)
        values = column[rows[order]] if len(np.unique(rows)) == len(rows) else [column[r] for r in rows[order]]
        out = [""] * len(rows)
        for k, v in zip(order, values):
            out[k] = v.decode() if isinstance(v, bytes) else str(v)
        return out

    def load(self) -> ArrayDataset:
        """Read this view's images into memory (for small sets); columns and row ids are kept."""
        images = self._read_storage(self._sel)
        return ArrayDataset(
            images, self.labels, self.class_names, origins=self.origins, origin=self.origin,
            parent=self.parent, rows=self.rows, split=self.split,
            parent2=self.parent2 if self.has_parent2 else None,
        )

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def _on_new_view(self) -> None:
        self._file = None  # a view opens its own handle; closing one never breaks another
        self._pid = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"H5Dataset('{self.path}', {len(self)} of {self.info.num_rows} rows, {self.image_size[0]}px)"


def open_dataset(path: str | Path) -> H5Dataset:
    """Open an augkit dataset lazily (alias of ``H5Dataset(path)`` that reads better in pipelines)."""
    return H5Dataset(path)
