"""Stratified, seeded splits and the per-class amount arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from augkit.augment import Amount
from augkit.data import H5Dataset, Split, largest_remainder, stratified_split
from augkit.errors import DataError, ParamError
from conftest import write_dataset


@pytest.fixture
def ds(tmp_path):
    return H5Dataset(write_dataset(tmp_path / "s.h5", counts=(40, 23, 9, 100)))


def test_split_is_reproducible_and_seed_dependent(ds):
    a, b, c = stratified_split(ds, seed=0), stratified_split(ds, seed=0), stratified_split(ds, seed=1)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(a.part(name), b.part(name))
    assert not np.array_equal(a.train, c.train)


def test_split_is_stratified_disjoint_and_complete(ds):
    split = stratified_split(ds, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=5)
    parts = [split.train, split.val, split.test]
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined) == len(ds)
    counts = ds.class_counts()
    for part, frac in zip(parts, (0.6, 0.2, 0.2)):
        per_class = np.bincount(ds.labels[part], minlength=4)
        assert (per_class >= 1).all()
        assert (np.abs(per_class - frac * counts) <= 1.5).all()


def test_split_ignores_synthetic_rows(tmp_path):
    from augkit.data import DatasetWriter

    with DatasetWriter(tmp_path / "m.h5", class_names=["a", "b"], image_size=8, origins=["real", "gan"]) as w:
        w.append(np.zeros((10, 8, 8, 3), np.uint8), [0] * 5 + [1] * 5)
        w.append(np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 0, 1], origin=1)
    split = stratified_split(H5Dataset(tmp_path / "m.h5"), seed=0)
    rows = np.concatenate([split.train, split.val, split.test])
    assert sorted(rows.tolist()) == list(range(10))


def test_saved_split_reloads_exactly_and_refuses_other_data(ds, tmp_path):
    split = stratified_split(ds, seed=2)
    path = split.save(tmp_path / "split.json")
    again = Split.load(path, fingerprint=ds.info.fingerprint)
    assert again.seed == 2 and again.fractions == split.fractions
    np.testing.assert_array_equal(again.test, split.test)
    np.testing.assert_array_equal(again.apply(ds, "val").rows, split.val)
    with pytest.raises(DataError, match="made for another dataset"):
        Split.load(path, fingerprint="0" * 64)
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(DataError, match="junk.json: not an augkit split file"):
        Split.load(tmp_path / "junk.json")


def test_bad_fractions_and_tiny_classes(ds, tmp_path):
    with pytest.raises(DataError, match="sum to 1"):
        stratified_split(ds, {"train": 0.7, "val": 0.2, "test": 0.2})
    with pytest.raises(DataError, match="unknown part"):
        stratified_split(ds, {"train": 0.7, "holdout": 0.3})
    tiny = H5Dataset(write_dataset(tmp_path / "t.h5", counts=(5, 2)))
    with pytest.raises(DataError, match="class 1 has 2 image"):
        stratified_split(tiny)


def test_largest_remainder_is_exact_and_fair():
    counts = np.array([991, 2503, 1234, 2310, 970, 1122, 2650, 1895])  # the PBC classes
    out = Amount(fraction=0.5).counts(counts)
    assert out.sum() == int(np.floor(0.5 * counts.sum() + 0.5))
    assert (np.abs(out - 0.5 * counts) <= 1).all()
    rng = np.random.default_rng(0)
    for _ in range(50):
        w = rng.integers(1, 100, size=rng.integers(1, 10))
        total = int(rng.integers(0, 1000))
        got = largest_remainder(total, w)
        assert got.sum() == total and (np.abs(got - total * w / w.sum()) < 1).all()


def test_amount_kinds():
    counts = np.array([10, 40, 25])
    assert Amount(per_class=7).counts(counts).tolist() == [7, 7, 7]
    assert Amount(balance_to="max").counts(counts).tolist() == [30, 0, 15]
    assert Amount(balance_to=30).counts(counts).tolist() == [20, 0, 5]
    assert Amount.parse({"balance_to": "max"}) == Amount(balance_to="max")
    assert Amount.parse(0.25).fraction == 0.25
    for bad in ({"fraction": -1}, {"per_class": 0}, {"balance_to": "min"}, {"percent": 5}, "half"):
        with pytest.raises(ParamError, match="amount"):
            Amount.parse(bad)


def test_an_amount_for_named_classes_gives_the_others_none():
    counts, names = np.array([10, 40, 25]), ["basophil", "neutrophil", "monocyte"]
    only = {"classes": ["basophil", "monocyte"]}
    # a fraction of the named classes' images only: 0.5 x (10 + 25) = 17.5 -> 18, shared 5.1 : 12.9
    assert Amount.parse({"fraction": 0.5, **only}).counts(counts, names).tolist() == [5, 0, 13]
    assert Amount(per_class=7, classes=("monocyte",)).counts(counts, names).tolist() == [0, 0, 7]
    # "max" is the largest class of all, named or not
    assert Amount(balance_to="max", classes=("basophil",)).counts(counts, names).tolist() == [30, 0, 0]
    assert Amount.parse({"fraction": 0.5, **only}).describe() == "+50% per class, only in basophil, monocyte"
    assert Amount.parse({"fraction": 0.5, **only}).to_json()["classes"] == ("basophil", "monocyte")
    with pytest.raises(ParamError, match="has no class 'basophill'.*did you mean 'basophil'"):
        Amount(per_class=1, classes=("basophill",)).counts(counts, names)
    for bad in ([], "basophil", ["basophil", "basophil"], [3]):
        with pytest.raises(ParamError, match="classes"):
            Amount.parse({"per_class": 1, "classes": bad})
