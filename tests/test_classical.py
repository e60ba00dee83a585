"""The classical augmenter and the driver that writes augmented datasets."""

from __future__ import annotations

import numpy as np
import pytest

from augkit.augment import Context
from augkit.data import H5Dataset, stratified_split
from augkit.errors import UserError
from augkit.generate import augment_to_file
from augkit.registry import get_augmenter
from conftest import write_dataset


@pytest.fixture
def demo(tmp_path):
    from augkit.data import import_source

    import_source("demo", tmp_path / "demo.h5", size=24, n=240, seed=0)
    return H5Dataset(tmp_path / "demo.h5")


def _ctx(seed=0):
    return Context(seed=seed, device="cpu")


def test_generate_shape_parents_and_determinism(demo):
    aug = get_augmenter("classical")
    aug.fit(demo, _ctx())
    out = aug.generate(2, 20, _ctx(1))
    assert out.images.shape == (20, 24, 24, 3) and out.images.dtype == np.uint8
    assert (demo.labels[out.parents] == 2).all()  # demo rows == positions here
    again = aug.generate(2, 20, _ctx(1))
    np.testing.assert_array_equal(out.images, again.images)
    np.testing.assert_array_equal(out.parents, again.parents)
    other = aug.generate(2, 20, _ctx(2))
    assert not np.array_equal(out.images, other.images)
    assert not np.array_equal(out.images, demo.read(out.parents))  # transformed, not copied


def test_identity_settings_return_the_parent_itself(demo):
    aug = get_augmenter("classical", {"rotate": 0, "zoom": [1, 1], "translate": 0, "hflip": False, "vflip": False})
    aug.fit(demo, _ctx())
    out = aug.generate(0, 5, _ctx())
    np.testing.assert_array_equal(out.images, demo.read(out.parents))


def test_parents_spread_evenly_over_the_class(demo):
    aug = get_augmenter("classical")
    aug.fit(demo, _ctx())
    members = np.flatnonzero(demo.labels == 1)
    out = aug.generate(1, 2 * len(members) + 3, _ctx())
    uses = np.bincount(out.parents, minlength=len(demo))[members]
    assert uses.min() >= 2 and uses.max() <= 3


def test_a_rotated_cell_stays_in_view(demo):
    """The stained cell sits in the centre; after augmentation the darkest pixels are still near it."""
    aug = get_augmenter("classical")
    aug.fit(demo, _ctx())
    images = aug.generate(3, 30, _ctx()).images.astype(np.float32).mean(axis=3)
    h = images.shape[1]
    for img in images:
        ys, xs = np.nonzero(img <= np.quantile(img, 0.05))
        assert abs(ys.mean() - h / 2) < h / 4 and abs(xs.mean() - h / 2) < h / 4


def test_generate_before_fit_is_a_clear_error():
    with pytest.raises(UserError, match="call fit\\(\\) before generate\\(\\)"):
        get_augmenter("classical").generate(0, 1, _ctx())


def test_bad_parameters_name_the_augmenter():
    with pytest.raises(UserError, match="augmenter 'classical': parameter 'zoom' must be \\(low, high\\)"):
        get_augmenter("classical", {"zoom": [1.2, 0.9]})
    with pytest.raises(UserError, match="augmenter 'classical': parameter 'border' must be one of"):
        get_augmenter("classical", {"border": "black"})


def test_save_and_load_keep_the_parameters(tmp_path):
    aug = get_augmenter("classical", {"rotate": 30, "color_jitter": 0.1})
    aug.save(tmp_path / "saved")
    again = type(aug).load(tmp_path / "saved")
    assert again.params == aug.params


def test_merged_output_copies_real_rows_then_adds_synthetic(tmp_path):
    base = H5Dataset(write_dataset(tmp_path / "base.h5", counts=(6, 4, 3)))
    summary = augment_to_file(get_augmenter("classical"), base.real(), tmp_path / "aug.h5", 0.5, _ctx(), base=base)
    out = H5Dataset(tmp_path / "aug.h5")
    assert summary["per_class"] == {"class0": 3, "class1": 2, "class2": 2}  # 6.5 rounds to 7, largest remainder
    np.testing.assert_array_equal(out.read(np.arange(13)), base.read(np.arange(13)))
    synthetic = out.where(origin="classical")
    assert len(synthetic) == 7 and out.origins == ("real", "classical")
    np.testing.assert_array_equal(out.labels[synthetic.parent], synthetic.labels)
    assert out.provenance["augment"]["params"]["rotate"] == 180.0
    assert out.provenance["base"]["fingerprint"] == base.info.fingerprint
    # augmenting the augmented file keeps the two steps apart
    again = augment_to_file(get_augmenter("classical"), out.real(), tmp_path / "aug2.h5", {"per_class": 1}, _ctx(),
                            base=out)
    assert again["origin"] == "classical-2" and H5Dataset(tmp_path / "aug2.h5").origins[-1] == "classical-2"


def test_with_a_split_only_training_images_become_parents(tmp_path):
    base = H5Dataset(write_dataset(tmp_path / "base.h5", counts=(20, 20)))
    split = stratified_split(base, seed=0)
    train = split.apply(base, "train")
    augment_to_file(get_augmenter("classical"), train, tmp_path / "shard.h5", {"per_class": 30}, _ctx())
    shard = H5Dataset(tmp_path / "shard.h5")
    assert len(shard) == 60 and (shard.origin == 1).all()
    assert set(shard.parent.tolist()) <= set(split.train.tolist())


def test_unconditional_augmenters_are_refused_per_class(tiny_h5, tmp_path):
    from augkit.augment import Augmenter

    class Unconditional(Augmenter):
        name = "uncond"
        conditional = False

        def generate(self, label, n, ctx):
            raise AssertionError("never called")

    with pytest.raises(UserError, match=r"cannot choose a class.*class-conditional generator \(acgan, cgan"):
        augment_to_file(Unconditional(), H5Dataset(tiny_h5), tmp_path / "o.h5", 0.5, _ctx())


def test_pbc_classical_fifty_percent(pbc_path, tmp_path):
    """The issue's acceptance run, at 16 px to stay fast: 13,675 real rows and 6,837-6,838 classical rows."""
    from augkit.data import import_source

    import_source(pbc_path, tmp_path / "pbc.h5", size=16)
    base = H5Dataset(tmp_path / "pbc.h5")
    augment_to_file(get_augmenter("classical"), base.real(), tmp_path / "aug.h5", 0.5, _ctx(), base=base)
    out = H5Dataset(tmp_path / "aug.h5")
    real, synthetic = out.where(origin="real"), out.where(origin="classical")
    assert len(real) == 13675 and 6837 <= len(synthetic) <= 6838
    assert (np.abs(synthetic.class_counts() - 0.5 * real.class_counts()) <= 1).all()
