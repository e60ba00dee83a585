"""The mode-collapse alarm: pairwise MS-SSIM per class, real vs generated, on tiny synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from augkit.data.reader import ArrayDataset
from augkit.quality.diversity import class_diversity, format_table, ms_ssim_settings, pairwise_ms_ssim


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These convolutions are tiny: on a busy 2-core machine, extra threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_fields(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Varied smooth images: low-pass filtered colour noise, each with its own contrast and tint."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    amp = 1.0 / (radius + 2.0 / size) ** 2
    noise = rng.normal(size=(n, size, size, 3))
    field = np.fft.ifft2(np.fft.fft2(noise, axes=(1, 2)) * amp[None, :, :, None], axes=(1, 2)).real
    field /= field.std(axis=(1, 2, 3), keepdims=True)
    images = 128 + rng.uniform(20, 50, (n, 1, 1, 1)) * field + rng.uniform(-30, 30, (n, 1, 1, 3))
    return np.clip(images, 0, 255).astype(np.uint8)


def noise_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def dataset(class_images: dict[str, np.ndarray], order=None) -> ArrayDataset:
    names = list(order or class_images)
    images = np.concatenate([class_images[c] for c in class_images])
    labels = np.concatenate([np.full(len(v), names.index(c)) for c, v in class_images.items()])
    return ArrayDataset(images, labels, names)


def collapsed_class(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """One image repeated with +-2 levels of noise: what a collapsed generator makes."""
    base = smooth_fields(1, size, seed).astype(np.int16)
    jitter = np.random.default_rng(seed + 1).integers(-2, 3, (n, size, size, 3))
    return np.clip(base + jitter, 0, 255).astype(np.uint8)


# -- pairwise_ms_ssim ------------------------------------------------------------------------------
def test_identical_images_score_one_and_noise_scores_low():
    same = np.repeat(smooth_fields(1, 32), 5, axis=0)
    assert pairwise_ms_ssim(same) == pytest.approx(1.0, abs=1e-4)
    assert pairwise_ms_ssim(noise_images(12, 32)) < 0.3


@pytest.mark.parametrize("size", [16, 24, 32, 64, 128, 256])
def test_every_size_works(size):
    few = 2 if size >= 128 else 6  # one pair is enough to prove the large sizes run
    value = pairwise_ms_ssim(smooth_fields(few, size), pairs=1 if size >= 128 else 15)
    assert 0.0 <= value < 0.95
    assert pairwise_ms_ssim(np.repeat(smooth_fields(1, size), 2, axis=0), pairs=1) == pytest.approx(1.0, abs=1e-4)


def test_scales_and_window_follow_the_size():
    scales = {size: len(ms_ssim_settings(size, size)[0]) for size in (16, 32, 64, 128, 256, 512)}
    assert scales == {16: 2, 32: 2, 64: 3, 128: 4, 256: 5, 512: 5}
    betas, sigma, kernel = ms_ssim_settings(16, 16)
    assert (sigma, kernel) == (0.75, 7) and sum(betas) == pytest.approx(1.0)
    assert ms_ssim_settings(256, 256)[1:] == (1.5, 11)
    assert ms_ssim_settings(64, 40) == ms_ssim_settings(40, 40)  # the shorter side decides


def test_deterministic_under_seed():
    images = smooth_fields(30, 16)  # 435 possible pairs, 40 drawn
    assert pairwise_ms_ssim(images, pairs=40, seed=3) == pairwise_ms_ssim(images, pairs=40, seed=3)
    assert pairwise_ms_ssim(images, pairs=40, seed=3) != pairwise_ms_ssim(images, pairs=40, seed=4)
    few = images[:6]  # 15 pairs <= 40: every pair is used, so the seed no longer matters
    assert pairwise_ms_ssim(few, pairs=40, seed=3) == pairwise_ms_ssim(few, pairs=40, seed=4)


@pytest.mark.parametrize("bad, message", [
    (smooth_fields(1, 32), "at least 2 images"),
    (smooth_fields(4, 32).astype(np.float32) / 255, "uint8"),
    (smooth_fields(4, 32)[..., 0], "uint8 images \\(n, H, W, 3\\)"),
    (noise_images(4, 8), "at least 16 px"),
])
def test_bad_input_is_refused_clearly(bad, message):
    with pytest.raises(ValueError, match=message):
        pairwise_ms_ssim(bad)


def test_bad_pairs_and_threshold_are_refused():
    with pytest.raises(ValueError, match="pairs must be a positive integer"):
        pairwise_ms_ssim(smooth_fields(3, 16), pairs=0)
    ds = dataset({"a": smooth_fields(3, 16)})
    with pytest.raises(ValueError, match="ratio_threshold"):
        class_diversity(ds, ds, ratio_threshold=0)
    with pytest.raises(ValueError, match="n must be"):
        class_diversity(ds, ds, n=1)


# -- class_diversity -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_and_fakes():
    real = dataset({"a": smooth_fields(24, 32, seed=1), "b": smooth_fields(24, 32, seed=2)})
    healthy = {"a": smooth_fields(24, 32, seed=11), "b": smooth_fields(24, 32, seed=12)}  # disjoint draws
    planted = {"a": healthy["a"], "b": collapsed_class(24, 32, seed=5)}
    return real, healthy, planted


def test_planted_collapse_is_flagged_and_healthy_class_is_not(real_and_fakes):
    real, _, planted = real_and_fakes
    rows = {r["class"]: r for r in class_diversity(real, dataset(planted), n=20, pairs=60)}
    assert not rows["a"]["collapsed"]
    assert rows["b"]["collapsed"]
    assert rows["b"]["fake_ms_ssim"] > 0.95 > rows["b"]["real_ms_ssim"]
    assert abs(rows["a"]["fake_ms_ssim"] - rows["a"]["real_ms_ssim"]) < 0.1  # same distribution
    assert (rows["a"]["real_n"], rows["a"]["fake_n"]) == (20, 20)
    table = format_table(list(rows.values()))
    assert table.startswith("| class | real MS-SSIM | generated MS-SSIM | flag |")
    assert "**collapsed**" in table.splitlines()[3] and table.splitlines()[2].endswith("| ok |")


def test_classes_are_matched_by_name(real_and_fakes):
    real, healthy, planted = real_and_fakes
    straight = class_diversity(real, dataset(planted), n=20, pairs=30, seed=2)
    reversed_ = class_diversity(real, dataset(planted, order=["b", "a"]), n=20, pairs=30, seed=2)
    assert straight == reversed_
    assert [r["class"] for r in straight] == ["a", "b"]


def test_missing_and_tiny_classes_get_none_not_errors(real_and_fakes):
    real, healthy, _ = real_and_fakes
    real3 = dataset({"a": smooth_fields(8, 16, 1), "b": smooth_fields(8, 16, 2), "c": smooth_fields(1, 16, 3)})
    fake = dataset({"a": smooth_fields(1, 16, 4), "c": smooth_fields(5, 16, 5), "x": smooth_fields(3, 16, 6)})
    rows = {r["class"]: r for r in class_diversity(real3, fake, n=10, pairs=10)}
    assert list(rows) == ["a", "b", "c", "x"]
    a, b, c, x = rows["a"], rows["b"], rows["c"], rows["x"]
    assert a["real_ms_ssim"] is not None and a["fake_ms_ssim"] is None and a["fake_n"] == 1
    assert "at least 2" in a["note"] and not a["collapsed"]
    assert b["fake_ms_ssim"] is None and b["fake_n"] == 0 and not b["collapsed"] and "not in the generated" in b["note"]
    assert c["real_ms_ssim"] is None and c["fake_ms_ssim"] is not None and not c["collapsed"]
    assert x["real_ms_ssim"] is None and "not in the real" in x["note"]
    table = format_table(list(rows.values()))
    assert len(table.splitlines()) == 6 and "| – |" in table


def test_different_image_sizes_are_refused():
    small, large = dataset({"a": smooth_fields(3, 16)}), dataset({"a": smooth_fields(3, 32)})
    with pytest.raises(ValueError, match="one size"):
        class_diversity(small, large)
