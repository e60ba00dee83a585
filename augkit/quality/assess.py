"""One quality assessment: generated images against the real training images, per class and overall.

This module only chooses images and puts the checks together; each check lives in its own module
(distances, manifold, diversity, memorisation, cas, two_sample) and the text in report.py. The
feature space is augkit's own classifier (features.py), never Inception: every result names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augkit.data.reader import ImageDataset
from augkit.errors import DataError
from augkit.quality.checks import BUILTIN_CHECKS, Assessment, all_checks, labels_in

__all__ = ["CHECKS", "QualitySpec", "assess", "check_compatible"]

CHECKS = BUILTIN_CHECKS  # what an assessment runs unless told otherwise; plugins may register more
SCHEMA = 1


@dataclass(frozen=True)
class QualitySpec:
    """Settings of an assessment (the keys of a recipe's ``[quality]`` table, except ``enabled``)."""

    features: str = field(default="resnet18", metadata={
        "help": "timm model trained on the real training split as the feature extractor, or a saved extractor folder"})
    epochs: int = field(default=3, metadata={"min": 1, "help": "feature extractor's training epochs"})
    checks: list[str] = field(default_factory=lambda: list(CHECKS), metadata={
        "help": f"any of {', '.join(CHECKS)}, or a check a plugin registers"})
    n_per_class: int = field(default=1000, metadata={
        "min": 2, "help": "images per class and side for the feature metrics, at most (sampled with seed)"})
    min_class_images: int = field(default=50, metadata={
        "min": 6, "help": "a class with fewer images on a side gets 'n too small' instead of per-class numbers"})
    diversity_images: int = field(default=100, metadata={"min": 2, "help": "images per class and side for MS-SSIM"})
    cas_model: str = field(default="resnet18", metadata={"help": "timm model of the train-on-synthetic classifier"})
    cas_epochs: int = field(default=3, metadata={"min": 1})
    two_sample_model: str = field(default="resnet10t", metadata={"help": "timm model of the real-vs-fake classifier"})
    two_sample_epochs: int = field(default=3, metadata={"min": 1})
    two_sample_images: int = field(default=2000, metadata={"min": 8, "help": "images per side for real-vs-fake"})
    min_steps: int = field(default=300, metadata={
        "min": 0, "help": "optimiser steps each of the assessment's classifiers (extractor, CAS and its reference, "
                          "real-vs-fake) trains at least, with more epochs than asked where needed (within 30); "
                          "0 = the epochs exactly as given"})
    seed: int = field(default=0, metadata={"min": 0})

    def floored_epochs(self, asked: int, n_train: int, batch_size: int) -> int:
        """The epochs a classifier asked to train ``asked`` epochs on ``n_train`` images in batches of
        ``batch_size`` trains."""
        from augkit.evaluate.classifier import epochs_with_step_floor

        return epochs_with_step_floor(asked, n_train, batch_size, self.min_steps)

    def __post_init__(self) -> None:
        known = list(CHECKS) if all(c in CHECKS for c in self.checks) else list(all_checks())
        unknown = [c for c in self.checks if c not in known]
        if unknown:
            from augkit.params import did_you_mean

            raise ValueError(f"parameter 'checks': unknown check '{unknown[0]}'{did_you_mean(unknown[0], known)} "
                             f"(checks: {', '.join(known)})")


def check_compatible(real: ImageDataset, fake: ImageDataset, real_name: str, fake_name: str,
                     overall_only: bool) -> None:
    """Same image size, and every generated class a real class (unless ``overall_only``); errors name the files."""
    if tuple(real.image_size) != tuple(fake.image_size):
        raise DataError(f"{fake_name}: images are {fake.image_size[0]}x{fake.image_size[1]} px but the real images "
                        f"in {real_name} are {real.image_size[0]}x{real.image_size[1]} px; generate at the real size")
    if not overall_only:
        missing = [n for n in fake.class_names if n not in real.class_names]
        if missing:
            raise DataError(f"{fake_name}: class '{missing[0]}' is not a class of {real_name} (its classes: "
                            f"{', '.join(real.class_names)}); check the class names, or pass --overall-only for an "
                            "unconditional generator")


def _sample(labels: np.ndarray, names, n: int, seed: int, side: int) -> dict[int, np.ndarray]:
    """Up to ``n`` positions per class (see :func:`augkit.quality.diversity.class_positions`)."""
    from augkit.quality.diversity import class_positions

    return {label: class_positions(labels, label, name, n, seed, side) for label, name in enumerate(names)}


def _grid(fake: ImageDataset, real: ImageDataset, fake_pos, real_pos, path: Path, n: int = 8) -> None:
    """Generated images (top row) over real ones (bottom row) of one class."""
    from augkit.images import save_grid

    h, w = real.image_size
    rows = np.full((2 * n, h, w, 3), 255, np.uint8)
    f, r = fake.read(np.asarray(fake_pos[:n])), real.read(np.asarray(real_pos[:n]))
    rows[:len(f)], rows[n:n + len(r)] = f, r
    save_grid(rows, path, columns=n)


def assess(real: ImageDataset, fake: ImageDataset, extractor, spec: QualitySpec, out_dir: Path, *,
           device: str = "cpu", test: ImageDataset | None = None, cas_real: ImageDataset | None = None,
           cache_dir: Path | None = None,
           overall_only: bool = False, worst: int = 3, say=lambda line: None) -> dict:
    """Every check of ``spec.checks`` for ``fake`` against ``real`` (the real training images).

    ``extractor`` gives features (``features(images)``, ``identity``, ``describe()``); ``test`` holds
    held-out real images for the classification accuracy score (skipped without it) and ``cas_real``
    the real images its reference classifier trains on (default ``real``); ``overall_only``
    ignores the generated labels (an unconditional generator). Sample grids go to ``out_dir``; features
    and the CAS reference run are cached under ``cache_dir`` (none: nothing cached).
    Returns the result as plain data (see :func:`augkit.quality.report.write_quality_report`).
    """
    from augkit.quality.features import cached_features

    registered = all_checks()
    checks = [c for c in registered if c in spec.checks]
    check_compatible(real, fake, "the real dataset", "the generated dataset", overall_only)
    out_dir = Path(out_dir)
    real_names = list(real.class_names)
    fake_labels = (np.full(len(fake), -1) if overall_only
                   else labels_in(fake, real_names))
    real_pos = _sample(real.labels, real_names, spec.n_per_class, spec.seed, 0)
    fake_pos = {} if overall_only else _sample(fake_labels, real_names, spec.n_per_class, spec.seed, 1)
    # overall: uniform samples, so each side keeps its own class mix (a per-class cap would change it)
    cap = spec.n_per_class * len(real_names)
    all_real = np.sort(np.random.default_rng([spec.seed, 0]).choice(len(real), min(len(real), cap), replace=False))
    all_fake = np.sort(np.random.default_rng([spec.seed, 1]).choice(len(fake), min(len(fake), cap), replace=False))
    result = {"schema": SCHEMA, "checks": checks, "settings": dataclasses.asdict(spec), "overall_only": overall_only,
              "extractor": {**extractor.identity, "description": extractor.describe(),
                            "folder": str(getattr(extractor, "folder", None) or "")},
              "real_images": len(real), "fake_images": len(fake), "min_class_images": spec.min_class_images,
              "classes": [], "overall": {}}
    a = Assessment(real, fake, extractor, spec, out_dir, device, test, cas_real, cache_dir, overall_only, say,
                   real_names, fake_labels, real_pos, fake_pos, all_real, all_fake, result)
    if not overall_only:
        for label, name in enumerate(real_names):
            r, f = real_pos[label], fake_pos[label]
            note = ("no generated images" if len(f) == 0 else f"n too small (< {spec.min_class_images} per side)"
                    if min(len(r), len(f)) < spec.min_class_images else "")
            a.classes[name] = {"class": name, "real_n": int(len(r)), "fake_n": int(len(f)), "note": note}
    if any(registered[c].needs_features for c in checks):
        say(f"quality: features of {len(real)} real and {len(fake)} generated images")
        features_dir = None if cache_dir is None else Path(cache_dir) / "features"
        a.real_f, a.fake_f = cached_features(extractor, real, features_dir), cached_features(extractor, fake, features_dir)
    for name in checks:
        registered[name].run(a)
    result["overall"].update({"real_n": int(len(all_real)), "fake_n": int(len(all_fake))})
    classes = a.classes

    result["classes"] = list(classes.values())
    ranked = [r for r in result["classes"] if r.get("fd") is not None]
    ranked.sort(key=lambda r: r["fd"], reverse=True)
    result["worst_classes"] = []
    for r in ranked[:worst]:
        label = real_names.index(r["class"])
        path = f"worst_{label}.png"
        _grid(fake, real, fake_pos[label], real_pos[label], out_dir / path)
        result["worst_classes"].append({"class": r["class"], "fd": r["fd"], "grid": path})
    if overall_only or not ranked:
        path = "samples.png"
        _grid(fake, real, all_fake, all_real[np.random.default_rng(spec.seed).permutation(len(all_real))], out_dir / path)
        result["samples_grid"] = path
    return result
