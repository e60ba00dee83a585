"""Importers: image folders (with and without split folders), .npz, HDF5, demo; and their errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from augkit.data import H5Dataset, import_source, stratified_split
from augkit.errors import DataError
from conftest import write_dataset


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


@pytest.fixture
def messy_folder(tmp_path):
    """Three classes in every format the issue names, plus a corrupt file and a stray text file."""
    root = tmp_path / "cells"
    rng = np.random.default_rng(0)
    for k in range(3):
        _save(root / "blast" / f"rgb{k}.png", rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    _save(root / "blast" / "wide.jpg", rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))  # mixed sizes
    _save(root / "lympho" / "gray.png", rng.integers(0, 256, (24, 24), dtype=np.uint8))  # grayscale
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:8, ..., 3] = 255  # top half opaque red, bottom half fully transparent
    _save(root / "lympho" / "alpha.png", rgba)
    pal = Image.fromarray(rng.integers(0, 256, (18, 18, 3), dtype=np.uint8)).convert("P")
    (root / "mono").mkdir()
    pal.save(root / "mono" / "palette.bmp")
    _save(root / "mono" / "t.tif", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    (root / "mono" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff this is not really a jpeg")
    (root / "mono" / "notes.txt").write_text("not an image")
    return root


def test_folder_import_converts_everything_and_lists_what_it_skipped(messy_folder, tmp_path):
    report = import_source(messy_folder, tmp_path / "out.h5", size=16)
    assert report.class_names == ["blast", "lympho", "mono"]
    assert report.class_counts == [4, 2, 2]
    assert [s[0].endswith("corrupt.jpg") for s in report.skipped] == [True]
    assert report.ignored == 1
    ds = H5Dataset(tmp_path / "out.h5")
    images = ds.read(np.arange(len(ds)))
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
    assert ds.provenance["skipped_files"] == 1 and "corrupt.jpg" in ds.provenance["skipped"][0][0]
    with h5py.File(tmp_path / "out.h5") as f:
        sources = [s.decode() for s in f["source"][:]]
    alpha = images[sources.index("lympho/alpha.png")]
    assert alpha[2, 8].tolist() == [200, 0, 0]  # opaque part keeps its colour
    assert alpha[13, 8].tolist() == [255, 255, 255]  # transparent part is composited on white
    gray = images[sources.index("lympho/gray.png")]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def test_centre_crop_drops_the_sides_of_wide_images(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10] = (255, 0, 0)
    img[:, 10:30] = (0, 255, 0)
    img[:, 30:] = (0, 0, 255)
    _save(tmp_path / "src" / "a" / "wide.png", img)
    import_source(tmp_path / "src", tmp_path / "out.h5", size=10)
    out = H5Dataset(tmp_path / "out.h5").read([0])[0]
    assert (out == (0, 255, 0)).all()


def test_split_folders_become_a_fixed_split(tmp_path):
    rng = np.random.default_rng(0)
    for part, n in [("train", 4), ("val", 2), ("Test", 2)]:
        for cls in ("a", "b"):
            for i in range(n):
                _save(tmp_path / "src" / part / cls / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    import_source(tmp_path / "src", tmp_path / "out.h5", size=8)
    ds = H5Dataset(tmp_path / "out.h5")
    assert ds.class_names == ("a", "b") and len(ds) == 16
    split = stratified_split(ds)
    assert split.method == "fixed" and (len(split.train), len(split.val), len(split.test)) == (8, 4, 4)
    assert len(ds.where(split="val")) == 4


def test_empty_class_is_an_error_and_writes_nothing(tmp_path):
    _save(tmp_path / "src" / "a" / "x.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "src" / "b").mkdir()
    with pytest.raises(DataError, match="class 'b' has no images"):
        import_source(tmp_path / "src", tmp_path / "out.h5", size=8)
    assert not (tmp_path / "out.h5").exists()


def test_class_with_only_unreadable_files_is_an_error(tmp_path):
    _save(tmp_path / "src" / "a" / "x.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "src" / "b").mkdir()
    (tmp_path / "src" / "b" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="class 'b' has no readable images"):
        import_source(tmp_path / "src", tmp_path / "out.h5", size=8)
    assert list(tmp_path.glob("*.h5")) == [] and list(tmp_path.glob(".*partial")) == []


def test_npz_plain_and_medmnist_layouts(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "plain.npz", images=rng.integers(0, 256, (6, 28, 28, 3), dtype=np.uint8),
             labels=np.array([0, 1, 2, 0, 1, 2]))
    import_source(tmp_path / "plain.npz", tmp_path / "plain.h5", size=16, class_names=["x", "y", "z"])
    plain = H5Dataset(tmp_path / "plain.h5")
    assert plain.class_names == ("x", "y", "z") and plain.image_size == (16, 16)
    np.savez(tmp_path / "med.npz",
             train_images=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), train_labels=np.array([[0], [1], [0], [1]]),
             test_images=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), test_labels=np.array([[0], [1]]))
    import_source(tmp_path / "med.npz", tmp_path / "med.h5", size=28)
    med = H5Dataset(tmp_path / "med.h5")
    assert med.class_names == ("class_0", "class_1") and len(med) == 6
    assert len(med.where(split="test")) == 2 and len(med.where(split="val")) == 0


def test_npz_errors_name_the_problem(tmp_path):
    np.savez(tmp_path / "bad.npz", pictures=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="bad.npz: expected arrays 'images' and 'labels'"):
        import_source(tmp_path / "bad.npz", tmp_path / "o.h5", size=8)
    np.savez(tmp_path / "short.npz", images=np.zeros((3, 8, 8, 3), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        import_source(tmp_path / "short.npz", tmp_path / "o.h5", size=8)
    np.savez(tmp_path / "gap.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.array([0, 2]))
    with pytest.raises(DataError, match="class 'class_1' has no images"):
        import_source(tmp_path / "gap.npz", tmp_path / "o.h5", size=8)
    assert not (tmp_path / "o.h5").exists()


def test_hdf5_sources_augkit_and_plain(tmp_path):
    src = write_dataset(tmp_path / "src.h5", counts=(3, 2), size=16)
    import_source(src, tmp_path / "small.h5", size=8)
    small = H5Dataset(tmp_path / "small.h5")
    assert small.image_size == (8, 8) and small.class_names == ("class0", "class1") and len(small) == 5
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["images"] = np.zeros((3, 12, 12, 3), np.uint8)
        f["labels"] = np.array([1, 0, 1])
    import_source(tmp_path / "plain.h5", tmp_path / "out.h5", size=12)
    assert H5Dataset(tmp_path / "out.h5").class_names == ("class_0", "class_1")


def test_unknown_sources_and_sizes_are_refused(tmp_path):
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(DataError, match="data.csv: unknown source type"):
        import_source(tmp_path / "data.csv", tmp_path / "o.h5")
    with pytest.raises(DataError, match="no such file or folder"):
        import_source(tmp_path / "missing", tmp_path / "o.h5")
    with pytest.raises(DataError, match="size"):
        import_source("demo", tmp_path / "o.h5", size=4)


def test_demo_import_is_deterministic(tmp_path):
    import_source("demo", tmp_path / "a.h5", size=16, n=120, seed=3)
    import_source("demo", tmp_path / "b.h5", size=16, n=120, seed=3)
    a, b = H5Dataset(tmp_path / "a.h5"), H5Dataset(tmp_path / "b.h5")
    assert a.info.fingerprint == b.info.fingerprint and len(a) == 120
    assert len(a.class_names) >= 6


def test_pbc_folder_imports_every_image(pbc_path, tmp_path):
    report = import_source(pbc_path, tmp_path / "pbc.h5", size=16)
    assert report.num_rows == 13675 and not report.skipped
    assert dict(zip(report.class_names, report.class_counts))["neutrophil"] == 2650
