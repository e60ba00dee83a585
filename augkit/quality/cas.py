"""Classification accuracy score (CAS, Ravuri & Vinyals 2019): train on synthetic, test on real.

A classifier trained only on generated images and tested on held-out real images learns the classes
only if the generator made them recognisable and varied; a collapsed or class-drifting generator
scores low even when its images look sharp. The reference is the same classifier trained on as many
real training images per class (train on real, test on real): CAS close to it means the synthetic
images carry most of what the real ones teach. Training uses the evaluator's path
(:func:`augkit.evaluate.trainer.train_run`); the best epoch is chosen on a held-out tenth of the
*generated* images, so no real image is used for model selection.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from augkit.cache import cache_key
from augkit.evaluate.classifier import Classifier, ClassifierSpec

__all__ = ["CASSpec", "classification_accuracy_score", "describe"]


@dataclass(frozen=True)
class CASSpec(ClassifierSpec):
    model: str = field(default="resnet18", metadata={"help": "timm model trained on the generated images"})
    reference: bool = field(default=True, metadata={"help": "also train on real images (same counts) for comparison"})


def _selection_split(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A tenth of each class (at least one image where a class has two or more) held out for epoch selection."""
    fit, hold = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        k = len(idx) // 10 if len(idx) >= 20 else int(len(idx) >= 2)
        hold.append(idx[:k])
        fit.append(idx[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(hold))


def _one(images: np.ndarray, labels: np.ndarray, test: tuple[np.ndarray, np.ndarray], num_classes: int,
         spec: CASSpec, device: str, label: str) -> dict:
    rng = np.random.default_rng(spec.seed)
    fit, hold = _selection_split(labels, rng)
    val = (torch.from_numpy(images[hold]), labels[hold])
    _, run = Classifier.fit(torch.from_numpy(images[fit]), labels[fit], val, spec, range(num_classes), device,
                            test=(torch.from_numpy(test[0]), test[1]), label=label)
    m = run["metrics"]
    return {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "weighted_f1": m["weighted_f1"],
            "per_class_recall": m["per_class"]["recall"], "train_images": int(len(fit)), "best_epoch": run["best_epoch"]}


def _cached(cache_dir: Path | None, parts: list[np.ndarray], spec: CASSpec, compute) -> dict:
    """``compute()``, or its earlier result for the same arrays and spec (the reference run is the same for
    every shard with the same per-class counts, e.g. +50% from several augmenters)."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"reference-{cache_key(dataclasses.asdict(spec), *parts)}.json"
    if path.is_file():
        return {**json.loads(path.read_text()), "cached": True}
    result = compute()
    from augkit import atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, result)
    return result


def classification_accuracy_score(fake: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                                  num_classes: int, spec: CASSpec, device: str,
                                  real: tuple[np.ndarray, np.ndarray] | None = None,
                                  cache_dir: Path | None = None) -> dict:
    """Train on ``fake`` = (uint8 images, labels in the real class order), test on real ``test`` images.

    With ``real`` (the real training images and labels) and ``spec.reference``, the same classifier is
    also trained on real images, as many per class as the generated set has (fewer where the class has
    fewer), and tested on the same images; with ``cache_dir`` that run is reused when the same images and
    settings come again. Returns ``{"cas": {...}, "reference": {...} | None, ...}``.
    """
    images, labels = fake
    if len(images) < 2:
        raise ValueError(f"classification_accuracy_score: needs generated images to train on, got {len(images)}")
    out = {"cas": _one(images, labels, test, num_classes, spec, device, "CAS (train on generated)"),
           "reference": None, "test_images": int(len(test[1])), "model": spec.model, "epochs": spec.epochs,
           "seed": spec.seed}
    if real is not None and spec.reference:
        rng = np.random.default_rng(spec.seed)
        wanted = np.bincount(labels, minlength=num_classes)
        pick = np.concatenate([rng.choice(np.flatnonzero(real[1] == c), min(int(wanted[c]), int((real[1] == c).sum())),
                                          replace=False) for c in range(num_classes)])
        pick = np.sort(pick)
        images_r, labels_r = real[0][pick], real[1][pick]
        out["reference"] = _cached(cache_dir, [images_r, labels_r, test[0], test[1]], spec, lambda: _one(
            images_r, labels_r, test, num_classes, spec, device, "reference (train on real)"))
        out["chance"] = 1 / num_classes
        # A reference nearer chance than perfect learnt too little from these images and epochs: a CAS
        # close to it, or above it, then says nothing about the generator. Balanced accuracy, whose chance
        # is 1/classes however unequal the test classes (answering the largest class scores more in accuracy).
        out["uninformative"] = out["reference"]["balanced_accuracy"] < (1 + out["chance"]) / 2
    return out


def describe(result: dict) -> str:
    """One line on a CAS result: the score against its real-trained reference, or why it says little."""
    c, ref = result["cas"]["accuracy"], result.get("reference")
    if ref is None:
        return f"CAS {c:.3f} (no real-trained reference)"
    if result.get("uninformative"):
        return (f"uninformative: the reference trained on as many real images reached a balanced accuracy of only "
                f"{ref['balanced_accuracy']:.3f} (chance {result['chance']:.3f}) in {result['epochs']} epochs, so "
                f"CAS {c:.3f} is set against a classifier that learnt little; raise the CAS epochs (--cas-epochs, "
                "or cas_epochs in a recipe's [quality])")
    return f"CAS {c:.3f} vs {ref['accuracy']:.3f} when trained on as many real images"
