"""Distances between two sets of feature vectors: Fréchet distance and kernel inception distance (KID).

Both are the public GAN metrics (FID, KID) computed in whatever feature space the caller chose; augkit
uses its own classifier's features (see :mod:`augkit.quality.features`), so the numbers are comparable
only between runs with the same extractor, never with published FID/KID values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["frechet_distance", "kernel_distance"]


def _check(real: np.ndarray, fake: np.ndarray, minimum: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"{what}: expected two (n, d) feature arrays of the same d, got {real.shape} and {fake.shape}")
    if len(real) < minimum or len(fake) < minimum:
        raise ValueError(f"{what}: needs at least {minimum} vectors per side, got {len(real)} and {len(fake)}")
    return real, fake


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; tiny negative eigenvalues (round-off) -> 0."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """||mu_r - mu_f||^2 + Tr(C_r + C_f - 2 (C_r C_f)^(1/2)) between Gaussians fitted to two feature sets.

    The trace of the matrix square root is taken as the sum of the square roots of the eigenvalues of
    the symmetric PSD matrix C_r^(1/2) C_f C_r^(1/2) (which has the same eigenvalues as C_r C_f). Unlike
    ``scipy.linalg.sqrtm(C_r @ C_f)`` this stays real and finite when n < d makes both covariances
    singular, as they are for small classes. Small n biases the value upwards: compare sets of equal size.
    """
    real, fake = _check(real, fake, 2, "frechet_distance")
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    cov_r, cov_f = np.atleast_2d(cov_r), np.atleast_2d(cov_f)
    root_r = _psd_sqrt(cov_r)
    middle = root_r @ cov_f @ root_r
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    value = float(((mu_r - mu_f) ** 2).sum() + np.trace(cov_r) + np.trace(cov_f) - 2 * trace_sqrt)
    return max(value, 0.0)


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = a @ b.T / a.shape[1] + 1.0
    return k * k * k  # 3-4x faster than ** 3 on these arrays


def kernel_distance(real: np.ndarray, fake: np.ndarray, subsets: int = 50, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased MMD^2 estimate with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
    averaged over ``subsets`` random subsets of ``min(subset_size, n_real, n_fake)`` vectors per side
    (Binkowski et al. 2018). Returns ``(mean, std over subsets)``. Unbiased, so it can be slightly
    negative when the sets come from one distribution, and it is comparable between sample sizes.
    """
    real, fake = _check(real, fake, 2, "kernel_distance")
    m = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.mean())
    values = np.asarray(values)
    return float(values.mean()), float(values.std(ddof=1) if len(values) > 1 else 0.0)
