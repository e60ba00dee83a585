"""The HDF5 dataset: write -> read round trip, atomicity, laziness, worker safety, schema checks."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from augkit.data import DatasetWriter, H5Dataset
from augkit.data.schema import chunk_rows
from augkit.errors import DataError
from conftest import write_dataset


def test_round_trip_keeps_pixels_labels_and_attrs(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(10, 12, 12, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 1, 0, 2, 2, 1, 0, 0])
    path = tmp_path / "d.h5"
    with DatasetWriter(path, class_names=["a", "b", "c"], image_size=12, origins=["real", "gan"],
                       provenance={"recipe": "x.toml"}) as w:
        w.append(images[:4], labels[:4])
        w.append(images[4:], labels[4:], origin=1, parent=np.arange(6))
    ds = H5Dataset(path)
    assert len(ds) == 10
    np.testing.assert_array_equal(ds.read(np.arange(10)), images)
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_array_equal(ds.origin, [0] * 4 + [1] * 6)
    np.testing.assert_array_equal(ds.parent, [-1] * 4 + list(range(6)))
    assert ds.class_names == ("a", "b", "c") and ds.origins == ("real", "gan")
    assert ds.provenance["recipe"] == "x.toml" and "augkit" in ds.provenance and "created" in ds.provenance
    image, label = ds[5]
    assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and label == 2
    np.testing.assert_array_equal(image.numpy(), images[5])
    with h5py.File(path) as f:  # plain h5py sees the documented schema
        assert f.attrs["schema"] == 1 and json.loads(f.attrs["class_names"]) == ["a", "b", "c"]
        assert f["images"].chunks[0] == chunk_rows(12, 12) and f["images"].compression is None


def test_small_columns_held_in_memory_reach_the_file_whole(tmp_path, monkeypatch):
    """The writer buffers labels, origin, parents and split and writes them in blocks: batches that cross
    a block boundary, several blocks and the remainder at close all land in their rows, and the content
    (and so the fingerprint) depends neither on the block size nor on hashing beside the write."""
    import augkit.data.writer as writer_module

    rng = np.random.default_rng(2)
    sizes = [7, 1, 30, 12, 25, 3]
    batches = [(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, n), rng.integers(0, 2, n),
                rng.integers(-1, 50, n), rng.integers(-1, 50, n), rng.integers(0, 3, n)) for n in sizes]

    def write(path):
        with DatasetWriter(path, class_names=["a", "b", "c"], image_size=8, origins=["real", "gan"],
                           with_parent2=True, with_split=True, provenance={"created": "fixed"}) as w:
            for images, labels, origin, parent, parent2, split in batches:
                w.append(images, labels, origin=origin, parent=parent, parent2=parent2, split=split)
        return H5Dataset(path)

    monkeypatch.setattr(writer_module, "PENDING_ROWS", 10)
    small = write(tmp_path / "blocks_of_10.h5")
    monkeypatch.setattr(writer_module, "PENDING_ROWS", 10_000)
    whole = write(tmp_path / "one_block.h5")
    # every batch hashed in the background thread while HDF5 writes it: the same fingerprint
    monkeypatch.setattr(writer_module, "PARALLEL_HASH_BYTES", 0)
    monkeypatch.setattr(writer_module, "PARALLEL_HASH_MIN_CORES", 1)
    background = write(tmp_path / "hashed_beside.h5")
    for column, k in (("labels", 1), ("origin", 2), ("parent", 3), ("parent2", 4), ("split", 5)):
        expected = np.concatenate([b[k] for b in batches])
        np.testing.assert_array_equal(getattr(small, column), expected, err_msg=column)
        np.testing.assert_array_equal(getattr(whole, column), expected, err_msg=column)
    np.testing.assert_array_equal(small.read(np.arange(len(small))), np.concatenate([b[0] for b in batches]))
    assert small.info.fingerprint == whole.info.fingerprint == background.info.fingerprint


def test_fingerprint_follows_content(tmp_path):
    a = H5Dataset(write_dataset(tmp_path / "a.h5", seed=0)).info.fingerprint
    b = H5Dataset(write_dataset(tmp_path / "b.h5", seed=0)).info.fingerprint
    c = H5Dataset(write_dataset(tmp_path / "c.h5", seed=1)).info.fingerprint
    assert a == b and a != c and len(a) == 64


def test_exception_inside_writer_leaves_nothing(tmp_path):
    path = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with DatasetWriter(path, class_names=["a"], image_size=8) as w:
            w.append(np.zeros((3, 8, 8, 3), np.uint8), [0, 0, 0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_file(tiny_h5):
    before = tiny_h5.read_bytes()
    with pytest.raises(RuntimeError):
        with DatasetWriter(tiny_h5, class_names=["a"], image_size=8, overwrite=True) as w:
            w.append(np.zeros((1, 8, 8, 3), np.uint8), [0])
            raise RuntimeError("boom")
    assert tiny_h5.read_bytes() == before


def test_existing_target_is_refused_without_overwrite(tiny_h5):
    with pytest.raises(DataError, match="already exists"):
        DatasetWriter(tiny_h5, class_names=["a"], image_size=8)


KILLED_WRITER = """
import sys, time, numpy as np
from augkit.data import DatasetWriter
w = DatasetWriter(sys.argv[1], class_names=["a"], image_size=32)
for i in range(10_000):
    w.append(np.zeros((16, 32, 32, 3), np.uint8), np.zeros(16, int))
    if i == 2:
        print("writing", flush=True)
    time.sleep(0.01)
w.close()
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_writer_leaves_no_file_at_target(tmp_path, sig):
    target = tmp_path / "out.h5"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert not target.exists()


def test_writer_rejects_bad_batches(tmp_path):
    with DatasetWriter(tmp_path / "x.h5", class_names=["a", "b"], image_size=8) as w:
        with pytest.raises(DataError, match="images"):
            w.append(np.zeros((2, 9, 8, 3), np.uint8), [0, 1])
        with pytest.raises(DataError, match="images"):
            w.append(np.zeros((2, 8, 8, 3), np.float32), [0, 1])
        with pytest.raises(DataError, match="labels"):
            w.append(np.zeros((2, 8, 8, 3), np.uint8), [0, 2])
        with pytest.raises(DataError, match="origin"):
            w.append(np.zeros((2, 8, 8, 3), np.uint8), [0, 1], origin=1)
        w.append(np.zeros((2, 8, 8, 3), np.uint8), [0, 1])
    assert len(H5Dataset(tmp_path / "x.h5")) == 2


def test_batched_reads_keep_the_order_asked(tiny_h5):
    ds = H5Dataset(tiny_h5)
    everything = ds.read(np.arange(len(ds)))
    ask = np.array([7, 2, 2, 12, 0, 7])
    np.testing.assert_array_equal(ds.read(ask), everything[ask])
    items = ds.__getitems__(list(ask))
    assert [label for _, label in items] == list(ds.labels[ask])
    np.testing.assert_array_equal(torch.stack([img for img, _ in items]).numpy(), everything[ask])
    np.testing.assert_array_equal(ds.load().images, everything)


def test_views_select_rows_and_keep_row_ids(tmp_path):
    path = tmp_path / "v.h5"
    with DatasetWriter(path, class_names=["a", "b"], image_size=8, origins=["real", "x"]) as w:
        w.append(np.arange(5)[:, None, None, None].repeat(8, 1).repeat(8, 2).repeat(3, 3).astype(np.uint8),
                 [0, 1, 0, 1, 1], origin=[0, 0, 1, 0, 1], parent=[-1, -1, 0, -1, 1])
    ds = H5Dataset(path)
    real = ds.real()
    np.testing.assert_array_equal(real.rows, [0, 1, 3])
    sub = real.subset([2, 0])
    np.testing.assert_array_equal(sub.rows, [3, 0])
    np.testing.assert_array_equal(sub.read([0, 1])[:, 0, 0, 0], [3, 0])
    np.testing.assert_array_equal(ds.where(origin="x").parent, [0, 1])
    with pytest.raises(DataError, match="origin 'gan'"):
        ds.where(origin="gan")


def test_reader_is_lazy_and_pickles_small(tmp_path):
    path = write_dataset(tmp_path / "big.h5", counts=(300, 300), size=32)
    ds = H5Dataset(path)
    ds[0]  # opens a handle; pickling must still drop it
    assert len(pickle.dumps(ds)) < 600 * 32 * 32 * 3 / 20
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.read([5, 599]), ds.read([5, 599]))


def test_dataloader_workers_read_the_same_items(tiny_h5):
    ds = H5Dataset(tiny_h5)
    ds[0]  # a handle opened in the parent must not leak into the workers
    direct = torch.stack([ds[i][0] for i in range(len(ds))])
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert torch.equal(torch.cat([b[0] for b in batches]), direct)
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.as_tensor(ds.labels))


def test_missing_and_foreign_files_are_named(tmp_path):
    with pytest.raises(DataError, match="nope.h5: no such file"):
        H5Dataset(tmp_path / "nope.h5")
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(DataError, match="notes.h5: cannot be read as HDF5"):
        H5Dataset(text)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["images"] = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(DataError, match="plain.h5: not an augkit dataset"):
        H5Dataset(tmp_path / "plain.h5")


def test_inconsistent_file_is_reported(tiny_h5):
    with h5py.File(tiny_h5, "a") as f:
        del f["labels"]
        f["labels"] = np.zeros(3, np.int64)
    with pytest.raises(DataError, match="'labels' has shape"):
        H5Dataset(tiny_h5)

