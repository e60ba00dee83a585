"""The feature space of augkit's quality metrics: its own classifier, trained on the real training split.

Public GAN metrics (FID, KID, precision/recall) embed images with ImageNet Inception weights fetched
from the internet; this machine and many hospital networks cannot fetch them, and ImageNet features
are a questionable ruler for blood cells anyway. augkit embeds images with the penultimate layer of a
timm classifier trained on the real training images (the same training path as the class-consistency
filter, :class:`augkit.filter.ConsistencyFilter`). Numbers in that space are comparable only between
runs with the same extractor, so every output names it (:attr:`FeatureExtractor.identity`).

Features are cached on disk, keyed by the dataset's fingerprint, the rows and the extractor's identity
(its weights' hash): assessing four shards against one real split embeds the real images once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augkit import atomic
from augkit.cache import cache_key
from augkit.data.reader import ImageDataset
from augkit.data.split import rows_fingerprint
from augkit.errors import UserError
from augkit.evaluate.classifier import WEIGHTS, Classifier, ClassifierSpec

__all__ = ["ExtractorSpec", "FeatureExtractor", "cached_features", "extractor_for"]


@dataclass(frozen=True)
class ExtractorSpec(ClassifierSpec):
    """How to train the feature extractor when no saved one is given."""

    model: str = field(default="resnet18", metadata={"help": "timm model whose penultimate layer gives the features"})
    epochs: int = field(default=3, metadata={"min": 1, "help": "training epochs on the real training split"})


class FeatureExtractor:
    """Pooled penultimate-layer features (timm ``forward_head(pre_logits=True)``) of a trained classifier."""

    def __init__(self, classifier: Classifier, identity: dict) -> None:
        self.classifier = classifier
        self.identity = identity
        self.folder: Path | None = None

    def describe(self) -> str:
        i = self.identity
        f1 = i.get("val_weighted_f1")
        return (f"augkit's own {i['model']} classifier trained for {i['epochs']} epoch(s) on {i['train_images']} real "
                f"training images" + (f" (validation weighted F1 {f1:.3f})" if f1 is not None else "")
                + f", penultimate layer, {i.get('dim', '?')}-d; weights sha256 {i['weights_sha256'][:12]}"
                "; not Inception: not comparable with published FID/KID")

    def features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(n, d) float32 features of uint8 (n, H, W, 3) images."""
        return self.classifier.features(images, batch_size)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> "FeatureExtractor":
        """A classifier saved by :func:`extractor_for` (or a consistency filter's ``classifier.pt`` folder)."""
        folder = Path(folder)
        if not (folder / WEIGHTS).is_file():
            raise UserError(f"{folder}: no {WEIGHTS} here; --features takes a timm model name or a folder "
                            "saved by a previous `augkit quality` run (its extractor/ folder)")
        classifier = Classifier.load(folder, device)
        meta_file = folder / "extractor.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        identity = {"model": classifier.spec.model, "epochs": classifier.spec.epochs, "seed": classifier.spec.seed,
                    "train_images": meta.get("train_images", "?"), "trained_on": meta.get("trained_on"),
                    "val_weighted_f1": classifier.val_metrics.get("val_weighted_f1"),
                    "weights_sha256": hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest(),
                    "classes": list(classifier.class_names), "dim": getattr(classifier.model, "num_features", None)}
        extractor = cls(classifier, identity)
        extractor.folder = folder.resolve()  # where it lives: not part of the identity (caches stay valid if moved)
        return extractor




def extractor_for(features: str | Path, train: ImageDataset, val: ImageDataset, spec: ExtractorSpec,
                  cache_dir: Path, device: str, say=lambda line: None) -> FeatureExtractor:
    """The extractor ``features`` names: a saved folder, or a timm model name trained on ``train``
    (validated on ``val``) once and kept under ``cache_dir``/<key>, keyed by the spec, the dataset's
    fingerprint and the training rows."""
    path = Path(str(features)).expanduser()
    if path.is_dir():
        return FeatureExtractor.load(path, device)
    if "/" in str(features) or str(features).startswith("."):
        raise UserError(f"{features}: no such extractor folder (--features takes a timm model name or a folder "
                        "saved by a previous run)")
    spec = dataclasses.replace(spec, model=str(features))
    fingerprint = getattr(getattr(train, "info", None), "fingerprint", None)
    record = {"spec": dataclasses.asdict(spec), "data": fingerprint, "train_rows": rows_fingerprint(train.rows),
              "val_rows": rows_fingerprint(val.rows)}
    folder = Path(cache_dir) / cache_key(record)
    if fingerprint is None or not (folder / WEIGHTS).is_file():
        say(f"features: training a {spec.model} classifier on {len(train)} real training images "
            f"({spec.epochs} epochs) as the feature extractor")
        classifier = Classifier.fit_dataset(train, val, spec, device, label="feature extractor")
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic.folder(folder) as tmp:
            classifier.save(tmp)
            atomic.write_json(tmp / "extractor.json", {**record, "train_images": len(train), "trained_on": fingerprint})
    else:
        say(f"features: reusing the {spec.model} feature extractor in {folder}")
    return FeatureExtractor.load(folder, device)


def cached_features(extractor, ds: ImageDataset, cache_dir: Path | None) -> np.ndarray:
    """Features of every image of the view ``ds``, from ``cache_dir`` when computed before.

    The cache key is the dataset file's fingerprint, the view's rows and the extractor's identity;
    in-memory datasets (no fingerprint) are never cached. ``extractor`` needs ``features(images)``
    and an ``identity`` dict.
    """
    fingerprint = getattr(getattr(ds, "info", None), "fingerprint", None)
    target = None
    if cache_dir is not None and fingerprint:
        # the rows in their order: the features come back in it
        target = Path(cache_dir) / f"{cache_key({'data': fingerprint, 'extractor': extractor.identity}, ds.rows)}.npy"
        if target.is_file():
            return np.load(target)
    feats = np.concatenate([extractor.features(images) for images, _ in ds.iter_batches(1024)])
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_binary(target, lambda fh: np.save(fh, feats))
    return feats
