"""Classification metrics and the confidence intervals of their differences between arms.

A delta between an augmented arm and the baseline varies for two reasons: which images happen to be
in the test set, and which training run (seed) produced each model. An interval that ignores either
one is too narrow, so deltas get a paired hierarchical bootstrap: every resample redraws the seeds
(with replacement) and the test images (with replacement, the same images for both arms and every
seed), which covers test-set sampling and training noise together. Pairing by seed and by image
cancels what the arms share. With one seed only the test images can be resampled, and the result
says that training noise is not covered.

Single evaluations use scikit-learn (``classification_metrics``); the bootstrap computes the same
numbers from confusion counts for many resamples at once (``metric_vectors``), tested against it.
Per-class verdicts are many tests at once, so ``correct_per_class`` adjusts their p-values (Holm).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

SUMMARY_METRICS = ("weighted_f1", "macro_f1", "accuracy", "balanced_accuracy")
PER_CLASS_METRICS = ("precision", "recall", "f1")
_CHUNK_ELEMENTS = 1 << 21  # resamples x test images held at once (16 MiB of float64 weights)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Per-class precision/recall/F1/support, weighted and macro F1, accuracy, balanced accuracy."""
    labels = np.arange(num_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "per_class": {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                      "support": support.astype(int).tolist()},
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def _metric_vector(m: dict) -> np.ndarray:
    """Summary metrics then per-class precision, recall, F1: one vector, so deltas are one subtraction."""
    return np.array([m[k] for k in SUMMARY_METRICS]
                    + [v for k in PER_CLASS_METRICS for v in m["per_class"][k]], dtype=np.float64)


def _unflatten(vec: np.ndarray, num_classes: int) -> dict:
    out = {k: vec[i] for i, k in enumerate(SUMMARY_METRICS)}
    base = len(SUMMARY_METRICS)
    for j, k in enumerate(PER_CLASS_METRICS):
        out[k] = vec[base + j * num_classes: base + (j + 1) * num_classes]
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


def metrics_from_counts(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The metric vector (layout of ``_metric_vector``) from per-class counts, for any leading shape.

    ``tp``, ``support`` (true count) and ``predicted`` have shape (..., C) and broadcast together.
    Matches scikit-learn with zero_division=0: precision is 0 for a class never predicted, recall
    and F1 are 0 for a class without support, macro F1 averages all C labels, weighted F1 weights
    by support, and balanced accuracy averages recall over the classes that have support (as
    ``balanced_accuracy_score`` does, which only knows the labels it sees).
    """
    tp, support, predicted = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (tp, support, predicted)))
    total = support.sum(axis=-1)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    present = support > 0
    summary = np.stack([
        _ratio((f1 * support).sum(axis=-1), total),
        f1.mean(axis=-1),
        _ratio(tp.sum(axis=-1), total),
        _ratio((recall * present).sum(axis=-1), present.sum(axis=-1)),
    ], axis=-1)
    return np.concatenate([summary, precision, recall, f1], axis=-1)


def metrics_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """The metric vector from confusion matrices of shape (..., C, C), rows true, columns predicted."""
    confusion = np.asarray(confusion, dtype=np.float64)
    return metrics_from_counts(np.diagonal(confusion, axis1=-2, axis2=-1), confusion.sum(axis=-1),
                               confusion.sum(axis=-2))


def _check_labels(a, num_classes: int, what: str) -> np.ndarray:
    """Integer class labels in [0, num_classes) as an index array."""
    a = np.asarray(a)
    if a.size:
        whole = np.issubdtype(a.dtype, np.integer) or (
            np.issubdtype(a.dtype, np.floating) and bool(np.all(a == np.round(a))))
        if not whole or a.min() < 0 or a.max() >= num_classes:
            raise ValueError(f"{what} must hold integer labels in [0, {num_classes})")
    return a.astype(np.intp)


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """Confusion matrix (C, C), or one per row of ``weights`` (B, n) -> (B, C, C).

    ``weights[b, i]`` is how often test image i counts in resample b (a bootstrap's draw counts).
    """
    y_true = _check_labels(y_true, num_classes, "y_true")
    y_pred = _check_labels(y_pred, num_classes, "y_pred")
    codes = y_true * num_classes + y_pred
    cells = num_classes * num_classes
    if weights is None:
        return np.bincount(codes, minlength=cells).reshape(num_classes, num_classes)
    weights = np.asarray(weights, dtype=np.float64)
    lead = weights.shape[:-1]
    weights = weights.reshape(-1, len(codes))
    offsets = (np.arange(len(weights)) * cells)[:, None]
    flat = np.bincount((offsets + codes).ravel(), weights=weights.ravel(), minlength=len(weights) * cells)
    return flat.reshape(*lead, num_classes, num_classes)


def metric_vectors(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """The metric vector of one evaluation, or of every resample given draw counts ``weights`` (B, n)."""
    return metrics_from_confusion(confusion_counts(y_true, y_pred, num_classes, weights))


def _indicators(y_true: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Columns whose weighted sums are the counts every metric needs: support, then per run predicted and tp.

    Shape (n, C + runs * 2C). One matrix product with the draw counts then gives all resamples' counts.
    """
    eye = np.eye(num_classes)
    cols = [eye[y_true]]
    for pred in preds:
        hit = eye[pred]
        cols += [hit, hit * (pred == y_true)[:, None]]
    return np.concatenate(cols, axis=1)


def _run_metrics(counts: np.ndarray, runs: int, num_classes: int) -> np.ndarray:
    """(B, C + runs*2C) counts -> (B, runs, M) metric vectors."""
    support = counts[:, None, :num_classes]
    per_run = counts[:, num_classes:].reshape(len(counts), runs, 2, num_classes)
    return metrics_from_counts(per_run[:, :, 1], support, per_run[:, :, 0])


def _bootstrap_p(draws: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Two-sided p-value for delta = 0 from the bootstrap's standard error (normal approximation).

    Counting draws on the far side of zero cannot give less than 2 / (resamples + 1): with 1,000
    resamples that floor times 24 Holm tests is already 0.048, so a per-class verdict would be
    decided by the resample count, not by the data. The standard error has no such floor.
    1 where every draw and the point are exactly 0 (identical predictions); 0 where the draws do not
    vary but the point is not 0."""
    se = draws.std(axis=0, ddof=1) if len(draws) > 1 else np.zeros_like(point)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.abs(point) / np.where(se > 0, se, 1.0), np.where(point == 0, 0.0, np.inf))
    p = 2 * stats.norm.sf(z)
    p[np.all(draws == 0, axis=0) & (point == 0)] = 1.0
    return np.minimum(p, 1.0)


def _two_level_draws(per_seed, n: int, k: int, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` two-level bootstrap draws of the mean over seeds of ``per_seed``.

    ``per_seed(weights)`` maps (B, n) test-image draw counts to (B, k, M) per-seed statistics. Each
    draw resamples the n test images (the same for every seed) and the k seeds, both with replacement;
    with one seed only the images."""
    rng = np.random.default_rng(seed)
    draws = None
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        rows = np.arange(b)[:, None]
        images = rng.integers(0, n, (b, n))
        weights = np.bincount((rows * n + images).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        d = per_seed(weights)
        if draws is None:
            draws = np.empty((n_boot, d.shape[-1]))
        if k == 1:
            draws[start:start + b] = d[:, 0]
        else:
            seeds = rng.integers(0, k, (b, k))
            seed_counts = np.bincount((rows * k + seeds).ravel(), minlength=b * k).reshape(b, k)
            draws[start:start + b] = np.einsum("bs,bsm->bm", seed_counts.astype(np.float64), d) / k
    return draws


def hierarchical_bootstrap(y_true: np.ndarray, preds_base: np.ndarray, preds_arm: np.ndarray, num_classes: int,
                           n_boot: int = 1000, seed: int = 0, level: float = 0.95
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paired two-level bootstrap of metric deltas (arm - baseline) over seeds and test images.

    ``preds_base`` and ``preds_arm`` are (k, n): row i of both is training seed i, all scored on the
    same test labels ``y_true`` (n,). Each resample draws k seeds and n test images with replacement
    (the same images for both arms and every drawn seed) and takes the mean over the drawn seeds of
    metrics(arm) - metrics(baseline) on those images. Returns (point, low, high, p_value), each a
    metric vector: point is the mean per-seed delta on the full test set, low/high the percentile
    interval at ``level``, p_value the two-sided bootstrap p-value for a zero delta. With k = 1 this
    is the plain paired bootstrap over test images.
    """
    y_true = _check_labels(np.asarray(y_true).ravel(), num_classes, "y_true")
    preds_base = _check_labels(np.atleast_2d(preds_base), num_classes, "preds_base")
    preds_arm = _check_labels(np.atleast_2d(preds_arm), num_classes, "preds_arm")
    n = len(y_true)
    if preds_base.shape != preds_arm.shape or preds_base.ndim != 2 or preds_base.shape[1] != n:
        raise ValueError(f"preds_base {preds_base.shape} and preds_arm {preds_arm.shape} must both be "
                         f"(seeds, {n}) for {n} test labels")
    if n == 0:
        raise ValueError("the test set is empty")
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    if not 0 < level < 1:
        raise ValueError("level must lie in (0, 1)")
    k = len(preds_base)
    design = _indicators(y_true, np.concatenate([preds_base, preds_arm]), num_classes)

    def deltas(weights: np.ndarray) -> np.ndarray:  # (B, n) draw counts -> (B, k, M) per-seed deltas
        per_run = _run_metrics(weights @ design, 2 * k, num_classes)
        return per_run[:, k:] - per_run[:, :k]

    point = deltas(np.ones((1, n)))[0].mean(axis=0)
    draws = _two_level_draws(deltas, n, k, n_boot, seed)
    low, high = np.percentile(draws, [50 - level * 50, 50 + level * 50], axis=0)
    return point, low, high, _bootstrap_p(draws, point)


def seed_interval(deltas: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t interval of paired per-seed deltas (rows = seeds)."""
    deltas = np.asarray(deltas, dtype=np.float64)
    mean = deltas.mean(axis=0)
    k = len(deltas)
    sem = deltas.std(axis=0, ddof=1) / np.sqrt(k)
    half = stats.t.ppf(0.5 + level / 2, df=k - 1) * sem
    return mean, mean - half, mean + half


def bootstrap_interval(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, num_classes: int,
                       n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Paired bootstrap over test images of metrics(b) - metrics(a): both arms see the same resamples."""
    point, low, high, _ = hierarchical_bootstrap(y_true, np.asarray(pred_a)[None], np.asarray(pred_b)[None],
                                                 num_classes, n_boot=n_boot, seed=seed, level=level)
    return point, low, high


def compare_arms(baseline: list[dict], arm: list[dict], num_classes: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """Deltas (arm - baseline) of every metric with a 95% CI and a p-value; runs are paired by seed.

    Each run dict holds ``y_true`` and ``y_pred`` of the test set (the same test set for every run).
    The interval is the paired hierarchical bootstrap (``hierarchical_bootstrap``) for any number of
    seeds; ``covers_training_noise`` says whether there were at least two seeds to resample.
    """
    if len(baseline) != len(arm):
        raise ValueError(f"baseline has {len(baseline)} seeds and the arm {len(arm)}: they need the same seeds")
    if not arm:
        raise ValueError("no runs to compare")
    for a, b in zip(baseline, arm):
        if "seed" in a and "seed" in b and a["seed"] != b["seed"]:
            raise ValueError(f"runs are paired by seed, but baseline seed {a['seed']} meets arm seed {b['seed']}")
    runs = [*baseline, *arm]
    missing = [i for i, r in enumerate(runs) if "y_true" not in r or "y_pred" not in r]
    if missing:
        raise ValueError("every run needs y_true and y_pred of the test set for the bootstrap")
    y = np.asarray(runs[0]["y_true"])
    if any(not np.array_equal(np.asarray(r["y_true"]), y) for r in runs[1:]):
        raise ValueError("the runs were scored on different test labels; pairing needs one test set")
    preds = [np.asarray(r["y_pred"]) for r in runs]
    if any(p.shape != y.shape for p in preds):
        raise ValueError("every run's y_pred must have one prediction per test label")
    k = len(arm)
    point, low, high, p = hierarchical_bootstrap(y, np.stack(preds[:k]), np.stack(preds[k:]), num_classes,
                                                 n_boot=n_boot, seed=seed)
    if k >= 2:
        method = f"paired hierarchical bootstrap over {k} seeds and {len(y)} test images ({n_boot} resamples)"
    else:
        method = (f"paired bootstrap over {len(y)} test images ({n_boot} resamples); one training seed, "
                  "so the interval does not cover training noise")
    point, low, high, p = (_unflatten(v, num_classes) for v in (point, low, high, p))
    out: dict = {"method": method, "covers_training_noise": k >= 2, "seeds": k}
    for key in (*SUMMARY_METRICS, *PER_CLASS_METRICS):
        m, lo, hi, pv = (np.atleast_1d(np.asarray(v[key], dtype=np.float64)) for v in (point, low, high, p))
        entries = [{"delta": float(a), "ci_low": float(b), "ci_high": float(c), "includes_zero": bool(b <= 0 <= c),
                    "p_value": float(d)} for a, b, c, d in zip(m, lo, hi, pv)]
        out[key] = entries[0] if key in SUMMARY_METRICS else entries
    return out


def arm_interval(runs: list[dict], num_classes: int, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 metric: str = "weighted_f1") -> dict:
    """One arm's ``metric``, mean over its seeds, with the same two-level bootstrap interval as the
    deltas (seeds and test images): the error bars of the data-efficiency curve."""
    y = _check_labels(np.asarray(runs[0]["y_true"]).ravel(), num_classes, "y_true")
    preds = _check_labels(np.stack([np.asarray(r["y_pred"]) for r in runs]), num_classes, "y_pred")
    k, n = preds.shape
    index = SUMMARY_METRICS.index(metric)
    design = _indicators(y, preds, num_classes)

    def per_seed(weights: np.ndarray) -> np.ndarray:
        return _run_metrics(weights @ design, k, num_classes)[:, :, index:index + 1]

    point = float(per_seed(np.ones((1, n)))[0].mean())
    low, high = np.percentile(_two_level_draws(per_seed, n, k, n_boot, seed)[:, 0], [50 - level * 50, 50 + level * 50])
    return {"mean": point, "ci_low": float(low), "ci_high": float(high), "seeds": k,
            "covers_training_noise": k >= 2}


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, same shape as the input, monotone, capped at 1.

    Sorted ascending, the i-th smallest of m p-values becomes max over j <= i of (m - j + 1) p_(j).
    Tied p-values get the same adjusted value.
    """
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.ravel()
    if np.isnan(flat).any() or (flat < 0).any() or (flat > 1).any():
        raise ValueError("p-values must lie in [0, 1]")
    m = flat.size
    order = np.argsort(flat, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * flat[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.reshape(p.shape)


def correct_per_class(comparisons: dict[str, dict], alpha: float = 0.05, unit: str = "arms") -> dict[str, dict]:
    """Holm-correct the per-class verdicts of ``{arm_name: compare_arms output}``; mutates and returns it.

    For each per-class metric (precision, recall, F1) separately, all classes x arms form one family:
    every per-class entry gets ``p_holm`` and ``significant`` (p_holm < alpha). The summary metrics are
    not corrected: the headline weighted-F1 delta is the primary endpoint of each arm (one test per
    arm), so their ``significant`` is simply "the 95% CI excludes 0". Each arm records the family in
    ``correction`` (``unit`` names what the family's members are: arms, or comparisons).
    """
    if not comparisons:
        return comparisons
    sizes = {len(c[PER_CLASS_METRICS[0]]) for c in comparisons.values()}
    if len(sizes) != 1:
        raise ValueError("the arms were compared over different numbers of classes")
    num_classes = sizes.pop()
    for metric in PER_CLASS_METRICS:
        entries = [e for c in comparisons.values() for e in c[metric]]
        adjusted = holm([e["p_value"] for e in entries])
        for e, q in zip(entries, adjusted):
            e["p_holm"] = float(q)
            e["significant"] = bool(q < alpha)
    for c in comparisons.values():
        for metric in SUMMARY_METRICS:
            c[metric]["significant"] = not c[metric]["includes_zero"]
        c["correction"] = f"Holm over {num_classes} classes x {len(comparisons)} {unit} (per metric)"
    return comparisons
