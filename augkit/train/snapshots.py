"""Metric-driven snapshots: score a generator on a fixed sample every N steps and keep the best.

A GAN's last step is rarely its best, and a run that starts to collapse gets worse while its losses
look the same, so neither the last weights nor the loss curve say which weights to generate with.
Every ``every`` steps the :class:`SnapshotJudge` generates the same latents of every class, embeds the
images with augkit's own classifier features (trained once on the run's training images; not
Inception, see :mod:`augkit.quality.features`) and scores them against a fixed sample of real training
images per class:

- ``fd``: the Fréchet distance per class, and its mean (``fd_mean``, lower is better);
- ``kid``: the kernel distance per class, and its mean (``kid_mean``, lower is better);
- ``cas``: a classification accuracy score in feature space. A k-NN classifier fitted on the generated
  features labels held-out real features; its recall per class (``cas_recall``) sits beside the same
  classifier fitted on real features (``cas_reference``). A generator whose images do not carry their
  class scores low here even when its images look varied. ``cas_mean``: the mean recall (higher is
  better); ``cas_ratio_min``: the worst class's recall over its reference (selector ``cas_worst``,
  higher is better). A mean can rise while one class falls away; ``cas_worst`` keeps the snapshot
  whose weakest class is strongest, the form of the per-class bar a generator is held to. (On PBC
  neither it nor FD predicted which snapshot harms a classifier least: docs/results.md.)

The loop (:func:`augkit.train.loop.run_training`) appends every score, with the step and the seconds
spent training so far, to ``metrics.jsonl`` in the run folder, plots them in ``metrics.png`` and keeps
the best snapshot's generator in ``checkpoints/best.pt``.
The numbers compare snapshots of one run (fixed sample sizes and extractor); small per-class samples
bias FD upwards, so they are not the quality report's numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from augkit.data.reader import ImageDataset
from augkit.errors import ParamError
from augkit.evaluate.classifier import MAX_FLOOR_EPOCHS, epochs_with_step_floor
from augkit.images import to_uint8
from augkit.quality.distances import frechet_distance, kernel_distance

if TYPE_CHECKING:
    from augkit.train.loop import Snapshots

__all__ = ["SELECTORS", "SnapshotMetric", "SnapshotSpec", "SnapshotJudge", "adopt_snapshot", "plot_metrics",
           "snapshots_for"]

#: what each selectable metric minimises or maximises: (key in a score row, lower is better)
SELECTORS = {"fd": ("fd_mean", True), "kid": ("kid_mean", True), "cas": ("cas_mean", False),
             "cas_worst": ("cas_ratio_min", False)}
#: the names a generator's ``snapshot_metric`` parameter takes (the keys of SELECTORS)
SnapshotMetric = Literal["fd", "kid", "cas", "cas_worst"]

_KNN = 5  # neighbours of the feature-space CAS classifier
MAX_FEATURE_EPOCHS = MAX_FLOOR_EPOCHS  # the step floor's cap: a tiny set is not trained for hundreds of epochs


@dataclass(frozen=True)
class SnapshotSpec:
    """How a generator's run is scored and which snapshot is kept."""

    every: int = field(default=0, metadata={"min": 0, "help": "score the generator every this many steps and keep "
                                                              "the best snapshot; 0 = off (the last weights)"})
    metric: SnapshotMetric = field(default="fd", metadata={
        "help": "what chooses the best snapshot: fd or kid (per-class mean, lower is better), cas (feature-space "
                "classification accuracy score, mean recall) or cas_worst (the worst class's recall over its "
                "real-trained reference; both higher is better)"})
    per_class: int = field(default=100, metadata={"min": 4, "help": "generated and real images per class per score"})
    features: str = field(default="resnet10_small", metadata={
        "help": "the feature extractor: a timm model trained on the run's training images, or the folder of a saved "
                "extractor"})
    feature_epochs: int = field(default=3, metadata={"min": 1, "help": "training epochs of the extractor, at least"})
    feature_steps: int = field(default=300, metadata={
        "min": 1, "help": f"optimiser steps of the extractor, at least (within {MAX_FEATURE_EPOCHS} epochs): 3 epochs "
                          "of a small training set leave it near chance, and its scores then rank snapshots at random"})

    def extractor_epochs(self, n_fit: int, batch_size: int) -> int:
        """Epochs of the extractor trained on ``n_fit`` images: ``feature_epochs``, or more when those
        give fewer than ``feature_steps`` steps (3 epochs of PBC's 10%, 860 images, are 39 steps and
        reached a validation weighted F1 of 0.05), but never more than ``MAX_FEATURE_EPOCHS``."""
        return epochs_with_step_floor(self.feature_epochs, n_fit, batch_size, self.feature_steps, MAX_FEATURE_EPOCHS)

    @classmethod
    def from_params(cls, p: dict) -> "SnapshotSpec":
        """The spec a generator's resolved parameters name (``snapshot_every``, ``snapshot_metric``,
        ``snapshot_per_class``, ``snapshot_features``)."""
        return cls(every=int(p["snapshot_every"]), metric=p["snapshot_metric"], per_class=int(p["snapshot_per_class"]),
                   features=p["snapshot_features"])

    @property
    def key(self) -> str:
        return SELECTORS[self.metric][0]

    @property
    def minimise(self) -> bool:
        return SELECTORS[self.metric][1]


def _held_out(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit positions, held-out positions): ``fraction`` of every class held out, at least one image."""
    rng = np.random.default_rng([seed, 91])
    fit, held = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = max(1, int(round(fraction * len(members)))) if len(members) > 1 else 0
        held.append(members[:n])
        fit.append(members[n:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


class SnapshotJudge:
    """Scores a generator on fixed latents against fixed real features (see the module docstring)."""

    def __init__(self, spec: SnapshotSpec, extract, real: list[np.ndarray], reference: list[np.ndarray],
                 class_names: list[str], latent_dim: int, conditional: bool, seed: int) -> None:
        self.spec, self.extract, self.class_names = spec, extract, list(class_names)
        self.real, self.conditional = real, conditional
        n = spec.per_class
        gen = torch.Generator().manual_seed(seed + 5)  # its own stream: scoring draws nothing from training's
        self.z = torch.randn(n * len(real), latent_dim, generator=gen)
        self.y = torch.arange(len(real)).repeat_interleave(n) if conditional else None
        self.reference = None
        if conditional:
            from sklearn.neighbors import KNeighborsClassifier

            ref_x = np.concatenate(reference)
            ref_y = np.concatenate([np.full(len(r), c) for c, r in enumerate(reference)])
            knn = KNeighborsClassifier(n_neighbors=min(_KNN, len(ref_x))).fit(ref_x, ref_y)
            self.reference = self._recall(knn)

    @classmethod
    def build(cls, spec: SnapshotSpec, train: ImageDataset, latent_dim: int, conditional: bool, seed: int,
              device: str, cache_dir: Path | None = None, say=lambda line: None) -> "SnapshotJudge":
        """Train (or reuse from ``cache_dir``, default: the quality metrics' extractor cache) the
        extractor on ``train`` (a tenth held out to choose its epoch), and fix the real sample: per
        class, ``per_class`` images to score against and as many again for the CAS reference (half of
        each class when it has fewer)."""
        from augkit.cache import cache_root
        from augkit.quality.features import ExtractorSpec, extractor_for

        cache_dir = cache_dir if cache_dir is not None else cache_root() / "quality" / "extractors"

        if spec.metric.startswith("cas") and not conditional:
            raise ParamError(f"snapshot metric '{spec.metric}' needs a class-conditional generator; use fd or kid")
        labels = np.asarray(train.labels)
        fit, held = _held_out(labels, 0.1, seed)
        base = ExtractorSpec(seed=seed)
        epochs = spec.extractor_epochs(len(fit), min(base.batch_size, len(fit)))
        extractor = extractor_for(spec.features, train.subset(fit), train.subset(held),
                                  replace(base, epochs=epochs), cache_dir, device, say)
        rng = np.random.default_rng([seed, 92])
        groups = ([np.flatnonzero(labels == c) for c in range(train.num_classes)] if conditional
                  else [np.arange(len(labels))])
        real, reference = [], []
        for c, members in enumerate(groups):
            if len(members) < 4:
                name = train.class_names[c] if conditional else "the training set"
                raise ParamError(f"snapshots: '{name}' has {len(members)} training images; scoring needs at least 4")
            members = rng.permutation(members)
            n = min(spec.per_class, len(members) // 2)
            real.append(extractor.features(train.read(np.sort(members[:n]))))
            reference.append(extractor.features(train.read(np.sort(members[n:2 * n]))))
        names = list(train.class_names) if conditional else ["all"]
        return cls(spec, extractor.features, real, reference, names, latent_dim, conditional, seed)

    def _recall(self, knn) -> np.ndarray:
        """Per-class recall of ``knn`` on the real features scored against."""
        predicted = [knn.predict(r) for r in self.real]
        return np.array([float((p == c).mean()) for c, p in enumerate(predicted)])

    @torch.no_grad()
    def score(self, G: torch.nn.Module, device: torch.device) -> dict:
        """The scores of generator ``G`` (left in the mode it was in)."""
        was_training = G.training
        G.eval()
        try:
            images = np.concatenate([
                to_uint8(G(self.z[s:s + 256].to(device), None if self.y is None else self.y[s:s + 256].to(device)))
                for s in range(0, len(self.z), 256)])
        finally:
            G.train(was_training)
        fake_all = self.extract(images)
        n = self.spec.per_class
        fake = [fake_all[c * n:(c + 1) * n] for c in range(len(self.real))]
        fd = {name: frechet_distance(r, f) for name, r, f in zip(self.class_names, self.real, fake)}
        kid = {name: kernel_distance(r, f, subsets=10, subset_size=n, seed=0)[0]
               for name, r, f in zip(self.class_names, self.real, fake)}
        row = {"fd_mean": float(np.mean(list(fd.values()))), "kid_mean": float(np.mean(list(kid.values())))}
        if self.conditional:
            from sklearn.neighbors import KNeighborsClassifier

            knn = KNeighborsClassifier(n_neighbors=_KNN).fit(fake_all, self.y.numpy())
            recall = self._recall(knn)
            ratio = recall / np.maximum(self.reference, 1e-9)
            row |= {"cas_mean": float(recall.mean()), "cas_ratio_min": float(ratio.min()),
                    "cas_recall": dict(zip(self.class_names, recall.round(4).tolist())),
                    "cas_reference": dict(zip(self.class_names, self.reference.round(4).tolist()))}
        return row | {"fd": fd, "kid": kid}


def plot_metrics(rows: list[dict], path: Path, selected: str) -> None:
    """The overall scores against the step, one panel each; ``selected`` is the one that chooses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("fd_mean", "kid_mean", "cas_mean", "cas_ratio_min") if rows and k in rows[0]]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, key in zip(axes[0], keys):
        ax.plot(steps, [r[key] for r in rows], marker="o", markersize=3)
        ax.set_title(key + (" (selects)" if key == selected else ""), fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def snapshots_for(judge: SnapshotJudge, generating_net: Callable[[], torch.nn.Module],
                  device: torch.device) -> Snapshots:
    """The training loop's :class:`augkit.train.loop.Snapshots` for ``judge``: each score and each kept
    snapshot is of the network ``generating_net()`` returns then (an EMA copy, typically), saved as "G"."""
    from augkit.train.loop import Snapshots

    spec = judge.spec
    return Snapshots(spec.every, lambda: judge.score(generating_net(), device),
                     lambda: {"G": generating_net().state_dict()}, spec.key, spec.minimise,
                     partial(plot_metrics, selected=spec.key))


def adopt_snapshot(net: torch.nn.Module, result: dict, run_dir: Path, kind: str, use: str) -> dict | None:
    """After training: with ``use = "best"`` load the kept snapshot's "G" into ``net`` (the generating
    network); returns the snapshot record for the saved augmenter ("used": False when the last weights
    stay), or None when the run kept none."""
    from augkit.train.checkpoint import load_checkpoint
    from augkit.train.loop import best_snapshot_path

    record = result.get("best_snapshot")
    if record is None:
        return None
    if use != "best":
        return {**record, "used": False}
    net.load_state_dict(load_checkpoint(best_snapshot_path(run_dir), kind=f"{kind}-snapshot")["G"])
    return record
