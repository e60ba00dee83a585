"""The built-in demo dataset: shapes, determinism, PBC-like imbalance, and "learnable, not trivially"."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from augkit.data.demo import DEMO_CLASSES, DEMO_WEIGHTS, demo_counts, iter_demo, make_demo, render_cell

K = len(DEMO_CLASSES)


@pytest.fixture(scope="module")
def small():
    return make_demo(120, 32, seed=0)


@pytest.fixture(scope="module")
def learnable():
    """Big enough for a linear classifier to learn something, small enough to stay fast."""
    return make_demo(1200, 32, seed=0)


def _split(labels: np.ndarray):
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=1 / 3, stratify=labels, random_state=0)


def _fit_score(features: np.ndarray, labels: np.ndarray, C: float) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    train, test = _split(labels)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=300))
    # One BLAS thread: on a busy 2-core machine, oversubscribed BLAS threads make this tiny fit
    # take seconds instead of a fraction of one.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # a ConvergenceWarning would not change the point made
        clf.fit(features[train], labels[train])
    return float(clf.score(features[test], labels[test]))


# --- classes and counts ----------------------------------------------------------------------


def test_classes_and_weights_are_consistent():
    assert len(DEMO_CLASSES) >= 6
    assert len(set(DEMO_CLASSES)) == K
    assert len(DEMO_WEIGHTS) == K
    assert all(w > 0 for w in DEMO_WEIGHTS)
    assert 2.5 <= max(DEMO_WEIGHTS) / min(DEMO_WEIGHTS) <= 3.0


@pytest.mark.parametrize("n", [1, 3, K, K + 1, 100, 2000, 12345])
def test_demo_counts_sum_to_n_and_are_deterministic(n):
    counts = demo_counts(n)
    assert counts.shape == (K,)
    assert np.issubdtype(counts.dtype, np.integer)
    assert counts.sum() == n
    assert (counts >= 0).all()
    if n >= K:
        assert (counts >= 1).all()
    np.testing.assert_array_equal(counts, demo_counts(n))


def test_demo_counts_follow_the_weights():
    n = 10_000
    w = np.asarray(DEMO_WEIGHTS) / sum(DEMO_WEIGHTS)
    counts = demo_counts(n)
    assert np.abs(counts - n * w).max() < 1  # largest remainder: never more than one row off
    assert 2.5 <= counts.max() / counts.min() <= 3.0
    assert counts.argmax() == int(np.argmax(w)) and counts.argmin() == int(np.argmin(w))


# --- shapes, determinism ---------------------------------------------------------------------


def test_make_demo_shapes_dtypes_and_counts(small):
    images, labels, names = small
    assert images.shape == (120, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (120,) and labels.dtype == np.int64
    assert names == list(DEMO_CLASSES)
    assert labels.min() >= 0 and labels.max() < K
    np.testing.assert_array_equal(np.bincount(labels, minlength=K), demo_counts(120))


def test_labels_are_shuffled_not_sorted(small):
    labels = small[1]
    assert (np.diff(labels) != 0).sum() > K  # sorted labels would change class only K-1 times


def test_iter_demo_batches_add_up_to_make_demo():
    batches = list(iter_demo(50, size=16, seed=3, batch=16))
    assert [len(lab) for _, lab in batches] == [16, 16, 16, 2]
    for images, labels in batches:
        assert images.shape == (len(labels), 16, 16, 3) and images.dtype == np.uint8
        assert labels.dtype == np.int64
    images, labels, _ = make_demo(50, size=16, seed=3)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), images)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)


def test_batch_size_does_not_change_the_data():
    def rows(batch):
        parts = list(iter_demo(40, size=24, seed=5, batch=batch))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    (img_a, lab_a), (img_b, lab_b) = rows(7), rows(256)
    np.testing.assert_array_equal(lab_a, lab_b)
    np.testing.assert_array_equal(img_a, img_b)


def test_same_seed_same_data_other_seed_other_data(small):
    images, labels, _ = make_demo(120, 32, seed=0)
    np.testing.assert_array_equal(images, small[0])
    np.testing.assert_array_equal(labels, small[1])
    other_images, other_labels, _ = make_demo(120, 32, seed=1)
    assert not np.array_equal(other_images, images)
    assert not np.array_equal(other_labels, labels)


def test_render_cell_depends_only_on_the_generator():
    for label in range(K):
        a = render_cell(label, 40, np.random.default_rng(11))
        b = render_cell(label, 40, np.random.default_rng(11))
        assert a.shape == (40, 40, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    one, two = (render_cell(0, 40, np.random.default_rng(seed)) for seed in (1, 2))
    assert not np.array_equal(one, two)


@pytest.mark.parametrize("size", [16, 33, 128])
def test_any_size_in_range_renders(size):
    images, _, _ = make_demo(K, size=size, seed=0)
    assert images.shape == (K, size, size, 3)


# --- content ---------------------------------------------------------------------------------


def test_images_are_not_trivial(small):
    images = small[0].astype(np.float64)
    n = len(images)
    per_image_std = images.reshape(n, -1).std(axis=1)
    assert per_image_std.min() > 8  # structure, not a flat colour
    grey = images.mean(axis=3).reshape(n, -1)
    # a light background and darker stained structures in every image
    assert (np.percentile(grey, 90, axis=1) - grey.min(axis=1)).min() > 40
    assert len(np.unique(images.reshape(n, -1), axis=0)) == n
    assert np.abs(np.diff(images, axis=0)).mean(axis=(1, 2, 3)).min() > 3


def test_classes_look_different_on_average():
    images, labels, _ = make_demo(400, 32, seed=0)
    means = np.stack([images[labels == k].mean(axis=0) for k in range(K)])
    gaps = [np.abs(means[i] - means[j]).mean() for i in range(K) for j in range(i + 1, K)]
    assert min(gaps) > 1.0


def test_learnable_but_not_trivially(learnable):
    images, labels, _ = learnable
    n = len(labels)
    pixels = images.reshape(n, 16, 2, 16, 2, 3).mean(axis=(2, 4)).reshape(n, -1) / 255.0
    chance = np.bincount(labels).max() / n  # always guessing the commonest class
    acc = _fit_score(pixels, labels, C=0.01)
    assert acc > 2 * chance, f"a linear model on 16x16 pixels should learn the classes (got {acc:.3f})"
    assert acc < 0.97, f"the classes should not be trivially separable (got {acc:.3f})"


def test_colour_alone_does_not_give_the_class_away(learnable):
    images, labels, _ = learnable
    mean_rgb = images.reshape(len(labels), -1, 3).mean(axis=1) / 255.0
    acc = _fit_score(mean_rgb, labels, C=1.0)
    assert acc < 0.9, f"mean colour alone classifies too well ({acc:.3f}): stain variation is too weak"


# --- argument checking -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: make_demo(0), "n"),
        (lambda: make_demo(-5), "n"),
        (lambda: make_demo(2.5), "n"),
        (lambda: make_demo(10, size=15), "size"),
        (lambda: make_demo(10, size=513), "size"),
        (lambda: make_demo(10, seed=-1), "seed"),
        (lambda: iter_demo(0), "n"),
        (lambda: iter_demo(10, size=8), "size"),
        (lambda: iter_demo(10, batch=0), "batch"),
        (lambda: demo_counts(0), "n"),
        (lambda: render_cell(K, 32, np.random.default_rng(0)), "label"),
        (lambda: render_cell(-1, 32, np.random.default_rng(0)), "label"),
        (lambda: render_cell(0, 1000, np.random.default_rng(0)), "size"),
        (lambda: render_cell(0, 32, 0), "rng"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
