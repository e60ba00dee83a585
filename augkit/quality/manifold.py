"""Fidelity and diversity as separate numbers: k-nearest-neighbour estimates of the two manifolds.

FID mixes "the images look real" with "they cover the real variety" into one number. Precision and
recall (Kynkäänniemi et al. 2019) separate them: precision is the fraction of generated images that
fall inside the real manifold (the union of balls around each real vector reaching its k-th nearest
real neighbour), recall the fraction of real images inside the generated manifold. Density and
coverage (Naeem et al. 2020) are the outlier-robust variants built on the real balls only: density
counts how many real balls hold each generated vector (about 1 for matching distributions, above 1
when generated images crowd into dense regions), coverage the fraction of real balls that hold at
least one generated vector (a collapsed generator leaves most of them empty).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import pairwise_distances_chunked
from sklearn.neighbors import NearestNeighbors

__all__ = ["DEFAULT_K", "ball_counts", "knn_radii", "manifold_scores"]

DEFAULT_K = 5  # Naeem et al.'s choice; precision/recall with k = 5 is also stable at a few hundred images


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each vector to its k-th nearest *other* vector of the same set."""
    nn = NearestNeighbors(n_neighbors=k + 1).fit(features)
    distances, _ = nn.kneighbors(features)
    return distances[:, k]


def ball_counts(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """For each point, how many balls (centres, radii) hold it; chunked, so memory stays bounded."""
    return np.concatenate([(block <= radii[None, :]).sum(1)
                           for block in pairwise_distances_chunked(points, centres, working_memory=64)])


def manifold_scores(real: np.ndarray, fake: np.ndarray, k: int = DEFAULT_K, max_n: int = 5000,
                    seed: int = 0) -> dict:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (feature arrays (n, d)).

    Both sides are subsampled (with ``seed``) to the same size, at most ``max_n``: the estimates depend
    on the sample size, and equal sizes are what the papers calibrate. Returns the four numbers, ``k``
    and the ``n`` used per side.
    """
    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"manifold_scores: expected (n, d) arrays of the same d, got {real.shape} and {fake.shape}")
    n = min(len(real), len(fake), max_n)
    if n <= k:
        raise ValueError(f"manifold_scores: needs more than k = {k} vectors per side, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    real = real[np.sort(rng.choice(len(real), n, replace=False))]
    fake = fake[np.sort(rng.choice(len(fake), n, replace=False))]
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    fake_in_real = ball_counts(fake, real, real_radii)
    real_in_fake = ball_counts(real, fake, fake_radii)
    # coverage: a real ball is covered when its centre's nearest generated vector lies inside it
    nearest_fake = NearestNeighbors(n_neighbors=1).fit(fake).kneighbors(real)[0][:, 0]
    return {
        "precision": float((fake_in_real > 0).mean()),
        "recall": float((real_in_fake > 0).mean()),
        "density": float(fake_in_real.sum() / (k * n)),
        "coverage": float((nearest_fake <= real_radii).mean()),
        "k": k,
        "n": n,
    }
