"""Turn images from elsewhere into an augkit dataset: an image folder, a .npz, another HDF5, or "demo".

Every image is centre-cropped to a square, resized to ``size`` and converted to RGB (grayscale,
RGBA, palette and 16-bit images included). Unreadable files are skipped, counted and listed, never
dropped silently; a class left without images is an error, raised before the output file exists.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, UnidentifiedImageError

from augkit.data.schema import SPLIT_NAMES
from augkit.data.writer import DatasetWriter
from augkit.errors import DataError
from augkit.progress import track

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
#: folder names that mean "a split", mapped to augkit's split names
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
BATCH = 256


@dataclass
class ImportReport:
    """What an import did: rows per class, and every file it could not use."""

    path: Path
    class_names: list[str]
    class_counts: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    ignored: int = 0  # files without an image suffix

    @property
    def num_rows(self) -> int:
        return int(sum(self.class_counts))


# -- pixels ------------------------------------------------------------------------------------
def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB of any PIL mode: alpha composited on white, 16-bit and float rescaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() if arr.max() > 0 else 1.0
        image = Image.fromarray((arr / top * 255.0).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def square_resize(image: Image.Image, size: int) -> np.ndarray:
    """Centre-crop to a square, resize to ``size`` x ``size`` (antialiased), as uint8 RGB."""
    image = _to_rgb(image)
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def array_to_image(arr: np.ndarray) -> Image.Image:
    """A PIL image from an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DataError(f"an image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind == "f" and arr.size and arr.max() <= 1.0 and arr.min() >= 0.0:
            arr = arr * 255.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


#: the largest image decoded (width x height): a cell crop is far smaller, and a tiny file that claims
#: more (a "decompression bomb") would take gigabytes of memory to decode
MAX_PIXELS = 64_000_000


def _load_file(path: Path, size: int) -> np.ndarray | str:
    """The resized image, or the reason it could not be read."""
    try:
        with Image.open(path) as image:  # reads the header only: the size is known before decoding
            if image.width * image.height > MAX_PIXELS:
                return (f"{image.width}x{image.height} pixels, more than the {MAX_PIXELS // 1_000_000} megapixels "
                        "augkit decodes (a decompression bomb?)")
            image.load()
            return square_resize(image, size)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"{exc.__class__.__name__}: {exc}".strip()


# -- sources -----------------------------------------------------------------------------------
@dataclass
class _Plan:
    """Everything an import will write, decided before the output file is created."""

    class_names: list[str]
    total: int
    #: (images, labels, split or None, source files or None, source items consumed)
    batches: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str] | None, int]]
    provenance: dict
    with_split: bool = False
    with_source: bool = False  # image folders record each row's file, relative to the folder
    report_skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0


def _folder_plan(root: Path, size: int, workers: int) -> _Plan:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DataError(f"{root}: no class folders found (expected {root}/<class>/*.jpg)")
    split_layout = all(p.name.lower() in SPLIT_ALIASES for p in subdirs)
    split_dirs = [(SPLIT_ALIASES[p.name.lower()], p) for p in subdirs] if split_layout else [(None, root)]
    seen_parts = [part for part, _ in split_dirs]
    if split_layout and len(set(seen_parts)) != len(seen_parts):
        raise DataError(f"{root}: two folders name the same split ({[p.name for _, p in split_dirs]})")

    files: list[tuple[str | None, str, Path]] = []  # (split, class, file)
    ignored = 0
    class_dirs: dict[str, list[Path]] = {}
    for part, base in split_dirs:
        for class_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            class_dirs.setdefault(class_dir.name, []).append(class_dir)
            for f in sorted(class_dir.rglob("*")):
                if not f.is_file() or f.name.startswith("."):
                    continue
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((part, class_dir.name, f))
                else:
                    ignored += 1
    class_names = sorted(class_dirs)
    if not class_names:
        raise DataError(f"{root}: no class folders found (expected {root}/<class>/*.jpg)")
    counts = {name: 0 for name in class_names}
    for _, cls, _ in files:
        counts[cls] += 1
    empty = [name for name, c in counts.items() if c == 0]
    if empty:
        where = ", ".join(str(d) for name in empty for d in class_dirs[name])
        raise DataError(f"class '{empty[0]}' has no images ({where}); remove the folder or add images"
                        + (f" ({len(empty)} empty classes: {empty})" if len(empty) > 1 else ""))
    class_index = {name: k for k, name in enumerate(class_names)}
    skipped: list[tuple[str, str]] = []

    def batches():
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(files), BATCH):
                chunk = files[start:start + BATCH]
                loaded = list(pool.map(lambda item: _load_file(item[2], size), chunk))
                keep = [k for k, res in enumerate(loaded) if not isinstance(res, str)]
                for k, res in enumerate(loaded):
                    if isinstance(res, str):
                        skipped.append((str(chunk[k][2]), res))
                images = np.stack([loaded[k] for k in keep]) if keep else np.empty((0, size, size, 3), np.uint8)
                labels = np.array([class_index[chunk[k][1]] for k in keep], dtype=np.int64)
                split = (np.array([SPLIT_NAMES.index(chunk[k][0]) for k in keep], dtype=np.int8)
                         if split_layout else None)
                sources = [str(chunk[k][2].relative_to(root)) for k in keep]
                yield images, labels, split, sources, len(chunk)

    return _Plan(
        class_names=class_names, total=len(files), batches=batches(), with_split=split_layout, with_source=True,
        provenance={"source": {"kind": "image_folder", "path": str(root.resolve()),
                               "split_folders": sorted({p.name for _, p in split_dirs}) if split_layout else None}},
        report_skipped=skipped, ignored=ignored,
    )


def _array_plan(open_images: Callable[[], AbstractContextManager], num_images: int, labels: np.ndarray,
                class_names: Sequence[str], size: int, split: np.ndarray | None, provenance: dict, what: str) -> _Plan:
    """Images from an array-like that ``open_images()`` yields (opened only while batches are read)."""
    labels = np.asarray(labels).reshape(-1)
    if num_images != len(labels):
        raise DataError(f"{what}: {num_images} images but {len(labels)} labels")
    if len(labels) == 0:
        raise DataError(f"{what}: holds no images")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DataError(f"{what}: labels must be non-negative integers (got {labels.dtype}, min {labels.min()})")
    if len(class_names) <= labels.max():
        raise DataError(f"{what}: labels go up to {labels.max()} but only {len(class_names)} class names are given")
    counts = np.bincount(labels, minlength=len(class_names))
    if (counts == 0).any():
        empty = [class_names[k] for k in np.flatnonzero(counts == 0)]
        raise DataError(f"{what}: class '{empty[0]}' has no images ({len(empty)} empty: {empty})")

    def batches():
        with open_images() as images:
            for start in range(0, len(labels), BATCH):
                chunk = np.asarray(images[start:start + BATCH])
                out = np.stack([square_resize(array_to_image(a), size) for a in chunk])
                yield (out, labels[start:start + BATCH].astype(np.int64),
                       None if split is None else split[start:start + BATCH], None, len(chunk))

    return _Plan(class_names=list(class_names), total=len(labels), batches=batches(), with_split=split is not None,
                 provenance=provenance)


def _npz_plan(path: Path, size: int, class_names: Sequence[str] | None) -> _Plan:
    """A .npz with ``images``/``labels`` or MedMNIST's ``train_images``/``train_labels``/val/test."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot be read as .npz ({exc})") from None
    keys = set(npz.files)
    if {"images", "labels"} <= keys:
        images, labels, split = npz["images"], npz["labels"], None
    elif any(f"{p}_images" in keys for p in SPLIT_NAMES):
        parts = [p for p in SPLIT_NAMES if f"{p}_images" in keys]
        missing = [f"{p}_labels" for p in parts if f"{p}_labels" not in keys]
        if missing:
            raise DataError(f"{path}: key '{missing[0]}' is missing")
        images = np.concatenate([npz[f"{p}_images"] for p in parts])
        labels = np.concatenate([npz[f"{p}_labels"].reshape(-1) for p in parts])
        split = np.concatenate([np.full(len(npz[f"{p}_labels"].reshape(-1)), SPLIT_NAMES.index(p), np.int8)
                                for p in parts])
    else:
        raise DataError(f"{path}: expected arrays 'images' and 'labels' (or MedMNIST's 'train_images', "
                        f"'train_labels', ...); found {sorted(keys)}")
    names = _class_names(path, npz["class_names"].tolist() if "class_names" in keys else None, class_names, labels)
    return _array_plan(lambda: nullcontext(images), len(images), labels, names, size, split,
                       {"source": {"kind": "npz", "path": str(path.resolve())}}, str(path))


def _class_names(path: Path, stored, given, labels) -> list[str]:
    if given is not None:
        return list(given)
    if stored is not None:
        return [str(c) for c in stored]
    top = int(np.asarray(labels).max()) if len(labels) else 0
    return [f"class_{k}" for k in range(top + 1)]


def _h5_plan(path: Path, size: int, class_names: Sequence[str] | None) -> _Plan:
    """Another augkit dataset (real rows only) or any HDF5 with 'images' and 'labels' datasets."""
    from augkit.data.reader import H5Dataset

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot be read as HDF5 ({exc})") from None
    with f:
        is_augkit = "schema" in f.attrs
        if not is_augkit and not {"images", "labels"} <= set(f.keys()):
            raise DataError(f"{path}: expected datasets 'images' and 'labels'; found {sorted(f.keys())}")
    if is_augkit:
        ds = H5Dataset(path).real()

        def batches():
            for images, pos in ds.iter_batches(BATCH):
                out = images if ds.image_size == (size, size) else np.stack(
                    [square_resize(Image.fromarray(a), size) for a in images])
                split = None if ds.split is None else ds.split[pos]
                yield out, ds.labels[pos], split, None, len(out)

        return _Plan(class_names=list(ds.class_names), total=len(ds), batches=batches(),
                     with_split=ds.split is not None,
                     provenance={"source": {"kind": "augkit_h5", "path": str(path.resolve()),
                                            "fingerprint": ds.info.fingerprint}})
    with h5py.File(path, "r") as f:
        stored = json.loads(f.attrs["class_names"]) if "class_names" in f.attrs else None
        labels, num_images = f["labels"][:], len(f["images"])

    @contextmanager
    def open_images():
        with h5py.File(path, "r") as f:
            yield f["images"]

    names = _class_names(path, stored, class_names, labels)
    return _array_plan(open_images, num_images, labels, names, size, None,
                       {"source": {"kind": "h5", "path": str(path.resolve())}}, str(path))


def _demo_plan(size: int, n: int, seed: int) -> _Plan:
    from augkit.data.demo import DEMO_CLASSES, iter_demo

    def batches():
        for images, labels in iter_demo(n, size=size, seed=seed, batch=BATCH):
            yield images, labels, None, None, len(labels)

    return _Plan(class_names=list(DEMO_CLASSES), total=n, batches=batches(),
                 provenance={"source": {"kind": "demo", "n": n, "seed": seed}})


def plan_import(src: str | Path, size: int, *, n: int = 2000, seed: int = 0,
                class_names: Sequence[str] | None = None, workers: int = 4) -> _Plan:
    """Inspect a source and decide what to write; raises DataError before anything is written."""
    if not isinstance(size, int) or not 8 <= size <= 1024:
        raise DataError(f"size: expected an integer between 8 and 1024 pixels, got {size!r}")
    if str(src) == "demo":
        return _demo_plan(size, n, seed)
    path = Path(src)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _folder_plan(path, size, workers)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz_plan(path, size, class_names)
    if suffix in (".h5", ".hdf5"):
        return _h5_plan(path, size, class_names)
    raise DataError(f"{path}: unknown source type '{suffix}'; expected an image folder, a .npz, a .h5 or 'demo'")


def import_source(src: str | Path, out: str | Path, *, size: int = 64, n: int = 2000, seed: int = 0,
                  class_names: Sequence[str] | None = None, overwrite: bool = False,
                  workers: int = 4) -> ImportReport:
    """Import ``src`` into a new dataset at ``out``; nothing exists at ``out`` unless it all worked."""
    plan = plan_import(src, size, n=n, seed=seed, class_names=class_names, workers=workers)
    counts = np.zeros(len(plan.class_names), dtype=np.int64)
    provenance = {**plan.provenance, "image_size": size}
    writer = DatasetWriter(out, class_names=plan.class_names, image_size=size, provenance=provenance,
                           with_split=plan.with_split, with_source=plan.with_source, overwrite=overwrite,
                           expected_rows=plan.total)
    with writer, track(f"Importing {Path(str(src)).name}", plan.total) as advance:
        for images, labels, split, sources, consumed in plan.batches:
            writer.append(images, labels, split=split, source=sources)
            counts += np.bincount(labels, minlength=len(counts))
            advance(consumed)
        empty = [plan.class_names[k] for k in np.flatnonzero(counts == 0)]
        if empty:
            raise DataError(f"class '{empty[0]}' has no readable images ({len(plan.report_skipped)} files skipped, "
                            f"e.g. {plan.report_skipped[0][0] if plan.report_skipped else '-'})")
        writer.provenance["skipped_files"] = len(plan.report_skipped)
        writer.provenance["skipped"] = [list(s) for s in plan.report_skipped[:100]]
        writer.provenance["ignored_files"] = plan.ignored
    return ImportReport(path=Path(out), class_names=plan.class_names, class_counts=counts.tolist(),
                        skipped=plan.report_skipped, ignored=plan.ignored)
