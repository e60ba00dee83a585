"""The class-consistency filter: a planted classifier decides, the driver keeps only what it accepts,
counts acceptance per class, and refuses clearly when a class cannot reach its amount; the selective
filter also drops confident images that lie off the real class's manifold, and counts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from augkit.augment import Augmenter, Context, Samples
from augkit.data.reader import ArrayDataset, H5Dataset
from augkit.errors import DataError, ParamError, UserError
from augkit.evaluate.classifier import Classifier
from augkit.filter import ConsistencyFilter, FilterSpec
from augkit.generate import augment_to_file
from augkit.recipe import load_recipe


class BrightIsClassZero(nn.Module):
    """A planted classifier: class 0 when the image is bright, class 1 when dark (very sure of both)."""

    def forward(self, x):
        bright = (x.mean(dim=(1, 2, 3)) > 0).float()
        return torch.stack([bright, 1 - bright], 1) * 20 - 10


class HalfBright(Augmenter):
    """Every other candidate bright, the rest dark; parents count up so kept ones can be traced."""

    name = "half_bright"

    def fit(self, train, ctx):
        self.calls = 0

    def generate(self, label, n, ctx):
        images = np.zeros((n, 8, 8, 3), np.uint8)
        images[::2] = 250
        start = self.calls
        self.calls += n
        return Samples(images, parents=np.arange(start, start + n) % 4)


def train_set() -> ArrayDataset:
    return ArrayDataset(np.zeros((8, 8, 8, 3), np.uint8), np.repeat([0, 1], 4), ["light", "dark"])


def planted(threshold=0.9, max_tries=10.0) -> ConsistencyFilter:
    return ConsistencyFilter(Classifier(BrightIsClassZero(), FilterSpec(threshold=threshold, max_tries=max_tries),
                                        ("light", "dark"), "cpu"))


def test_only_images_of_their_intended_class_are_kept_and_rates_are_counted(tmp_path):
    filt = planted()
    summary = augment_to_file(HalfBright(), train_set(), tmp_path / "out.h5", {"per_class": 20},
                              Context(seed=0, device="cpu"), consistency=filt)
    out = H5Dataset(tmp_path / "out.h5")
    images = out.read(np.arange(len(out)))
    assert len(out) == 40
    assert (images[out.labels == 0] == 250).all() and (images[out.labels == 1] == 0).all()
    for name in ("light", "dark"):
        rate = summary["filter"][name]
        assert rate["accepted"] >= 20 and rate["tried"] >= 40 and rate["rate"] == pytest.approx(0.5, abs=0.1)
    assert out.provenance["filter"]["per_class"]["light"]["accepted"] == summary["filter"]["light"]["accepted"]


def test_a_class_that_cannot_reach_its_amount_is_refused_and_nothing_is_written(tmp_path):
    class AlwaysDark(HalfBright):
        def generate(self, label, n, ctx):
            return Samples(np.zeros((n, 8, 8, 3), np.uint8))

    with pytest.raises(UserError, match=r"filter: class 'light': only 0 of \d+ generated images \(0.0%\) were "
                                        r"kept as 'light' with p >= 0.9"):
        augment_to_file(AlwaysDark(), train_set(), tmp_path / "out.h5", {"per_class": 5},
                        Context(seed=0, device="cpu"), consistency=planted(max_tries=3))
    assert not (tmp_path / "out.h5").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_trained_filter_saves_and_loads(tmp_path):
    rng = np.random.default_rng(0)
    images = np.concatenate([rng.integers(180, 256, (24, 16, 16, 3)), rng.integers(0, 70, (24, 16, 16, 3))])
    data = ArrayDataset(images.astype(np.uint8), np.repeat([0, 1], 24), ["light", "dark"])
    spec = FilterSpec(model="test_resnet", epochs=6, batch_size=8, lr=3e-3)
    filt = ConsistencyFilter.train(data, data, spec, "cpu")
    assert filt.val_metrics["val_weighted_f1"] > 0.9  # two trivially separable classes
    filt.save(tmp_path / "f")
    again = ConsistencyFilter.load(tmp_path / "f", "cpu")
    np.testing.assert_allclose(again.probabilities(data.images[:6]), filt.probabilities(data.images[:6]), atol=1e-5)
    assert again.spec == spec


def test_recipe_filter_options_are_checked(tmp_path):
    path = Path(tmp_path / "r.toml")
    path.write_text('[[augment]]\nname = "classical"\namount = 0.5\nfilter = { treshold = 0.9 }\n')
    with pytest.raises(ParamError, match=r"line 4: \[augment classical\]: unknown key 'filter.treshold'; "
                                         r"did you mean 'threshold'"):
        load_recipe(path)
    path.write_text('[[augment]]\nname = "vanilla"\nfilter = true\n')
    with pytest.raises(ParamError, match="a filter needs images to filter; this step has no 'amount'"):
        load_recipe(path)
    path.write_text('[[augment]]\nname = "classical"\namount = 0.5\nfilter = { threshold = 0.7, epochs = 2 }\n')
    assert load_recipe(path).step("classical").filter == FilterSpec(threshold=0.7, epochs=2)


class MeanColour(BrightIsClassZero):
    """The planted classifier with planted features: an image's mean colour (3 numbers)."""

    def forward_features(self, x):
        return x

    def forward_head(self, x, pre_logits=False):
        return x.mean(dim=(2, 3)) if pre_logits else self(x)


class ThreeKinds(HalfBright):
    """Candidates in turn: grey and bright (as the real light cells), bright but yellow (confidently
    light, yet like no real cell), and dark."""

    def generate(self, label, n, ctx):
        kinds = np.array([[230, 230, 230], [255, 255, 150], [10, 10, 10]], np.uint8)
        which = (self.calls + np.arange(n)) % 3
        self.calls += n
        return Samples(np.broadcast_to(kinds[which][:, None, None, :], (n, 8, 8, 3)).copy())


def selective(k=3, threshold=0.9) -> ConsistencyFilter:
    rng = np.random.default_rng(0)
    light = 230 + rng.integers(-6, 7, (12, 1, 1, 3))
    dark = 20 + rng.integers(-6, 7, (12, 1, 1, 3))
    images = np.broadcast_to(np.concatenate([light, dark]), (24, 8, 8, 3)).astype(np.uint8)
    real = ArrayDataset(images, np.repeat([0, 1], 12), ["light", "dark"])
    spec = FilterSpec(threshold=threshold, manifold_k=k)
    return ConsistencyFilter(Classifier(MeanColour(), spec, ("light", "dark"), "cpu")).fit_manifold(real)


def test_the_selective_filter_drops_confident_images_off_the_real_manifold_and_counts_them(tmp_path):
    filt = selective()
    summary = augment_to_file(ThreeKinds(), train_set(), tmp_path / "out.h5", {"per_class": 10},
                              Context(seed=0, device="cpu"), consistency=filt)
    out = H5Dataset(tmp_path / "out.h5")
    light = out.read(np.flatnonzero(out.labels == 0))
    assert len(light) == 10 and (light == 230).all()  # neither the yellow nor the dark ones
    rates = summary["filter"]["light"]
    assert rates["outside_manifold"] == pytest.approx(rates["tried"] / 3, abs=1)  # every yellow one
    assert rates["accepted"] == pytest.approx(rates["tried"] / 3, abs=1)
    assert out.provenance["filter"]["per_class"]["light"]["outside_manifold"] == rates["outside_manifold"]
    # the plain filter, same classifier and threshold, keeps the yellow ones too
    plain = ConsistencyFilter(filt.classifier, FilterSpec(threshold=0.9))
    kept = plain.accept(_three(30), 0)
    assert kept.sum() == 20 and "outside_manifold" not in plain.rates()["light"]


def _three(n):
    aug = ThreeKinds()
    aug.calls = 0
    return aug.generate(0, n, None).images


def test_the_manifold_is_the_class_s_own_and_needs_more_images_than_k():
    filt = selective()
    grey_dark = np.full((3, 8, 8, 3), 20, np.uint8)
    assert filt._inside(filt.classifier.features(grey_dark), 1).all()
    assert not filt._inside(filt.classifier.features(grey_dark), 0).any()  # dark cells are not light ones
    with pytest.raises(UserError, match="class 'light' has 12 training images; the manifold test with manifold_k = 12"):
        selective(k=12)


def test_a_filter_s_classifier_is_trained_once_and_shared_by_filters_that_only_judge_differently(tmp_path):
    from augkit.data.split import stratified_split
    from augkit.filter import filter_for
    from conftest import write_dataset

    base = H5Dataset(write_dataset(tmp_path / "d.h5", counts=(12, 12), size=16))
    split = stratified_split(base, {"train": 0.5, "val": 0.5}, seed=0)
    train, val = split.apply(base, "train"), split.apply(base, "val")
    said: list[str] = []
    spec = FilterSpec(model="test_resnet", epochs=1, batch_size=8)
    first = filter_for(spec, train, val, "cpu", tmp_path / "filters", say=said.append)
    stricter = filter_for(FilterSpec(model="test_resnet", epochs=1, batch_size=8, threshold=0.95, manifold_k=2),
                          train, val, "cpu", tmp_path / "filters", say=said.append)
    assert [line.split(":")[1].split()[0] for line in said] == ["training", "reusing"]
    assert len(list((tmp_path / "filters").iterdir())) == 1
    assert stricter.spec.threshold == 0.95 and stricter.manifold is not None and first.manifold is None
    images = train.read(np.arange(4))  # the classifier trained once is the one both filters judge with
    np.testing.assert_allclose(stricter.probabilities(images), first.probabilities(images), atol=1e-6)
    with pytest.raises(DataError, match="no validation images"):
        filter_for(spec, train, val.subset(np.arange(0)), "cpu", tmp_path / "filters")
    # another training length is another classifier
    filter_for(FilterSpec(model="test_resnet", epochs=2, batch_size=8), train, val, "cpu", tmp_path / "filters",
               say=said.append)
    assert said[-1].startswith("filter: training") and len(list((tmp_path / "filters").iterdir())) == 2
