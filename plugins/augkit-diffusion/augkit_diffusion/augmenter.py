"""The diffusion augmenter: parameters and presets, fit on augkit's loop, save and load.

Generating, sampling and interpolating come from the generator contract (:mod:`augkit.generator`):
``self.G`` is a :class:`~augkit_diffusion.sampler.DiffusionSampler` around the EMA UNet, whose latent
is the starting noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from augkit import distributed
from augkit.errors import DataError, ParamError, UserError
from augkit.generator import GenerativeAugmenter
from augkit.params import BUDGET
from augkit.train.checkpoint import load_checkpoint, save_checkpoint
from augkit.train.loop import Cadence, Streams, pause_if_budget_spent, run_training
from augkit.train.snapshots import SnapshotMetric
from augkit_diffusion.sampler import DiffusionSampler, build_unet

#: Named settings. "cpu" is sized for about an hour at 32 px on 2 cores (three resolutions, attention
#: only at the coarsest; it trains at ~36 images/s there, so 12 epochs of PBC's 9,564 training images,
#: benchmarks/README.md); "gpu" is a 64-128 px model for a GPU.
PRESETS: dict[str, dict] = {
    "cpu": {"channels": [32, 64, 128], "attention": [False, False, True], "layers_per_block": 1,
            "batch_size": 64, "lr": 3e-4, "ema_decay": 0.999, "epochs": 12.0},
    "gpu": {"channels": [128, 256, 256, 512], "attention": [False, False, True, True], "layers_per_block": 2,
            "batch_size": 128, "lr": 1e-4, "ema_decay": 0.9995, "epochs": 300.0},
}


@dataclass(frozen=True)
class DiffusionParams:
    """Every field left unset (None) comes from the preset."""

    preset: Literal["cpu", "gpu"] = field(default="cpu", metadata={"help": "named settings, see PRESETS"})
    epochs: float | None = field(default=None, metadata={"min": 0, "help": "passes over the training images"})
    steps: int | None = field(default=None, metadata={"min": 1, "help": "optimiser updates (overrides epochs)"})
    minutes: float = field(default=0.0, metadata={
        "min": 0, BUDGET: True, "help": "wall-time budget of this session (0 = none); --resume continues"})
    batch_size: int | None = field(default=None, metadata={"min": 2})
    lr: float | None = field(default=None, metadata={"min": 0})
    weight_decay: float = field(default=0.0, metadata={"min": 0})
    ema_decay: float | None = field(default=None, metadata={"min": 0, "max": 1, "help": "EMA of the UNet's weights"})
    channels: list[int] | None = field(default=None, metadata={"min": 8, "help": "UNet widths, one per resolution"})
    attention: list[bool] | None = field(default=None, metadata={
        "help": "self-attention at each resolution (as many as channels)"})
    layers_per_block: int | None = field(default=None, metadata={"min": 1})
    prediction: Literal["epsilon", "v_prediction"] = field(default="v_prediction", metadata={
        "help": "what the UNet predicts: the velocity, or the noise (which cannot fix the colours at "
                "the highest noise levels: see docs/results.md)"})
    p_uncond: float = field(default=0.1, metadata={
        "min": 0, "max": 1, "help": "label dropout in training: the unconditional model classifier-free guidance needs"})
    sampler: Literal["ddim", "dpm"] = field(default="ddim", metadata={"help": "DDIM (eta 0) or DPM-Solver++ (2nd order)"})
    sample_steps: int = field(default=25, metadata={"min": 1, "max": 1000, "help": "denoising steps per image"})
    guidance: float = field(default=2.0, metadata={
        "min": 0, "help": "classifier-free guidance scale: 0 unconditional, 1 conditional, above 1 guided"})
    checkpoint_every: int = field(default=500, metadata={"min": 1})
    sample_every: int = field(default=500, metadata={"min": 1})
    log_every: int = field(default=25, metadata={"min": 1})
    snapshot_every: int = field(default=0, metadata={
        "min": 0, "help": "score the EMA model (per-class FD, KID, feature-space CAS) every this many steps and keep "
                          "the best snapshot; 0 = off"})
    snapshot_metric: SnapshotMetric = "fd"
    snapshot_per_class: int = field(default=32, metadata={"min": 4, "help": "images per class per score"})
    snapshot_features: str = "resnet10_small"
    use_snapshot: Literal["best", "last"] = "best"

    def resolved(self) -> dict:
        """The preset with every explicitly set field laid over it."""
        out = dict(PRESETS[self.preset])
        out.update({k: v for k, v in dataclasses.asdict(self).items() if v is not None})
        return out


#: the sampler's settings: they change what a snapshot's score measures
_GENERATION = ("sampler", "sample_steps", "guidance")


class Diffusion(GenerativeAugmenter):
    """Class-conditional denoising diffusion (a diffusers UNet) with classifier-free guidance."""

    name = "diffusion"
    Params = DiffusionParams
    conditional = True
    #: an encoder would have to back-propagate through every denoising step of the sampler
    encodable = False
    summary = "class-conditional denoising diffusion (diffusers UNet, classifier-free guidance, DDIM/DPM-Solver)"

    def __init__(self, params=None):
        super().__init__(params)
        self.arch: dict = {}
        self.snapshot: dict | None = None

    def _arch(self, size: int, num_classes: int, p: dict) -> dict:
        channels, attention = list(p["channels"]), list(p["attention"])
        if len(channels) != len(attention):
            raise ParamError(f"diffusion: 'attention' needs one value per resolution ({len(channels)} channels), "
                             f"got {len(attention)}")
        if size % (2 ** (len(channels) - 1)):
            raise DataError(f"diffusion: {len(channels)} resolutions halve the image {len(channels) - 1} times, so "
                            f"the size must be a multiple of {2 ** (len(channels) - 1)}; the data is {size} px")
        return {"size": size, "num_classes": num_classes, "channels": channels, "attention": attention,
                "layers_per_block": int(p["layers_per_block"]), "prediction": p["prediction"]}

    def fit(self, train, ctx) -> None:
        p = self.params.resolved()
        h, w = train.image_size
        if h != w:
            raise DataError(f"diffusion needs square images, got {h}x{w}")
        if len(train) < 2:
            raise UserError(f"diffusion training needs at least 2 training images, got {len(train)}")
        self.arch = self._arch(h, train.num_classes, p)
        torch.manual_seed(ctx.seed)
        unet = build_unet(self.arch)
        images = torch.from_numpy(train.read(np.arange(len(train))))
        labels = torch.from_numpy(np.asarray(train.labels, np.int64))
        batch = min(int(p["batch_size"]), len(images))
        steps = p.get("steps") or max(1, math.ceil(float(p["epochs"]) * len(images) / (batch * distributed.world_size())))
        from augkit_diffusion.training import DiffusionTask

        streams = Streams(ctx.seed, {"noise": 1, "t": 2, "drop": 3})
        dev = torch.device(ctx.device)
        task = DiffusionTask(unet, images, labels, {**p, "seed": ctx.seed}, streams, dev, train.num_classes, h)
        run_dir = Path(ctx.workdir) / self.name if ctx.workdir else Path(tempfile.mkdtemp(prefix="augkit-diffusion-"))
        cadence = Cadence(int(steps), p["log_every"], p["sample_every"], p["checkpoint_every"], float(p["minutes"]))
        snapshots = self._snapshots(train, ctx, p, task, dev)
        identity = {"arch": self.arch, "seed": ctx.seed, "training": {k: p[k] for k in (
            "batch_size", "lr", "weight_decay", "ema_decay", "p_uncond")}}
        if snapshots is not None:
            identity["snapshots"] = {k: p[k] for k in p if k.startswith("snapshot_")} | {k: p[k] for k in _GENERATION}
        config = {"kind": self.name, "seed": ctx.seed, "device": ctx.device, "images": len(images), "steps": steps,
                  "params": {k: v for k, v in p.items()}}
        result = run_training(task, streams, cadence, run_dir, config=config, resume=ctx.resume, identity=identity,
                              snapshots=snapshots)
        pause_if_budget_spent(result, "training 'diffusion'", int(steps), float(p["minutes"]))
        from augkit.train.snapshots import adopt_snapshot

        self.G = task.generating_net()
        self.snapshot = adopt_snapshot(self.G, result, run_dir, self.name, p["use_snapshot"])

    def _snapshots(self, train, ctx, p: dict, task, dev):
        if not p["snapshot_every"]:
            return None
        from augkit.train.snapshots import SnapshotJudge, SnapshotSpec, snapshots_for

        judge = SnapshotJudge.build(SnapshotSpec.from_params(p), train, 3 * self.arch["size"] ** 2, True, ctx.seed,
                                    ctx.device)
        return snapshots_for(judge, task.generating_net, dev)

    def save(self, path):
        path = super().save(path)
        if self.G is None:
            raise UserError("augmenter 'diffusion': nothing to save before fit()")
        save_checkpoint(path / "weights.pt", {"unet": self.G.unet.state_dict(), "arch": json.dumps(self.arch),
                                              "snapshot": json.dumps(self.snapshot)}, kind=self.name)
        return path

    @classmethod
    def load(cls, path):
        aug = super().load(path)
        state = load_checkpoint(Path(path) / "weights.pt", kind=cls.name)
        aug.arch = json.loads(state["arch"])
        aug.snapshot = json.loads(state["snapshot"])
        unet = build_unet(aug.arch)
        try:
            unet.load_state_dict(state["unet"])
        except RuntimeError as exc:
            raise DataError(f"{path}: weights do not fit the saved architecture ({exc})") from None
        p = aug.params  # the sampler's settings are the loaded augmenter's own; what the UNet predicts is its weights'
        aug.G = DiffusionSampler(unet.eval(), aug.arch["size"], aug.arch["num_classes"], aug.arch["prediction"],
                                 p.sampler, p.sample_steps, p.guidance)
        return aug
