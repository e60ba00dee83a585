"""Memorisation: is a generated image a near copy of a real training image?

A GAN that memorises hands the classifier its own training images back: no new information, and a
privacy problem for patient data. For every generated image we find the nearest real training image
by pixel distance (RMS difference of the [0, 1] pixel values) and by feature distance. "Near" needs a
scale, and it differs per dataset, so each threshold is calibrated on the real images themselves: the
``percentile`` % quantile of the distances from real training images to their nearest *other* real
training image. A generated image is a near copy when it is below *both* thresholds: pixels alone
flag smooth, low-contrast images (on PBC at 32 px, blurry GAN cells on plain background came out
"closer" than most real pairs), features alone flag any typical image of a class. Held-out real images
put through the same test give the rate to expect from images that are certainly not copies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

__all__ = ["DEFAULT_PERCENTILE", "nearest_real", "calibrate_threshold", "memorisation", "save_closest_pairs"]

DEFAULT_PERCENTILE = 1.0


def _pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W, 3) -> (n, H*W*3) float32 scaled so that L2 distance = RMS pixel difference in [0, 1]."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat / (255.0 * np.sqrt(flat.shape[1], dtype=np.float32))


def nearest_real(queries: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and index of, the nearest row of ``real`` for each row of ``queries``."""
    distances, index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(real).kneighbors(queries)
    return distances[:, 0], index[:, 0]


def calibrate_threshold(real: np.ndarray, percentile: float = DEFAULT_PERCENTILE, max_n: int = 2000,
                        seed: int = 0) -> float:
    """The ``percentile`` of real-to-nearest-other-real distances, over up to ``max_n`` sampled real rows
    (each searched against all of ``real``). Exact duplicates in the real data count (distance 0)."""
    if len(real) < 2:
        raise ValueError("calibrate_threshold: needs at least 2 real vectors")
    rng = np.random.default_rng(seed)
    probe = np.sort(rng.choice(len(real), min(max_n, len(real)), replace=False))
    distances, index = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(real).kneighbors(real[probe])
    # the first neighbour is the row itself unless an exact duplicate came first: take the other one
    other = np.where(index[:, 0] == probe, distances[:, 1], distances[:, 0])
    return float(np.percentile(other, percentile))


def memorisation(fake_images: np.ndarray, real_images: np.ndarray, fake_features: np.ndarray,
                 real_features: np.ndarray, percentile: float = DEFAULT_PERCENTILE, seed: int = 0,
                 thresholds: dict | None = None) -> dict:
    """Nearest real training image of each generated one, by pixels and by features, with near-copy flags.

    Returns per generated image ``pixel_distance``, ``pixel_index`` (position in ``real_images``),
    ``feature_distance``, ``feature_index``, ``pixel_close`` and ``feature_close`` (below that
    threshold) and ``copy`` (both), and the two ``thresholds``. Pass an earlier result's ``thresholds``
    to test more images against the same real set without calibrating again.
    """
    if fake_images.shape[1:] != real_images.shape[1:]:
        raise ValueError(f"memorisation: generated images are {fake_images.shape[1:3]} px, real ones "
                         f"{real_images.shape[1:3]}")
    real_px, fake_px = _pixels(real_images), _pixels(fake_images)
    if thresholds is None:
        px_threshold = calibrate_threshold(real_px, percentile, seed=seed)
        ft_threshold = calibrate_threshold(np.asarray(real_features, np.float32), percentile, seed=seed)
    else:
        px_threshold, ft_threshold, percentile = thresholds["pixel"], thresholds["feature"], thresholds["percentile"]
    px_dist, px_index = nearest_real(fake_px, real_px)
    ft_dist, ft_index = nearest_real(np.asarray(fake_features, np.float32), np.asarray(real_features, np.float32))
    return {
        "pixel_distance": px_dist, "pixel_index": px_index, "feature_distance": ft_dist, "feature_index": ft_index,
        "pixel_close": px_dist < px_threshold, "feature_close": ft_dist < ft_threshold,
        "copy": (px_dist < px_threshold) & (ft_dist < ft_threshold),
        "thresholds": {"pixel": px_threshold, "feature": ft_threshold, "percentile": percentile},
    }


def save_closest_pairs(fake_images: np.ndarray, real_images: np.ndarray, result: dict, path: Path,
                       n: int = 8) -> list[int]:
    """A PNG of the ``n`` generated images closest to a real training image (top row) above their nearest
    real image (bottom row); returns the generated images' positions, closest first."""
    from augkit.images import save_grid

    order = np.argsort(result["pixel_distance"], kind="stable")[:n]
    pairs = np.concatenate([fake_images[order], real_images[result["pixel_index"][order]]])
    save_grid(pairs, Path(path), columns=len(order))
    return [int(i) for i in order]
