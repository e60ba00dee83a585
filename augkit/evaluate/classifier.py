"""One trained classifier of uint8 images: train, save, load, probabilities, predictions, features.

The class-consistency filter, the quality metrics' feature extractor, the classification accuracy
score and the real-vs-fake test each need "a classifier trained briefly on these images": they all use
this one object and one spec. It trains on the evaluator's path (:func:`augkit.evaluate.trainer.train_run`)
with the short fixed schedule of :meth:`TrainConfig.probe`, so the numbers stay comparable from run to
run; the verdicts use the evaluator itself, trained to a plateau.
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

WEIGHTS = "classifier.pt"
#: the checkpoint kind: "filter", as the first classifiers of this kind (the filter's) were saved
KIND = "filter"


#: a step floor never asks for more epochs than this (a tiny set would otherwise train for ever)
MAX_FLOOR_EPOCHS = 30


def epochs_with_step_floor(epochs: int, n_train: int, batch_size: int, min_steps: int,
                           max_epochs: int = MAX_FLOOR_EPOCHS) -> int:
    """``epochs``, or more when those give fewer than ``min_steps`` optimiser steps on ``n_train``
    images in batches of ``batch_size`` (the trainer drops the last partial batch), within
    ``max_epochs``. A measuring classifier trained for a fixed few epochs of a small set learns next to
    nothing (3 epochs of PBC's 10% split: 45 steps, validation weighted F1 0.30), and what it then
    measures is noise."""
    if min_steps <= 0:
        return epochs
    per_epoch = max(1, n_train // max(1, min(batch_size, n_train)))
    return max(epochs, min(max_epochs, -(-min_steps // per_epoch)))


@dataclass(frozen=True)
class ClassifierSpec:
    """How to train a short-lived classifier (specs of its users add their own fields)."""

    model: str = field(default="resnet18", metadata={"help": "timm model of the classifier"})
    epochs: int = field(default=3, metadata={"min": 1})
    batch_size: int = field(default=64, metadata={"min": 1})
    lr: float = field(default=1e-3, metadata={"min": 0})
    seed: int = field(default=0, metadata={"min": 0})

    def train_config(self, n_train: int):
        from augkit.evaluate.trainer import TrainConfig

        return TrainConfig.probe(self.model, self.epochs, min(self.batch_size, max(1, n_train)), self.lr)


class Classifier:
    """A trained classifier: the model, the spec it was trained with, its classes and validation numbers."""

    def __init__(self, model: torch.nn.Module, spec: ClassifierSpec, class_names, device: str,
                 val_metrics: dict | None = None) -> None:
        self.model = model.eval()
        self.spec = spec
        self.class_names = tuple(class_names)
        self.device = torch.device(device)
        self.val_metrics = val_metrics or {}

    # -- training -----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, train_x, train_y: np.ndarray, val: tuple, spec: ClassifierSpec, class_names, device: str, *,
            test: tuple | None = None, label: str = "classifier") -> tuple["Classifier", dict]:
        """Train on ``train_x`` (uint8 NHWC tensor, or a lazy source) and ``train_y``; the best check on
        ``val`` is kept. Returns the classifier and the run (with test metrics on ``test``, default ``val``)."""
        from augkit.evaluate.trainer import train_run

        run = train_run(train_x, torch.as_tensor(np.asarray(train_y)), val, val if test is None else test,
                        len(class_names), spec.train_config(len(train_y)), spec.seed, device, label=label,
                        keep_model=True)
        best = max(h["val_weighted_f1"] for h in run["history"])  # the kept check's validation score
        metrics = {"val_weighted_f1": best, "best_epoch": run["best_epoch"]}
        return cls(run.pop("model"), spec, class_names, device, metrics), run

    @classmethod
    def fit_dataset(cls, train: ImageDataset, val: ImageDataset, spec: ClassifierSpec, device: str,
                    label: str = "classifier") -> "Classifier":
        """Train on a dataset's images (in memory when they fit the budget, else streamed from the file)."""
        from augkit.loading import fits_in_memory, image_bytes

        if fits_in_memory(image_bytes([train, val])):
            x = torch.from_numpy(train.read(np.arange(len(train))))
            val_t = (torch.from_numpy(val.read(np.arange(len(val)))), val.labels)
        else:
            x, val_t = train, (val, val.labels)
        return cls.fit(x, train.labels, val_t, spec, train.class_names, device, label=label)[0]

    # -- use --------------------------------------------------------------------------------------
    def _outputs(self, fn, images: np.ndarray, batch_size: int = 256) -> list[torch.Tensor]:
        from augkit.evaluate.trainer import batched_outputs

        return batched_outputs(fn, self.model, images, self.device, batch_size)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax over classes for uint8 (n, H, W, 3) images."""
        out = self._outputs(lambda x: torch.softmax(self.model(x).float(), 1), images)
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.class_names)))

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(n, d) float32 penultimate-layer features (timm ``forward_head(pre_logits=True)``)."""
        model = self.model
        out = self._outputs(lambda x: model.forward_head(model.forward_features(x), pre_logits=True), images,
                            batch_size)
        if not out:
            raise ValueError("features: no images given")
        return torch.cat(out).flatten(1).numpy()

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path / WEIGHTS, {"model": self.model.state_dict(), "spec": json.dumps(
            dataclasses.asdict(self.spec)), "class_names": json.dumps(self.class_names),
            "val_metrics": json.dumps(self.val_metrics)}, kind=KIND)
        return path

    @classmethod
    def load_state(cls, path: str | Path) -> dict:
        """The saved checkpoint's contents, parsed (``spec`` as a dict)."""
        state = load_checkpoint(Path(path) / WEIGHTS, kind=KIND)
        return {"model": state["model"], "spec": json.loads(state["spec"]),
                "class_names": tuple(json.loads(state["class_names"])), "val_metrics": json.loads(state["val_metrics"])}

    @classmethod
    def load(cls, path: str | Path, device: str, spec_type: type = ClassifierSpec):
        """A classifier saved by :meth:`save`; its spec is rebuilt as ``spec_type``."""
        from augkit.evaluate.models import create_classifier

        state = cls.load_state(path)
        spec = spec_type(**{k: v for k, v in state["spec"].items()
                            if k in {f.name for f in dataclasses.fields(spec_type)}})
        model = create_classifier(spec.model, len(state["class_names"]), None)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise DataError(f"{path}: classifier weights do not fit '{spec.model}' ({exc})") from None
        return cls(model.to(memory_format=torch.channels_last), spec, state["class_names"], device,
                   state["val_metrics"])
