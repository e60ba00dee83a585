"""The class-consistency filter: keep a generated image only when a classifier of real images agrees.

A generator can drift out of the class it was asked for (the thesis saw interpolations and AC-GAN
samples change class). The filter trains a classifier on the real training split once, then keeps a
generated image of class c only when that classifier gives it class c with probability >= threshold.
It works with any augmenter: the driver asks for more candidates until the amount is reached, records
the acceptance rate per class, and refuses clearly when a class's rate makes the amount unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augkit.data.reader import ImageDataset
from augkit.evaluate.classifier import Classifier, ClassifierSpec


@dataclass(frozen=True)
class FilterSpec(ClassifierSpec):
    threshold: float = field(default=0.8, metadata={
        "min": 0, "max": 1, "help": "keep an image when p(its intended class) >= threshold"})
    model: str = field(default="resnet18", metadata={"help": "timm model of the filter's classifier"})
    epochs: int = field(default=5, metadata={"min": 1})
    max_tries: float = field(default=10.0, metadata={
        "min": 1, "help": "give up on a class after this many candidates per requested image"})


class ConsistencyFilter:
    """A classifier of real images and the threshold it applies; counts what it saw per class."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.spec: FilterSpec = classifier.spec
        self.class_names = classifier.class_names
        self.val_metrics = classifier.val_metrics
        self.tried = np.zeros(len(self.class_names), np.int64)
        self.accepted = np.zeros(len(self.class_names), np.int64)

    @classmethod
    def train(cls, train: ImageDataset, val: ImageDataset, spec: FilterSpec, device: str) -> "ConsistencyFilter":
        """Train the classifier on the real training images (a fixed number of epochs, as the filter
        documents); the best validation epoch is kept."""
        return cls(Classifier.fit_dataset(train, val, spec, device, label="filter classifier"))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax over classes for uint8 (n, H, W, 3) images."""
        return self.classifier.probabilities(images)

    def accept(self, images: np.ndarray, label: int) -> np.ndarray:
        """Boolean mask of the images kept as class ``label``; updates the per-class counts."""
        keep = self.probabilities(images)[:, label] >= self.spec.threshold
        self.tried[label] += len(images)
        self.accepted[label] += int(keep.sum())
        return keep

    def rates(self) -> dict[str, dict]:
        """Per class: candidates tried, accepted, and the acceptance rate."""
        return {name: {"tried": int(t), "accepted": int(a), "rate": (float(a / t) if t else None)}
                for name, t, a in zip(self.class_names, self.tried, self.accepted)}

    def save(self, path: str | Path) -> Path:
        return self.classifier.save(path)

    @classmethod
    def load(cls, path: str | Path, device: str) -> "ConsistencyFilter":
        return cls(Classifier.load(path, device, FilterSpec))
