"""The class-consistency filter: keep a generated image only when a classifier of real images agrees.

A generator can drift out of the class it was asked for (the thesis saw interpolations and AC-GAN
samples change class). The filter trains a classifier on the real training split once, then keeps a
generated image of class c only when that classifier gives it class c with probability >= threshold.
It works with any augmenter: the driver asks for more candidates until the amount is reached, records
the acceptance rate per class, and refuses clearly when a class's rate makes the amount unreachable.

With ``manifold_k`` > 0 it is *selective* synthetic augmentation: a confident image is also kept only
when its features (the same classifier's penultimate layer) fall inside the real class's manifold,
the union of balls around each real training image of the class reaching its k-th nearest real
neighbour of that class (the precision estimate of Kynkäänniemi et al. 2019, per image). Confidence
alone keeps images far from any real cell as long as they sit deep inside a class's decision region;
the manifold test drops those, and counts them apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augkit import atomic, distributed
from augkit.cache import cache_key
from augkit.data.reader import ImageDataset
from augkit.data.split import rows_fingerprint
from augkit.errors import DataError, UserError
from augkit.evaluate.classifier import WEIGHTS, Classifier, ClassifierSpec


@dataclass(frozen=True)
class FilterSpec(ClassifierSpec):
    threshold: float = field(default=0.8, metadata={
        "min": 0, "max": 1, "help": "keep an image when p(its intended class) >= threshold"})
    model: str = field(default="resnet18", metadata={"help": "timm model of the filter's classifier"})
    epochs: int = field(default=5, metadata={"min": 1})
    max_tries: float = field(default=10.0, metadata={
        "min": 1, "help": "give up on a class after this many candidates per requested image"})
    manifold_k: int = field(default=0, metadata={
        "min": 0, "help": "selective: also keep an image only inside the real class's k-nearest-neighbour manifold "
                          "in the classifier's features (k-th neighbour radius); 0 = confidence only"})

    def classifier_fields(self) -> dict:
        """What the classifier depends on (not how its answers are used): the key of a trained filter."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ClassifierSpec)}


class ConsistencyFilter:
    """A classifier of real images and the threshold it applies; counts what it saw per class."""

    def __init__(self, classifier: Classifier, spec: FilterSpec | None = None) -> None:
        """``spec``: how to use the classifier (threshold, tries, manifold test); default: the spec it was
        trained with."""
        self.classifier = classifier
        self.spec: FilterSpec = spec if spec is not None else classifier.spec
        self.class_names = classifier.class_names
        self.val_metrics = classifier.val_metrics
        self.tried = np.zeros(len(self.class_names), np.int64)
        self.accepted = np.zeros(len(self.class_names), np.int64)
        self.outside = np.zeros(len(self.class_names), np.int64)  # confident, but off the real manifold
        self.manifold: list[tuple[np.ndarray, np.ndarray]] | None = None  # per class: real features, radii

    @classmethod
    def train(cls, train: ImageDataset, val: ImageDataset, spec: FilterSpec, device: str) -> "ConsistencyFilter":
        """Train the classifier on the real training images (a fixed number of epochs, as the filter
        documents); the best validation epoch is kept."""
        return cls(Classifier.fit_dataset(train, val, spec, device, label="filter classifier"))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax over classes for uint8 (n, H, W, 3) images."""
        return self.classifier.probabilities(images)

    def fit_manifold(self, train: ImageDataset, max_per_class: int = 5000, seed: int = 0) -> "ConsistencyFilter":
        """Embed the real training images of every class (at most ``max_per_class``, drawn with ``seed``)
        and the radius of each to its ``manifold_k``-th nearest neighbour of its class: what
        :meth:`accept` tests generated images against. Returns the filter."""
        from augkit.quality.manifold import knn_radii

        k, labels = self.spec.manifold_k, np.asarray(train.labels)
        rng = np.random.default_rng(seed)
        self.manifold = []
        for c, name in enumerate(self.class_names):
            members = np.flatnonzero(labels == c)
            if len(members) <= k:
                raise UserError(f"filter: class '{name}' has {len(members)} training images; the manifold test with "
                                f"manifold_k = {k} needs more than k (lower manifold_k, or 0 for confidence only)")
            if len(members) > max_per_class:
                members = np.sort(rng.choice(members, max_per_class, replace=False))
            features = self.classifier.features(train.read(members))
            self.manifold.append((features, knn_radii(features, k)))
        return self

    def accept(self, images: np.ndarray, label: int) -> np.ndarray:
        """Boolean mask of the images kept as class ``label``; updates the per-class counts."""
        keep = self.probabilities(images)[:, label] >= self.spec.threshold
        if self.spec.manifold_k and keep.any():
            if self.manifold is None:
                raise RuntimeError("a selective filter (manifold_k > 0) needs fit_manifold(train) before accept()")
            inside = np.zeros(len(images), bool)
            inside[keep] = self._inside(self.classifier.features(images[keep]), label)
            self.outside[label] += int((keep & ~inside).sum())
            keep &= inside
        self.tried[label] += len(images)
        self.accepted[label] += int(keep.sum())
        return keep

    def _inside(self, features: np.ndarray, label: int) -> np.ndarray:
        """Which feature vectors lie in at least one real ball of class ``label``."""
        from augkit.quality.manifold import ball_counts

        centres, radii = self.manifold[label]
        return ball_counts(features, centres, radii) > 0

    def rates(self) -> dict[str, dict]:
        """Per class: candidates tried, accepted, and the acceptance rate (selective: also how many
        confident candidates lay outside the real manifold)."""
        out = {}
        for name, t, a, o in zip(self.class_names, self.tried, self.accepted, self.outside):
            out[name] = {"tried": int(t), "accepted": int(a), "rate": (float(a / t) if t else None)}
            if self.spec.manifold_k:
                out[name]["outside_manifold"] = int(o)
        return out

    def save(self, path: str | Path) -> Path:
        return self.classifier.save(path)

    @classmethod
    def load(cls, path: str | Path, device: str, spec: FilterSpec | None = None) -> "ConsistencyFilter":
        return cls(Classifier.load(path, device, FilterSpec), spec)

    @classmethod
    def ready(cls, path: str | Path, device: str, spec: FilterSpec, train: ImageDataset) -> "ConsistencyFilter":
        """The saved classifier at ``path`` used as ``spec`` says, ready for :meth:`accept`: a selective
        spec also embeds ``train``'s real images (its manifold)."""
        return cls.load(path, device, spec).judging(spec, train)

    def judging(self, spec: FilterSpec, train: ImageDataset) -> "ConsistencyFilter":
        """A fresh filter (counts at zero) over this classifier, used as ``spec`` says; a selective spec
        also embeds ``train``'s real images (its manifold)."""
        consistency = ConsistencyFilter(self.classifier, spec)
        if spec.manifold_k:
            consistency.fit_manifold(train)
        return consistency


def filter_for(spec: FilterSpec, train: ImageDataset, val: ImageDataset, device: str, cache_dir: Path,
               say=lambda line: None) -> ConsistencyFilter:
    """The filter ``spec`` asks for, its classifier trained on ``train`` (epoch chosen on ``val``) once
    and kept under ``cache_dir``/<key>: keyed by what the classifier depends on (not the threshold or
    the manifold test, which only use it), the dataset's fingerprint and the rows, so filters that
    differ only in how they judge share one classifier."""
    from augkit import __version__

    if len(val) == 0:
        raise DataError("filter: the split has no validation images; the filter's classifier chooses its epoch on "
                        "them (split with --val > 0)")
    fingerprint = getattr(getattr(train, "info", None), "fingerprint", None)
    record = {"classifier": spec.classifier_fields(), "augkit": __version__, "data": fingerprint,
              "train_rows": rows_fingerprint(train.rows), "val_rows": rows_fingerprint(val.rows),
              **distributed.cache_key_fields()}
    folder = Path(cache_dir) / cache_key(record)
    # rank 0 decides for every rank: ranks that disagreed would not all join the training's collectives
    cached = fingerprint is not None and distributed.run_on_main(lambda: (folder / WEIGHTS).is_file())
    if cached:
        say(f"filter: reusing the {spec.model} classifier in {folder}")
        return ConsistencyFilter.ready(folder, device, spec, train)
    say(f"filter: training a {spec.model} classifier on {len(train)} real training images ({spec.epochs} epochs)")
    # images without a file's fingerprint have no key worth keeping
    trained = train_filter(spec, train, val, device, folder if fingerprint is not None else None, record)
    return trained.judging(spec, train)


def train_filter(spec: FilterSpec, train: ImageDataset, val: ImageDataset, device: str, folder: Path | None,
                 record: dict) -> ConsistencyFilter:
    """Train the filter's classifier and, unless ``folder`` is None, keep it there whole or not at all
    (``record`` and the validation metrics beside it in filter.json), written by rank 0."""
    trained = ConsistencyFilter.train(train, val, spec, device)
    if folder is not None:

        def save() -> None:
            folder.parent.mkdir(parents=True, exist_ok=True)
            with atomic.folder(folder) as tmp:
                trained.save(tmp)
                atomic.write_json(tmp / "filter.json", {**record, "val_metrics": trained.val_metrics})

        distributed.run_on_main(save)
    return trained
