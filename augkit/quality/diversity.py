"""The mode-collapse alarm: is a generator's output per class as varied as the real images?

A collapsing GAN makes near-copies of a few images; a classifier trained on them learns nothing new,
and the evaluator only says so after hours of training. Mean pairwise MS-SSIM within a class catches
it in seconds and needs no downloaded network (unlike FID): similar pairs score near 1, unrelated
ones near 0. Comparing the generated class with the real one, at the same image size, turns the
number into a verdict, since how similar real images of a class are differs from class to class.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

__all__ = ["DEFAULT_RATIO_THRESHOLD", "class_positions", "is_collapsed", "ms_ssim_settings", "pairwise_ms_ssim",
           "class_diversity", "format_table", "runs_collapse_check", "write_diversity_report"]

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first
MIN_SIZE = 16
DEFAULT_RATIO_THRESHOLD = 0.5
_CHUNK_VALUES = 1 << 23  # float values per image tensor in one call (32 MiB): bounds memory at 256+ px


def ms_ssim_settings(height: int, width: int) -> tuple[tuple[float, ...], float, int]:
    """``(betas, sigma, kernel_size)`` that MS-SSIM can use at this image size.

    Standard MS-SSIM (5 scales, 11-px gaussian window, sigma 1.5) needs about 176 px; torchmetrics
    raises below that. We keep the standard window and drop the *coarsest* scales instead, keeping
    the first ``s`` standard betas renormalised to sum 1, with ``s`` the most scales whose coarsest
    image is still >= 16 px: 256+ px -> 5, 128 -> 4, 64 -> 3, 32 -> 2. A small image simply has
    fewer octaves of structure; the coarsest scale then sees a 16-31 px picture at every size, as in
    standard MS-SSIM at 256 px. Below 32 px (16-31) we keep 2 scales and shrink the window with the
    image (sigma = 1.5 * size / 32: 0.75 and a 7-px window at 16 px), i.e. a 16-px image is measured
    like its 32-px twin. Under 16 px nothing meaningful is left and we refuse.
    Numbers are comparable only between images of the same size.
    """
    size = min(int(height), int(width))
    if size < MIN_SIZE:
        raise ValueError(f"MS-SSIM needs images of at least {MIN_SIZE} px, got {height}x{width}")
    if size >= 32:
        sigma = 1.5
        scales = min(len(STANDARD_BETAS), int(math.floor(math.log2(size / 16))) + 1)
    else:
        sigma = 1.5 * size / 32
        scales = 2
    kernel = int(3.5 * sigma + 0.5) * 2 + 1  # the gaussian window torchmetrics really uses for sigma
    total = sum(STANDARD_BETAS[:scales])
    betas = tuple(float(b / total) for b in STANDARD_BETAS[:scales])
    return betas, sigma, kernel


def _pair_indices(n: int, pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``pairs`` distinct unordered pairs i < j, drawn without replacement (all of them if fewer)."""
    total = n * (n - 1) // 2
    k = np.arange(total, dtype=np.int64) if pairs >= total else np.sort(rng.choice(total, pairs, replace=False))
    # pairs are numbered row by row of the upper triangle; invert that numbering in closed form
    i = n - 2 - np.floor(np.sqrt(-8.0 * k + 4.0 * n * (n - 1) - 7) / 2.0 - 0.5).astype(np.int64)
    j = k + i + 1 - total + (n - i) * (n - i - 1) // 2
    return i, j


def pairwise_ms_ssim(images: np.ndarray, pairs: int = 200, seed: int = 0) -> float:
    """Mean MS-SSIM over ``pairs`` random pairs of different images of ``images`` (n, H, W, 3) uint8.

    Higher means more alike, i.e. less diverse. Pairs are distinct unordered pairs ``i < j``
    (every pair when n(n-1)/2 <= ``pairs``, which makes the value exact), drawn with ``seed``:
    the same inputs give the same number. Scales and window follow :func:`ms_ssim_settings`.
    """
    if not isinstance(images, np.ndarray):
        raise ValueError(f"pairwise_ms_ssim: expected a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(
            f"pairwise_ms_ssim: expected uint8 images (n, H, W, 3), got {images.dtype} {images.shape}")
    n = len(images)
    if n < 2:
        raise ValueError(f"pairwise_ms_ssim: needs at least 2 images to form a pair, got {n}")
    if isinstance(pairs, bool) or not isinstance(pairs, (int, np.integer)) or pairs < 1:
        raise ValueError(f"pairwise_ms_ssim: pairs must be a positive integer, got {pairs!r}")
    betas, sigma, kernel = ms_ssim_settings(images.shape[1], images.shape[2])
    first, second = _pair_indices(n, int(pairs), np.random.default_rng(seed))
    chunk = max(1, _CHUNK_VALUES // images[0].size)
    scores = []
    for start in range(0, len(first), chunk):
        a = torch.from_numpy(images[first[start:start + chunk]]).permute(0, 3, 1, 2).float().div_(255)
        b = torch.from_numpy(images[second[start:start + chunk]]).permute(0, 3, 1, 2).float().div_(255)
        scores.append(multiscale_structural_similarity_index_measure(
            a, b, sigma=sigma, kernel_size=kernel, data_range=1.0, betas=betas, reduction="none"))
    return float(torch.cat(scores).double().mean())


def class_positions(labels: np.ndarray, label: int, name: str, n: int, seed: int, side: int) -> np.ndarray:
    """Up to ``n`` positions of one class, chosen by a stream keyed on the class *name*, not its index
    (so class order changes nothing)."""
    positions = np.flatnonzero(np.asarray(labels) == label)
    if len(positions) > n:
        rng = np.random.default_rng([seed, side, zlib.crc32(name.encode())])
        positions = np.sort(rng.choice(positions, n, replace=False))
    return positions


def is_collapsed(real_ms_ssim: float, fake_ms_ssim: float, threshold: float = DEFAULT_RATIO_THRESHOLD) -> bool:
    """Generated diversity (1 - MS-SSIM) below ``threshold`` times the real one."""
    return bool((1 - fake_ms_ssim) < threshold * (1 - real_ms_ssim))


def _class_sample(ds, label: int, name: str, n: int, seed: int, side: int) -> np.ndarray:
    return ds.read(class_positions(ds.labels, label, name, n, seed, side))


def _row(name, real_images, fake_images, pairs, seed, threshold, note="") -> dict:
    row = {"class": name, "real_ms_ssim": None, "fake_ms_ssim": None,
           "real_n": 0 if real_images is None else len(real_images),
           "fake_n": 0 if fake_images is None else len(fake_images), "collapsed": False, "note": note}
    notes = [note] if note else []
    for side, images in (("real", real_images), ("fake", fake_images)):
        if images is None:
            continue
        if len(images) < 2:
            notes.append(f"{len(images)} {side} image(s): MS-SSIM needs at least 2")
            continue
        row[f"{side}_ms_ssim"] = pairwise_ms_ssim(images, pairs=pairs, seed=seed)
    if row["real_ms_ssim"] is not None and row["fake_ms_ssim"] is not None:
        if real_images.shape[1:] != fake_images.shape[1:]:
            raise ValueError(f"class '{name}': real images are {real_images.shape[1:3]} px, generated "
                             f"{fake_images.shape[1:3]}: MS-SSIM compares only at one size")
        row["collapsed"] = is_collapsed(row["real_ms_ssim"], row["fake_ms_ssim"], threshold)
    row["note"] = "; ".join(notes)
    return row


def class_diversity(real, fake, n: int = 100, pairs: int = 200, seed: int = 0,
                    ratio_threshold: float = DEFAULT_RATIO_THRESHOLD) -> list[dict]:
    """Per class, mean pairwise MS-SSIM of real and generated images, and a mode-collapse flag.

    ``real`` and ``fake`` are datasets (``.labels``, ``.class_names``, ``.read``); classes are
    matched by name, since a shard may order them differently. Up to ``n`` images per class and
    side are sampled with ``seed`` (keyed on the class name, so class order changes nothing).

    With diversity = 1 - MS-SSIM, a class is ``collapsed`` when generated diversity <
    ``ratio_threshold`` x real diversity. The default 0.5 flags a generator that lost half the
    variety of the real class: far beyond the sampling noise of a 200-pair mean (a few hundredths)
    and the milder diversity loss that healthy GANs show, while near-copies (diversity ~0) are
    flagged whatever the class. A ratio, not a difference, because real classes differ widely
    in how alike their images are. Calibration on the demo data at 64 px (real MS-SSIM 0.14-0.25,
    sampling noise ~0.005): a generated class made of near-copies of k real images gives a ratio
    of 0.0 (k=1), 0.57 (2), 0.67 (3), 0.85 (5), 0.94 (10); so 0.5 catches collapse onto one or
    two images, and a stricter 0.7 also catches three.

    Rows follow the real dataset's classes: ``{"class", "real_ms_ssim", "fake_ms_ssim", "real_n",
    "fake_n", "collapsed", "note"}``. A class absent from ``fake`` (or with < 2 images on a side)
    gets None for that side and ``collapsed`` False, with the reason in ``note``; classes only in
    ``fake`` are appended with real None, since they usually mean a misspelt class name.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"class_diversity: n must be an integer >= 2 (images per class), got {n!r}")
    if not 0 < ratio_threshold <= 1:
        raise ValueError(f"class_diversity: ratio_threshold must lie in (0, 1], got {ratio_threshold!r}")
    real_sizes, fake_sizes = getattr(real, "image_size", None), getattr(fake, "image_size", None)
    if real_sizes is not None and fake_sizes is not None and tuple(real_sizes) != tuple(fake_sizes):
        raise ValueError(f"real images are {tuple(real_sizes)} px and generated ones {tuple(fake_sizes)}: "
                         "MS-SSIM compares only at one size")
    real_names, fake_names = list(real.class_names), list(fake.class_names)
    rows = []
    for label, name in enumerate(real_names):
        real_images = _class_sample(real, label, name, n, seed, side=0)
        if name not in fake_names:
            rows.append(_row(name, real_images, None, pairs, seed, ratio_threshold,
                             note="no generated images: class not in the generated dataset"))
            continue
        fake_images = _class_sample(fake, fake_names.index(name), name, n, seed, side=1)
        rows.append(_row(name, real_images, fake_images, pairs, seed, ratio_threshold))
    for label, name in enumerate(fake_names):
        if name not in real_names:
            fake_images = _class_sample(fake, label, name, n, seed, side=1)
            rows.append(_row(name, None, fake_images, pairs, seed, ratio_threshold,
                             note="class not in the real dataset (misspelt name?)"))
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`class_diversity` as a Markdown table for reports (higher = less diverse)."""
    def cell(value, count) -> str:
        return "–" if value is None else f"{value:.3f} (n={count})"

    lines = ["| class | real MS-SSIM | generated MS-SSIM | flag |", "|---|---:|---:|---|"]
    for r in rows:
        if r["collapsed"]:
            flag = (f"**collapsed**: diversity {1 - r['fake_ms_ssim']:.3f} vs real "
                    f"{1 - r['real_ms_ssim']:.3f}")
        else:
            flag = r.get("note") or "ok"
        name = str(r["class"]).replace("|", "\\|")
        lines.append(f"| {name} | {cell(r['real_ms_ssim'], r['real_n'])} | "
                     f"{cell(r['fake_ms_ssim'], r['fake_n'])} | {flag.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


#: images per class and side in the collapse alarm a recipe runs after training a conditional generator
COLLAPSE_CHECK_IMAGES = 100


def runs_collapse_check(augmenter_cls: type, image_size: int) -> bool:
    """Whether a recipe checks a trained augmenter for collapse: a class-conditional generator it trains,
    at a size MS-SSIM can measure. The runner and the plan both ask here, so the plan says what runs."""
    return bool(augmenter_cls.trains and augmenter_cls.conditional and image_size >= MIN_SIZE)


def write_diversity_report(augmenter, train, ctx, out_dir, n: int = COLLAPSE_CHECK_IMAGES) -> list[dict]:
    """The mode-collapse alarm for a trained class-conditional augmenter: ``n`` generated vs ``n`` real
    images per class, written to ``out_dir``/diversity.json and diversity.md; returns the rows."""
    import json
    from pathlib import Path

    from augkit.data.reader import ArrayDataset
    from augkit.generate import generate_checked

    out_dir = Path(out_dir)
    images, labels = [], []
    for label in range(train.num_classes):
        if (train.labels == label).sum() == 0:
            continue
        images.append(generate_checked(augmenter, label, n, ctx.child(9999, label), train.image_size).images)
        labels.append(np.full(n, label))
    fake = ArrayDataset(np.concatenate(images), np.concatenate(labels), train.class_names)
    rows = class_diversity(train, fake, n=n)
    (out_dir / "diversity.json").write_text(json.dumps(rows, indent=1))
    (out_dir / "diversity.md").write_text(
        f"# Per-class diversity: mean pairwise MS-SSIM of {n} generated vs {n} real images\n\n"
        "Higher MS-SSIM = more alike = less diverse.\n\n" + format_table(rows) + "\n")
    return rows
