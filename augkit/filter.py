"""The class-consistency filter: keep a generated image only when a classifier of real images agrees.

A generator can drift out of the class it was asked for (the thesis saw interpolations and AC-GAN
samples change class). The filter trains a classifier on the real training split once, then keeps a
generated image of class c only when that classifier gives it class c with probability >= threshold.
It works with any augmenter: the driver asks for more candidates until the amount is reached, records
the acceptance rate per class, and refuses clearly when a class's rate makes the amount unreachable.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from augkit.data.reader import ImageDataset
from augkit.errors import DataError
from augkit.train.checkpoint import load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class FilterSpec:
    threshold: float = field(default=0.8, metadata={
        "min": 0, "max": 1, "help": "keep an image when p(its intended class) >= threshold"})
    model: str = field(default="resnet18", metadata={"help": "timm model of the filter's classifier"})
    epochs: int = field(default=5, metadata={"min": 1})
    batch_size: int = field(default=64, metadata={"min": 1})
    lr: float = field(default=1e-3, metadata={"min": 0})
    max_tries: float = field(default=10.0, metadata={
        "min": 1, "help": "give up on a class after this many candidates per requested image"})
    seed: int = field(default=0, metadata={"min": 0})


class ConsistencyFilter:
    """A classifier of real images and the threshold it applies; counts what it saw per class."""

    def __init__(self, model: torch.nn.Module, spec: FilterSpec, class_names: tuple[str, ...], device: str,
                 val_metrics: dict | None = None) -> None:
        self.model = model.eval()
        self.spec = spec
        self.class_names = tuple(class_names)
        self.device = torch.device(device)
        self.val_metrics = val_metrics or {}
        self.tried = np.zeros(len(class_names), np.int64)
        self.accepted = np.zeros(len(class_names), np.int64)

    @classmethod
    def train(cls, train: ImageDataset, val: ImageDataset, spec: FilterSpec, device: str) -> "ConsistencyFilter":
        """Train the classifier on the real training images; the best validation epoch is kept."""
        from augkit.evaluate.trainer import TrainConfig, train_run

        from augkit.loading import fits_in_memory, image_bytes

        cfg = TrainConfig.probe(spec.model, spec.epochs, spec.batch_size, spec.lr)  # fixed length, as the filter documents
        if fits_in_memory(image_bytes([train, val])):
            x = torch.from_numpy(train.read(np.arange(len(train))))
            val_t = (torch.from_numpy(val.read(np.arange(len(val)))), val.labels)
        else:  # larger than the memory budget: streamed from the file
            x, val_t = train, (val, val.labels)
        run = train_run(x, torch.from_numpy(train.labels), val_t, val_t, len(train.class_names), cfg, spec.seed,
                        device, label="filter classifier", keep_model=True)
        metrics = {"val_weighted_f1": run["metrics"]["weighted_f1"], "best_epoch": run["best_epoch"]}
        return cls(run["model"], spec, train.class_names, device, metrics)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax over classes for uint8 (n, H, W, 3) images."""
        from augkit.evaluate.trainer import batched_outputs

        model = self.model
        out = batched_outputs(lambda x: torch.softmax(model(x).float(), 1), model, images, self.device)
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.class_names)))

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
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path / "classifier.pt", {"model": self.model.state_dict(), "spec": json.dumps(
            dataclasses.asdict(self.spec)), "class_names": json.dumps(self.class_names),
            "val_metrics": json.dumps(self.val_metrics)}, kind="filter")
        return path

    @classmethod
    def load(cls, path: str | Path, device: str) -> "ConsistencyFilter":
        from augkit.evaluate.models import create_classifier

        state = load_checkpoint(Path(path) / "classifier.pt", kind="filter")
        spec = FilterSpec(**json.loads(state["spec"]))
        names = tuple(json.loads(state["class_names"]))
        model = create_classifier(spec.model, len(names), None)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise DataError(f"{path}: filter classifier weights do not fit '{spec.model}' ({exc})") from None
        return cls(model.to(memory_format=torch.channels_last), spec, names, device, json.loads(state["val_metrics"]))
