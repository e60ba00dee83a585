"""Classification metrics and the confidence intervals of their differences between arms.

All metrics come from scikit-learn. A delta between an augmented arm and the baseline gets a 95%
confidence interval: over seeds (paired by seed, Student t) when there are several, or by a paired
bootstrap over the test images when there is one seed.
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
    rng = np.random.default_rng(seed)
    n = len(y_true)
    point = _metric_vector(classification_metrics(y_true, pred_b, num_classes)) - _metric_vector(
        classification_metrics(y_true, pred_a, num_classes))
    draws = np.empty((n_boot, len(point)))
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        draws[i] = _metric_vector(classification_metrics(y_true[idx], pred_b[idx], num_classes)) - _metric_vector(
            classification_metrics(y_true[idx], pred_a[idx], num_classes))
    low, high = np.percentile(draws, [50 - level * 50, 50 + level * 50], axis=0)
    return point, low, high


def compare_arms(baseline: list[dict], arm: list[dict], num_classes: int, n_boot: int = 1000) -> dict:
    """Deltas (arm - baseline) of every metric with a 95% CI; runs are paired by seed.

    Each run dict holds ``metrics`` (from classification_metrics), and for the bootstrap ``y_true`` and
    ``y_pred`` of the test set.
    """
    if len(baseline) != len(arm):
        raise ValueError("baseline and arm need the same seeds")
    if len(arm) >= 2:
        deltas = np.stack([_metric_vector(b["metrics"]) - _metric_vector(a["metrics"]) for a, b in zip(baseline, arm)])
        mean, low, high = seed_interval(deltas)
        method = f"Student t over {len(arm)} seeds (paired)"
    else:
        y = np.asarray(baseline[0]["y_true"])
        mean, low, high = bootstrap_interval(y, np.asarray(baseline[0]["y_pred"]), np.asarray(arm[0]["y_pred"]),
                                             num_classes, n_boot=n_boot)
        method = f"paired bootstrap over {len(y)} test images ({n_boot} resamples)"
    mean, low, high = (_unflatten(v, num_classes) for v in (mean, low, high))
    out = {"method": method}
    for key in (*SUMMARY_METRICS, *PER_CLASS_METRICS):
        m, lo, hi = (np.atleast_1d(np.asarray(v[key], dtype=np.float64)) for v in (mean, low, high))
        entries = [{"delta": float(a), "ci_low": float(b), "ci_high": float(c),
                    "includes_zero": bool(b <= 0 <= c)} for a, b, c in zip(m, lo, hi)]
        out[key] = entries[0] if key in SUMMARY_METRICS else entries
    return out
