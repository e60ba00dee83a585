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

__all__ = ["CHECKS", "QualitySpec", "assess", "check_compatible"]

CHECKS = ("distances", "manifold", "diversity", "memorisation", "cas", "two_sample")
SCHEMA = 1


@dataclass(frozen=True)
class QualitySpec:
    """Settings of an assessment (the keys of a recipe's ``[quality]`` table, except ``enabled``)."""

    features: str = field(default="resnet18", metadata={
        "help": "timm model trained on the real training split as the feature extractor, or a saved extractor folder"})
    epochs: int = field(default=3, metadata={"min": 1, "help": "feature extractor's training epochs"})
    checks: list[str] = field(default_factory=lambda: list(CHECKS), metadata={"help": f"any of {', '.join(CHECKS)}"})
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
    seed: int = field(default=0, metadata={"min": 0})

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            from augkit.params import did_you_mean

            raise ValueError(f"parameter 'checks': unknown check '{unknown[0]}'{did_you_mean(unknown[0], CHECKS)} "
                             f"(checks: {', '.join(CHECKS)})")


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


def _labels_in(ds: ImageDataset, real_names: list[str]) -> np.ndarray:
    """``ds``'s labels as positions in ``real_names``, matched by class name (the classes it uses)."""
    labels = ds.labels
    lookup = np.full(len(ds.class_names), -1, np.int64)
    for k in np.unique(labels):
        lookup[k] = real_names.index(ds.class_names[k])
    return lookup[labels]


def _sample(labels: np.ndarray, names, n: int, seed: int, side: int) -> dict[int, np.ndarray]:
    """Up to ``n`` positions per class (see :func:`augkit.quality.diversity.class_positions`)."""
    from augkit.quality.diversity import class_positions

    return {label: class_positions(labels, label, name, n, seed, side) for label, name in enumerate(names)}


def _feature_metrics(real_f: np.ndarray, fake_f: np.ndarray, checks, seed: int) -> dict:
    from augkit.quality.distances import frechet_distance, kernel_distance
    from augkit.quality.manifold import manifold_scores

    row = {}
    if "distances" in checks:
        row["fd"] = frechet_distance(real_f, fake_f)
        row["kid"], row["kid_std"] = kernel_distance(real_f, fake_f, seed=seed)
    if "manifold" in checks:
        scores = manifold_scores(real_f, fake_f, seed=seed)
        row.update({k: scores[k] for k in ("precision", "recall", "density", "coverage")})
    return row


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

    checks = [c for c in CHECKS if c in spec.checks]
    whole: dict[int, np.ndarray] = {}

    def read_whole(view: ImageDataset) -> np.ndarray:
        """All of a view's images, read once (memorisation and CAS both need the real training set)."""
        if id(view) not in whole:
            whole[id(view)] = view.read(np.arange(len(view)))
        return whole[id(view)]

    check_compatible(real, fake, "the real dataset", "the generated dataset", overall_only)
    out_dir = Path(out_dir)
    real_names = list(real.class_names)
    fake_labels = (np.full(len(fake), -1) if overall_only
                   else _labels_in(fake, real_names))
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

    need_features = bool({"distances", "manifold", "memorisation"} & set(checks))
    if need_features:
        say(f"quality: features of {len(real)} real and {len(fake)} generated images")
        features_dir = None if cache_dir is None else Path(cache_dir) / "features"
        real_f, fake_f = cached_features(extractor, real, features_dir), cached_features(extractor, fake, features_dir)
        result["overall"].update(_feature_metrics(real_f[all_real], fake_f[all_fake], checks, spec.seed))
    result["overall"].update({"real_n": int(len(all_real)), "fake_n": int(len(all_fake))})

    classes = {}
    if not overall_only:
        for label, name in enumerate(real_names):
            r, f = real_pos[label], fake_pos[label]
            row = {"class": name, "real_n": int(len(r)), "fake_n": int(len(f)), "note": ""}
            if len(f) == 0:
                row["note"] = "no generated images"
            elif min(len(r), len(f)) < spec.min_class_images:
                row["note"] = f"n too small (< {spec.min_class_images} per side)"
            elif need_features:
                row.update(_feature_metrics(real_f[r], fake_f[f], checks, spec.seed))
            classes[name] = row

    if "diversity" in checks:
        from augkit.quality.diversity import class_diversity, is_collapsed, pairwise_ms_ssim

        say("quality: diversity (pairwise MS-SSIM)")
        n = spec.diversity_images
        rng = np.random.default_rng([spec.seed, 2])
        real_s = real.read(np.sort(rng.choice(len(real), min(len(real), n * 2), replace=False)))
        fake_s = fake.read(np.sort(rng.choice(len(fake), min(len(fake), n * 2), replace=False)))
        real_ms, fake_ms = pairwise_ms_ssim(real_s, seed=spec.seed), pairwise_ms_ssim(fake_s, seed=spec.seed)
        result["overall"].update({"real_ms_ssim": real_ms, "fake_ms_ssim": fake_ms,
                                  "collapsed": is_collapsed(real_ms, fake_ms)})
        if not overall_only:
            for d in class_diversity(real, fake, n=n, seed=spec.seed):
                if d["class"] in classes:
                    classes[d["class"]].update({"real_ms_ssim": d["real_ms_ssim"], "fake_ms_ssim": d["fake_ms_ssim"],
                                                "collapsed": bool(d["collapsed"])})

    if "memorisation" in checks:
        from augkit.quality.memorisation import memorisation, save_closest_pairs

        say("quality: nearest real training image of each generated one")
        real_images = read_whole(real)
        fake_images = fake.read(all_fake)
        mem = memorisation(fake_images, real_images, fake_f[all_fake], real_f, seed=spec.seed)
        closest = save_closest_pairs(fake_images, real_images, mem, out_dir / "closest_pairs.png")
        held_out_rate = None
        if test is not None and len(test):  # the same test on real images that are certainly not copies
            pick = np.sort(np.random.default_rng([spec.seed, 4]).choice(len(test), min(len(test), len(all_fake)),
                                                                          replace=False))
            held_images = test.read(pick)
            held = memorisation(held_images, real_images, extractor.features(held_images), real_f,
                                thresholds=mem["thresholds"])
            held_out_rate = float(held["copy"].mean())
        result["memorisation"] = {
            "thresholds": mem["thresholds"], "checked": int(len(all_fake)), "copies": int(mem["copy"].sum()),
            "copy_rate": float(mem["copy"].mean()), "held_out_real_copy_rate": held_out_rate,
            "pixel_close": int(mem["pixel_close"].sum()), "feature_close": int(mem["feature_close"].sum()),
            "median_pixel_distance": float(np.median(mem["pixel_distance"])),
            "median_feature_distance": float(np.median(mem["feature_distance"])),
            "closest": [{"fake_row": int(fake.rows[all_fake[i]]), "real_row": int(real.rows[mem["pixel_index"][i]]),
                         "pixel_distance": float(mem["pixel_distance"][i]),
                         "feature_distance": float(mem["feature_distance"][i]), "copy": bool(mem["copy"][i])}
                        for i in closest],
            "grid": "closest_pairs.png"}
        result["overall"].update({"copies": int(mem["copy"].sum()), "copy_rate": float(mem["copy"].mean())})
        if not overall_only:
            sampled_labels = fake_labels[all_fake]
            for label, name in enumerate(real_names):
                mask = sampled_labels == label
                if mask.any():
                    classes[name].update({"copies": int(mem["copy"][mask].sum()),
                                          "copy_rate": float(mem["copy"][mask].mean())})

    if "cas" in checks:
        if overall_only:
            result["cas"] = {"skipped": "the generated images have no classes (unconditional generator)"}
        elif test is None or len(test) == 0:
            result["cas"] = {"skipped": "no held-out real images to test on (give a split with a validation part)"}
        else:
            from augkit.quality.cas import CASSpec, classification_accuracy_score

            say(f"quality: train on generated, test on {len(test)} held-out real images (CAS)")
            cas_spec = CASSpec(model=spec.cas_model, epochs=spec.cas_epochs, seed=spec.seed)
            fake_images_all = read_whole(fake)
            cas_real = real if cas_real is None else cas_real
            test_labels = _labels_in(test, real_names)
            cas = classification_accuracy_score((fake_images_all, fake_labels), (test.read(np.arange(len(test))),
                                                test_labels), len(real_names), cas_spec, device,
                                                real=(read_whole(cas_real),
                                                      cas_real.labels.astype(np.int64)),
                                                cache_dir=None if cache_dir is None else Path(cache_dir) / "cas")
            result["cas"] = cas
            result["overall"]["cas_accuracy"] = cas["cas"]["accuracy"]
            if cas["reference"] is not None:
                result["overall"]["reference_accuracy"] = cas["reference"]["accuracy"]
            for label, name in enumerate(real_names):
                classes[name]["cas_recall"] = cas["cas"]["per_class_recall"][label]
                if cas["reference"] is not None:
                    classes[name]["reference_recall"] = cas["reference"]["per_class_recall"][label]

    if "two_sample" in checks:
        from augkit.quality.two_sample import TwoSampleSpec, real_vs_fake

        say("quality: real-vs-fake two-sample classifier")
        ts_spec = TwoSampleSpec(model=spec.two_sample_model, epochs=spec.two_sample_epochs,
                                max_per_side=spec.two_sample_images, seed=spec.seed)
        rng = np.random.default_rng([spec.seed, 3])
        k = min(len(real), len(fake), spec.two_sample_images)
        ts = real_vs_fake(real.read(np.sort(rng.choice(len(real), k, replace=False))),
                          fake.read(np.sort(rng.choice(len(fake), k, replace=False))), ts_spec, device)
        result["two_sample"] = ts
        result["overall"]["real_vs_fake_accuracy"] = ts["accuracy"]

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
