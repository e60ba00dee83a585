"""One classifier training run: train on an arm's images, pick the best epoch on validation, test.

Images stay uint8 until they reach the device, where they are normalised inside the step (4x less
memory traffic than float tensors). CUDA: mixed precision and channels-last; CPU: fp32 (bf16 and fp16
are ~100x slower on this kind of CPU) and channels-last (1.1-2.3x faster here).

Images come as a uint8 tensor in memory or as a lazy source (``read(positions)``, e.g. an H5Dataset
view) that DataLoader workers stream. Under torchrun the model trains in DistributedDataParallel: each
epoch's seeded permutation is the same on every rank and each rank takes every world-size-th position
(DistributedSampler's split, reshuffled per epoch, and also for class-balanced or capped epochs);
the global batch is ``batch_size x world size``; validation and test are split over the ranks and the
predictions gathered, so every rank returns the same numbers.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, fields, replace
from typing import Literal

import numpy as np
import torch
from torch import nn

from augkit import distributed
from augkit.evaluate.metrics import classification_metrics
from augkit.evaluate.models import DEFAULT_MODEL, create_classifier
from augkit.images import to_input
from augkit.progress import track


@dataclass(frozen=True)
class TrainConfig:
    """Everything that must be identical between arms (only the training rows differ).

    The defaults are the protocol a verdict can rest on: every arm makes the same optimiser steps per
    epoch (``equal_steps``), and trains until its validation weighted F1 stops improving (``schedule =
    "plateau"``) within the same cap of ``epochs``, so a gain can come neither from more steps nor from
    a baseline stopped before it converged.
    """

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "any timm model name, or one of augkit's small-input "
                                                                  "models (resnet10_small, resnet18_small)"})
    epochs: int = field(default=40, metadata={
        "min": 1, "help": "the most epochs a run may train (its budget cap); schedule onecycle: exactly this many"})
    schedule: Literal["plateau", "onecycle"] = field(default="plateau", metadata={
        "help": "plateau: constant learning rate, cut by lr_factor after `patience` validation checks without "
                "improvement, stopped at the plateau after the last cut; onecycle: a fixed one-cycle schedule "
                "over `epochs`"})
    # 3 checks (1.5 epochs): on PBC at 32 px as accurate as 4 within seed noise, with 12% fewer epochs
    # (docs/results.md, "patience")
    patience: int = field(default=3, metadata={"min": 1, "help": "validation checks without improvement before the "
                                                               "learning rate is cut, or the run stops (plateau)"})
    # On a small training set a check is a few optimiser steps (10% of PBC: 7), and 3 checks would cut and
    # stop a run after ~20 steps without a new best, long before it has learned; the floor makes patience
    # span at least what 3 checks span at full PBC size (~220 steps), so at full size it changes nothing.
    patience_steps: int = field(default=200, metadata={
        "min": 0, "help": "the fewest optimiser steps patience spans: on a small training set patience counts "
                          "more checks (plateau; 0: patience counts checks only)"})
    lr_drops: int = field(default=1, metadata={"min": 0, "help": "learning-rate cuts before the next plateau ends "
                                                              "the run (plateau)"})
    lr_factor: float = field(default=0.1, metadata={"min": 0, "max": 1, "help": "what each cut multiplies the "
                                                                              "learning rate by (plateau)"})
    checks_per_epoch: int = field(default=2, metadata={"min": 1, "help": "validation checks per epoch: the "
                                                                       "granularity of model selection and stopping"})
    batch_size: int = field(default=64, metadata={"min": 1})
    lr: float = field(default=1e-3, metadata={"min": 0, "help": "learning rate (plateau: the first; onecycle: the "
                                                               "peak)"})
    weight_decay: float = field(default=1e-4, metadata={"min": 0})
    input_aug: Literal["none", "flip", "dihedral"] = field(default="flip", metadata={
        "help": "on-the-fly augmentation in every arm: flips, or dihedral (flips and 90-degree turns: the 8 "
                "symmetries of a square, exact for cells whose orientation on the slide is arbitrary)"})
    balanced_sampling: bool = field(default=False, metadata={"help": "draw batches with equal class frequency"})
    class_weights: bool = field(default=False, metadata={"help": "weight the loss by inverse class frequency"})
    pretrained: str | None = field(default=None, metadata={"help": "local checkpoint file; hub weights are refused"})
    eval_batch_size: int = field(default=256, metadata={"min": 1})
    ema_decay: float = field(default=0.995, metadata={
        "min": 0, "max": 0.99999, "help": "validate and test an exponential moving average of the weights (per "
                                        "optimiser step; 0: the weights themselves)"})
    tta: bool = field(default=True, metadata={
        "help": "test predictions average the class probabilities over the views input_aug trains on (flip: 4, "
                "dihedral: 8; none: 1), as every arm's; validation, scored at every check, uses one view"})
    equal_steps: bool = field(default=True, metadata={
        "help": "every arm makes the baseline's optimiser steps per epoch (an epoch = as many images as the real "
                "training split), so a gain cannot come from longer training; false: an epoch is every image "
                "of the arm (more steps for augmented arms)"})
    # Synthetic images that differ from real ones in ways a classifier can learn (a small one tells every
    # GAN's images from PBC's) may still teach it shapes and classes; ending on real images alone lets
    # the low-learning-rate phase undo what only the synthetic images taught (pretrain, then fine-tune).
    # "synthetic_only": a setting that leaves an arm without synthetic rows as it is (for_real_rows_only)
    synthetic_phase: Literal["all", "before_cut"] = field(default="all", metadata={
        "synthetic_only": True,
        "help": "all: synthetic rows train throughout; before_cut: only until the first learning-rate cut, "
                "after which the run goes on with the real images alone and the model tested is chosen among "
                "the checks after the cut (plateau, equal_steps); the baseline has no synthetic rows and "
                "trains the same either way"})
    # Images a classifier can tell from real ones may still teach shapes and classes, but at full weight
    # their artefacts count as much as a real cell; a smaller weight keeps their variety and lets real
    # images dominate the gradient (an arm without synthetic rows trains the same at any weight).
    synthetic_weight: float = field(default=1.0, metadata={
        "synthetic_only": True, "min": 0, "max": 1,
        "help": "what one synthetic image weighs in the loss, a real one weighing 1 (and in class_weights' counts); "
                "0: synthetic rows fill batches but teach nothing"})

    def __post_init__(self) -> None:
        if self.synthetic_phase == "before_cut":
            if self.schedule != "plateau" or self.lr_drops < 1:
                raise ValueError("parameter 'synthetic_phase': 'before_cut' ends the synthetic images at the first "
                                 "learning-rate cut, and this schedule has none (it needs schedule 'plateau' and "
                                 "lr_drops of at least 1)")
            if not self.equal_steps:
                raise ValueError("parameter 'synthetic_phase': 'before_cut' needs equal_steps (with plain epochs "
                                 "an epoch would shrink at the cut, and the arms' steps would no longer compare)")

    def for_real_rows_only(self) -> "TrainConfig":
        """This config with the settings that only concern synthetic rows at their defaults: how an arm
        without synthetic rows trains (and is keyed), so one baseline serves evaluations that differ there."""
        return replace(self, **{f.name: f.default for f in fields(self) if f.metadata.get("synthetic_only")})

    @classmethod
    def probe(cls, model: str, epochs: int, batch_size: int, lr: float) -> "TrainConfig":
        """A fixed, short one-cycle run on the raw weights, one view at test: what the filter and the
        quality probes (CAS, real-vs-fake) train, so their numbers stay comparable from run to run. A probe,
        not a verdict."""
        return cls(model=model, epochs=epochs, batch_size=batch_size, lr=lr, schedule="onecycle", checks_per_epoch=1,
                   ema_decay=0.0, tta=False)

    @property
    def protocol(self) -> str:
        """The comparison protocol in words, for reports."""
        steps = ("equal optimiser steps per epoch (an epoch = the real training split's size)" if self.equal_steps
                 else "plain epochs (augmented arms make more optimiser steps than the baseline)")
        if self.schedule == "plateau":
            floor = f" and at least {self.patience_steps} optimiser steps" if self.patience_steps else ""
            length = (f"trained to a validation plateau (patience {self.patience} checks{floor}, "
                      f"{self.checks_per_epoch} per epoch; {self.lr_drops} learning-rate cut(s) x{self.lr_factor:g}; "
                      f"cap {self.epochs} epochs)")
        else:
            length = f"a fixed one-cycle schedule of {self.epochs} epochs (no convergence check)"
        views = len(views_of(self.input_aug)) if self.tta else 1  # (flips only for non-square images)
        scoring = f"; test predictions averaged over {views} views" if views > 1 else ""
        phase = ("; synthetic images only until the first learning-rate cut, real images alone after it"
                 if self.synthetic_phase == "before_cut" else "")
        weight = (f"; a synthetic image weighs {self.synthetic_weight:g} of a real one in the loss"
                  if self.synthetic_weight != 1 else "")
        return f"{steps}{phase}{weight}; {length}{scoring}"

    def patience_checks(self, steps_per_epoch: int) -> int:
        """Patience in validation checks for a run of ``steps_per_epoch``: ``patience``, or more where that
        many checks would span fewer than ``patience_steps`` optimiser steps."""
        checks = max(1, min(self.checks_per_epoch, steps_per_epoch))
        return max(self.patience, math.ceil(self.patience_steps * checks / steps_per_epoch))


class Plateau:
    """Model selection and stopping on a validation metric: the best check so far, and what to do next.

    After ``patience`` checks without a new best the learning rate is cut (``lr_drops`` times), then the
    run stops at the next such plateau. Validation at a constant learning rate swings by a few points
    from check to check, so patience must span a few epochs, or a dip cuts the rate while the trend
    still rises. Kept apart from the loop so the rule can be tested on a sequence of numbers."""

    def __init__(self, patience: int, lr_drops: int) -> None:
        self.patience, self.drops_left = patience, lr_drops
        self.checks, self.best, self.best_check, self._since = 0, float("-inf"), 0, 0

    def update(self, value: float) -> tuple[bool, str]:
        """Record one check: (is it the best check so far, and "go on", "cut" the learning rate or "stop")."""
        self.checks += 1
        if value > self.best:
            self.best, self.best_check, self._since = value, self.checks, 0
            return True, "go on"
        self._since += 1
        if self._since < self.patience:
            return False, "go on"
        if self.drops_left > 0:
            self.drops_left -= 1
            self._since = 0
            return False, "cut"
        return False, "stop"

    def restart(self) -> None:
        """Forget the best so far: from here on only later checks can be chosen (patience counts anew)."""
        self.best, self._since = float("-inf"), 0


def _flip(x: torch.Tensor, gen: torch.Generator, turns: bool = False) -> torch.Tensor:
    """Random horizontal and vertical flips per image, drawn from ``gen`` (reproducible); with ``turns``
    also a random transpose, which with the flips gives all 8 symmetries of a square image."""
    n = x.shape[0]
    h = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(n, 1, 1, 1)
    v = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(n, 1, 1, 1)
    if turns and x.shape[2] == x.shape[3]:
        t = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(n, 1, 1, 1)
        x = torch.where(t, x.transpose(2, 3), x)
    x = torch.where(h, x.flip(3), x)
    return torch.where(v, x.flip(2), x)


def views_of(input_aug: str, square: bool = True) -> list:
    """The symmetries a classifier trained with ``input_aug`` sees, as functions of an NCHW batch: test-time
    averaging over them scores the model on the distribution it was trained on (about +0.4 points of
    weighted F1 on PBC at 32 px, docs/results.md). Turns need a square image (as in training)."""
    flips = [lambda x: x, lambda x: x.flip(3), lambda x: x.flip(2), lambda x: x.flip(2).flip(3)]
    if input_aug == "none":
        return flips[:1]
    if input_aug == "flip" or not square:
        return flips
    return flips + [lambda x, f=f: f(x.transpose(2, 3)) for f in flips]


def _image_size(images) -> tuple[int, int]:
    return tuple(images.shape[1:3]) if isinstance(images, torch.Tensor) else tuple(images.image_size)


def _read(images, idx: np.ndarray) -> torch.Tensor:
    """A batch of uint8 images from a tensor in memory or a lazy source with ``read(positions)``."""
    if isinstance(images, torch.Tensor):
        return images[torch.from_numpy(idx).to(images.device)]
    return torch.from_numpy(images.read(idx))


@torch.no_grad()
def batched_outputs(fn, model: nn.Module, images: np.ndarray, device, batch_size: int = 256) -> list[torch.Tensor]:
    """``fn(x)`` for uint8 (n, H, W, 3) images in batches, ``x`` normalised on ``device`` with ``model``
    there in eval mode; each batch's output as float32 on the CPU."""
    model.to(device).eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_input(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])), device)
        out.append(fn(x).float().cpu())
    return out


@torch.no_grad()
def predict(model: nn.Module, images, device: torch.device, batch_size: int, views: list | None = None) -> np.ndarray:
    """Predicted classes for every image (with ``views``: of the class probabilities averaged over them);
    under torchrun each rank predicts every world-size-th one and all ranks get the whole result."""
    model = distributed.unwrap(model).eval()
    rank, world = distributed.rank(), distributed.world_size()
    mine = np.arange(rank, len(images), world)
    out = []
    amp = device.type == "cuda"
    for start in range(0, len(mine), batch_size):
        x = to_input(_read(images, mine[start:start + batch_size]), device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            if views is None or len(views) == 1:
                scores = model(x)
            else:
                scores = sum(model(view(x)).float().softmax(1) for view in views)
        out.append(scores.argmax(1).cpu())
    local = torch.cat(out).numpy() if out else np.zeros(0, np.int64)
    if world == 1:
        return local
    merged = np.zeros(len(images), np.int64)
    for r, part in enumerate(distributed.all_gather_object(local)):
        merged[r::world] = part
    return merged


def train_run(train_x, train_y: torch.Tensor, val: tuple, test: tuple, num_classes: int, cfg: TrainConfig, seed: int,
              device: str, label: str = "", keep_model: bool = False, epoch_size: int | None = None,
              real_rows: int | None = None) -> dict:
    """Train with ``seed``; returns test metrics of the best validation check, the predictions, the
    validation curve (``history``), how the run ended (``stopped``: "plateau" or "budget") and whether its
    best check was its last (``under_trained``), and, with ``keep_model``, the model with the best
    check's weights under "model". ``epoch_size``: images per epoch (default: all of ``train_x``); fewer
    draws a fresh random subset each epoch. ``real_rows``: how many of the first rows of ``train_x`` are
    real (default: all); the rest are synthetic, which ``cfg.synthetic_phase`` "before_cut" stops drawing
    at the first learning-rate cut (the step: ``synthetic_until_step`` in the result).

    ``train_x`` and the images of ``val`` and ``test`` are uint8 NHWC tensors, or lazy sources with
    ``read(positions)`` (streamed, for data larger than memory)."""
    rank, world = distributed.rank(), distributed.world_size()
    torch.manual_seed(distributed.rank_seed(seed))
    rng = np.random.default_rng(seed)  # the same on every rank: the epoch's order is shared
    gen = torch.Generator().manual_seed(distributed.rank_seed(seed))
    dev = torch.device(device)
    streamed = not isinstance(train_x, torch.Tensor)
    model = create_classifier(cfg.model, num_classes, cfg.pretrained).to(dev).to(memory_format=torch.channels_last)
    net = distributed.wrap(model, dev)
    labels = np.asarray(train_y)
    real_rows = len(labels) if real_rows is None else real_rows
    pool = len(labels)  # epochs draw from the first `pool` rows: all, until the synthetic ones are dropped

    row_weight = np.where(np.arange(len(labels)) < real_rows, 1.0, cfg.synthetic_weight)
    weighted_rows = cfg.synthetic_weight != 1 and real_rows < len(labels)
    row_weight_on_device = torch.tensor(row_weight, dtype=torch.float32, device=dev) if weighted_rows else None

    def loss_for(pool: int):
        """The loss of a batch (logits, labels, row positions): cross-entropy, weighted by class and row,
        normalised by the batch's total weight (PyTorch's weighted mean)."""
        class_w = None
        if cfg.class_weights:
            counts = np.bincount(labels[:pool], weights=row_weight[:pool], minlength=num_classes)
            class_w = torch.tensor(counts.sum() / (num_classes * np.maximum(counts, 1e-12)), dtype=torch.float32,
                                   device=dev)
        if not weighted_rows:
            plain = nn.CrossEntropyLoss(weight=class_w)
            return lambda logits, y, rows: plain(logits, y)

        def weighted(logits, y, rows):
            w = row_weight_on_device[rows.to(dev)]
            if class_w is not None:
                w = w * class_w[y]
            per_row = nn.functional.cross_entropy(logits, y, reduction="none")
            # a batch of zero-weight rows teaches nothing (0, not 0/0)
            return (w * per_row).sum() / w.sum().clamp_min(1e-12)
        return weighted

    def sampling_p(pool: int) -> np.ndarray | None:
        if not cfg.balanced_sampling:
            return None
        counts = np.bincount(labels[:pool], minlength=num_classes).astype(np.float64)
        p = 1.0 / counts[labels[:pool]]
        return p / p.sum()

    loss_fn, sample_p = loss_for(pool), sampling_p(pool)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, min(epoch_size or len(train_y), len(train_y)) // (cfg.batch_size * world))
    plateau = cfg.schedule == "plateau"
    sched = None if plateau else torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    # the steps of an epoch after which validation runs (the last one always)
    checks = max(1, min(cfg.checks_per_epoch, steps_per_epoch))
    check_after = {round(steps_per_epoch * (k + 1) / checks) - 1 for k in range(checks)}
    patience = cfg.patience_checks(steps_per_epoch)
    selector = Plateau(patience, cfg.lr_drops if plateau else 0)
    amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    if (not streamed and dev.type == "cuda"
            and train_x.numel() < 0.25 * torch.cuda.get_device_properties(dev).total_memory):
        train_x, train_y = train_x.to(dev), train_y.to(dev)  # uint8 on the GPU: no host transfer per step
    per_epoch = steps_per_epoch * cfg.batch_size * world

    # the averaged weights (buffers too: BatchNorm statistics) are what validation sees and test uses
    # (unlike augkit.train.ema.EMA, which copies a GAN generator's buffers, BatchNorm's running statistics
    # are averaged too, as timm's ModelEma does for classifiers). One fused lerp over all tensors per
    # step: a Python call per tensor cost ~10% of a small model's CPU step.
    ema = None
    if cfg.ema_decay > 0:
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        live = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
        averaged = [t for t in [*ema.parameters(), *ema.buffers()] if t.is_floating_point()]
        live_counts = [t for t in model.buffers() if not t.is_floating_point()]
        averaged_counts = [t for t in ema.buffers() if not t.is_floating_point()]
    scored = model if ema is None else ema
    history, best_state = [], None
    stopped = "budget"
    start_time = time.perf_counter()
    seen, steps_done, step_seconds = 0, 0, 0.0
    synthetic_until = None
    batches = None

    def draw(first_step: int):
        """This epoch's order over the first ``pool`` rows and, streamed, its batches from step
        ``first_step`` on: drawn again where the rows change mid-epoch."""
        nonlocal batches
        order = (rng.choice(pool, size=per_epoch, p=sample_p) if sample_p is not None
                 else rng.permutation(pool)[:per_epoch])
        order = order[rank::world]  # this rank's share, as DistributedSampler splits it
        if not streamed:
            return torch.from_numpy(order).to(train_x.device)  # once per epoch, sliced on the device
        from augkit.loading import stream_batches

        batch_idx = [order[k * cfg.batch_size:(k + 1) * cfg.batch_size] for k in range(first_step, steps_per_epoch)]
        batches = iter(stream_batches(train_x, labels, batch_idx, pin=dev.type == "cuda"))
        return order
    with track(f"{label} seed {seed}".strip(), cfg.epochs * steps_per_epoch) as bar:
        for epoch in range(cfg.epochs):
            net.train()
            order = draw(0)
            total_loss, loss_steps = torch.zeros((), device=dev), 0
            span_start = time.perf_counter()
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                if streamed:
                    images, y = next(batches)
                    idx = torch.from_numpy(idx)
                else:
                    images, y = train_x[idx], train_y[idx]
                x = to_input(images, dev)
                if cfg.input_aug != "none":
                    x = _flip(x, gen, turns=cfg.input_aug == "dihedral")
                y = y.to(dev, non_blocking=True)
                with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                    loss = loss_fn(net(x), y, idx)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                if ema is not None:
                    # a short memory while the weights still move fast (timm's warm-up): an average over the
                    # first steps' wildly different weights is a model of none of them; the first update copies
                    with torch.no_grad():
                        if steps_done == 0:
                            torch._foreach_copy_(averaged, live)
                        else:
                            decay = min(cfg.ema_decay, (1 + steps_done) / (10 + steps_done))
                            torch._foreach_lerp_(averaged, live, 1 - decay)
                        torch._foreach_copy_(averaged_counts, live_counts)
                if sched is not None:
                    sched.step()
                total_loss += loss.detach()
                loss_steps += 1
                steps_done += 1
                seen += len(y) * world
                bar(1)
                if step not in check_after:
                    continue
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                step_seconds += time.perf_counter() - span_start
                val_pred = predict(scored, val[0], dev, cfg.eval_batch_size)
                val_f1 = classification_metrics(val[1], val_pred, num_classes)["weighted_f1"]
                mean_loss = distributed.mean_over_ranks({"loss": float(total_loss) / loss_steps})["loss"]
                lr_now = opt.param_groups[0]["lr"]
                history.append({"epoch": round(epoch + (step + 1) / steps_per_epoch, 4), "step": steps_done,
                                "loss": mean_loss, "val_weighted_f1": val_f1, "lr": lr_now})
                bar.note(f"loss {mean_loss:.3f}  val F1 {val_f1:.3f}")
                is_best, action = selector.update(val_f1)
                action = action if plateau else "go on"  # onecycle: a fixed length, selection only
                if is_best:
                    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in scored.state_dict().items()})
                if action == "cut":
                    for group in opt.param_groups:
                        group["lr"] *= cfg.lr_factor
                    if cfg.synthetic_phase == "before_cut" and synthetic_until is None and pool > real_rows:
                        synthetic_until, pool = steps_done, real_rows
                        loss_fn, sample_p = loss_for(pool), sampling_p(pool)
                        order = draw(step + 1)
                        # the model tested is one fine-tuned on real images: without this the best check
                        # came before the cut in 7 of 9 runs on 10% of PBC, and the phase changed little
                        selector.restart()
                elif action == "stop":
                    stopped = "plateau"
                    break
                net.train()
                total_loss, loss_steps = torch.zeros((), device=dev), 0
                span_start = time.perf_counter()
            if stopped == "plateau":
                break
    batches = None  # a streamed epoch left mid-way: let its loader workers go before testing
    train_seconds = time.perf_counter() - start_time
    model.load_state_dict(best_state)
    best_entry = history[selector.best_check - 1]
    height, width = _image_size(test[0])
    test_views = views_of(cfg.input_aug, square=height == width) if cfg.tta else None
    test_pred = predict(model, test[0], dev, cfg.eval_batch_size, test_views)
    extra = {"model": model.eval()} if keep_model else {}
    return {
        **extra,
        "seed": seed,
        "optimizer_steps": steps_done,
        "steps_per_epoch": steps_per_epoch,
        "patience_checks": patience,
        "synthetic_until_step": synthetic_until,
        "best_epoch": best_entry["epoch"],
        "best_step": best_entry["step"],
        "epochs_trained": history[-1]["epoch"],
        "stopped": stopped,
        # still improving when it ended: its best check was its last, or (plateau) the cap came first
        "under_trained": selector.best_check == len(history) or (plateau and stopped == "budget"),
        "history": history,
        "metrics": classification_metrics(test[1], test_pred, num_classes),
        "y_true": test[1].tolist(),
        "y_pred": test_pred.tolist(),
        "train_seconds": train_seconds,
        # training steps only (validation excluded): what benchmarks/evaluate.py compares
        "train_images_per_s": seen / step_seconds if step_seconds > 0 else None,
        "device": str(dev),
    }
