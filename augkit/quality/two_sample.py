"""A real-vs-fake two-sample test: can a small classifier tell generated images from real ones?

Held-out accuracy 0.5 means indistinguishable (to this classifier, at this amount of data); 1.0 means
every generated image gives itself away. It is the machine version of the thesis's expert test, where
a haematologist reached 0.71 on real vs AC-GAN images. The classifier is trained with the evaluator's
training path (:func:`augkit.evaluate.trainer.train_run`) on balanced classes, the best epoch is chosen
on a validation part, and accuracy is measured on a third part never used for either.

A classifier that gives (nearly) every held-out image the same side has learnt nothing, and its 0.5
says nothing about the images: that result is marked ``inconclusive`` (too few images per side, or too
few epochs), never reported as "indistinguishable".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import binomtest

from augkit.evaluate.classifier import Classifier, ClassifierSpec

__all__ = ["TwoSampleSpec", "real_vs_fake"]

#: a classifier that puts at least this share of the held-out images on one side has not learnt to
#: separate them
ONE_SIDED = 0.95


@dataclass(frozen=True)
class TwoSampleSpec(ClassifierSpec):
    model: str = field(default="resnet10t", metadata={"help": "timm model of the real-vs-fake classifier"})
    max_per_side: int = field(default=2000, metadata={"min": 8, "help": "images per side, at most"})


def _thirds(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions 0..n-1 shuffled and cut 50/25/25 into train, validation and test parts."""
    order = rng.permutation(n)
    a, b = n // 2, n // 2 + n // 4
    return order[:a], order[a:b], order[b:]


def real_vs_fake(real: np.ndarray, fake: np.ndarray, spec: TwoSampleSpec, device: str) -> dict:
    """Train real (label 0) vs generated (label 1) on uint8 (n, H, W, 3) images; held-out accuracy with
    a 95% Wilson interval and the one-sided binomial p-value of "better than chance".

    Both sides are subsampled to the same size (``min(len(real), len(fake), max_per_side)``), so 0.5
    is exactly chance; each side is cut 50/25/25 into train/validation/test.
    """
    n = min(len(real), len(fake), spec.max_per_side)
    if n < 8:
        raise ValueError(f"real_vs_fake: needs at least 8 images per side, got {len(real)} real and {len(fake)} generated")
    rng = np.random.default_rng(spec.seed)
    real = real[rng.choice(len(real), n, replace=False)]
    fake = fake[rng.choice(len(fake), n, replace=False)]
    parts_r, parts_f = _thirds(n, rng), _thirds(n, rng)

    def part(k: int) -> tuple[torch.Tensor, np.ndarray]:
        x = np.concatenate([real[parts_r[k]], fake[parts_f[k]]])
        y = np.concatenate([np.zeros(len(parts_r[k]), np.int64), np.ones(len(parts_f[k]), np.int64)])
        return torch.from_numpy(x), y

    (train_x, train_y), val, test = part(0), part(1), part(2)
    _, run = Classifier.fit(train_x, train_y, val, spec, ("real", "generated"), device, test=test, label="real vs fake")
    predicted = np.asarray(run["y_pred"])
    correct = int((predicted == test[1]).sum())
    total = len(test[1])
    said_generated = float((predicted == 1).mean())
    ci = binomtest(correct, total, 0.5).proportion_ci(0.95, method="wilson")  # two-sided interval
    p_value = binomtest(correct, total, 0.5, alternative="greater").pvalue
    return {"accuracy": correct / total, "ci_low": float(ci.low), "ci_high": float(ci.high),
            "p_value": float(p_value), "test_images": total, "per_side": n, "model": spec.model,
            "epochs": spec.epochs, "best_epoch": run["best_epoch"], "seed": spec.seed,
            "predicted_generated": said_generated,
            "inconclusive": max(said_generated, 1 - said_generated) >= ONE_SIDED}


def describe(t: dict, expert: float) -> str:
    """One line for a report of result ``t``: the accuracy with its interval, or why it says nothing."""
    if t.get("inconclusive"):
        side = "generated" if t["predicted_generated"] >= 0.5 else "real"
        share = max(t["predicted_generated"], 1 - t["predicted_generated"])
        return (f"inconclusive: the classifier called {share:.0%} of the {t['test_images']} held-out images "
                f"'{side}', so it did not learn to separate them (too few images per side, {t['per_side']}, or "
                f"epochs, {t['epochs']}); its accuracy {t['accuracy']:.3f} says nothing about the images")
    return (f"held-out accuracy {t['accuracy']:.3f} [{t['ci_low']:.3f}, {t['ci_high']:.3f}] on {t['test_images']} "
            f"images (0.5 = indistinguishable; the thesis's expert {expert})")
