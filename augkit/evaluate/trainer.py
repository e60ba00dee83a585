"""One classifier training run: train on an arm's images, pick the best epoch on validation, test.

Images stay uint8 until they reach the device, where they are normalised inside the step (4x less
memory traffic than float tensors). CUDA: mixed precision and channels-last; CPU: fp32 (bf16 and fp16
are ~100x slower on this kind of CPU) and channels-last (1.1-2.3x faster here).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from augkit.evaluate.metrics import classification_metrics
from augkit.evaluate.models import DEFAULT_MODEL, create_classifier
from augkit.progress import track


@dataclass(frozen=True)
class TrainConfig:
    """Everything that must be identical between arms (only the training rows differ)."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "any timm model name"})
    epochs: int = field(default=10, metadata={"min": 1, "help": "training epochs per run"})
    batch_size: int = field(default=64, metadata={"min": 1})
    lr: float = field(default=1e-3, metadata={"min": 0, "help": "peak learning rate (one-cycle schedule)"})
    weight_decay: float = field(default=1e-4, metadata={"min": 0})
    input_aug: Literal["none", "flip"] = field(default="flip", metadata={"help": "on-the-fly flips in every arm"})
    balanced_sampling: bool = field(default=False, metadata={"help": "draw batches with equal class frequency"})
    class_weights: bool = field(default=False, metadata={"help": "weight the loss by inverse class frequency"})
    pretrained: str | None = field(default=None, metadata={"help": "local checkpoint file; hub weights are refused"})
    eval_batch_size: int = field(default=256, metadata={"min": 1})
    equal_steps: bool = field(default=False, metadata={
        "help": "every arm makes the baseline's number of optimiser steps (an epoch = as many images as the "
                "real training split), so a gain cannot come from longer training alone"})


def _to_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NHWC on any device -> normalised float NCHW (channels-last memory) on ``device``."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    x = x.mul_(2.0 / 255.0).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last)


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips per image, drawn from ``gen`` (reproducible)."""
    n = x.shape[0]
    h = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(n, 1, 1, 1)
    v = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(n, 1, 1, 1)
    x = torch.where(h, x.flip(3), x)
    return torch.where(v, x.flip(2), x)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int) -> np.ndarray:
    model.eval()
    out = []
    amp = device.type == "cuda"
    for start in range(0, len(images), batch_size):
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(_to_input(images[start:start + batch_size], device))
        out.append(logits.argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def train_run(train_x: torch.Tensor, train_y: torch.Tensor, val: tuple[torch.Tensor, np.ndarray],
              test: tuple[torch.Tensor, np.ndarray], num_classes: int, cfg: TrainConfig, seed: int,
              device: str, label: str = "", keep_model: bool = False, epoch_size: int | None = None) -> dict:
    """Train with ``seed``; returns test metrics of the best validation epoch, and the predictions
    (and, with ``keep_model``, the model with the best epoch's weights under "model"). ``epoch_size``:
    images per epoch (default: all of ``train_x``); fewer draws a fresh random subset each epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device(device)
    model = create_classifier(cfg.model, num_classes, cfg.pretrained).to(dev).to(memory_format=torch.channels_last)
    counts = np.bincount(train_y.numpy(), minlength=num_classes).astype(np.float64)
    weight = None
    if cfg.class_weights:
        weight = torch.tensor(counts.sum() / (num_classes * np.maximum(counts, 1)), dtype=torch.float32, device=dev)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, min(epoch_size or len(train_y), len(train_y)) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    if dev.type == "cuda" and train_x.numel() < 0.25 * torch.cuda.get_device_properties(dev).total_memory:
        train_x, train_y = train_x.to(dev), train_y.to(dev)  # uint8 on the GPU: no host transfer per step
    sample_p = None
    if cfg.balanced_sampling:
        sample_p = (1.0 / counts[train_y.cpu().numpy()])
        sample_p /= sample_p.sum()

    history, best = [], {"val_weighted_f1": -1.0}
    start_time = time.perf_counter()
    seen, step_seconds = 0, 0.0
    with track(f"{label} seed {seed}".strip(), cfg.epochs * steps_per_epoch) as bar:
        for epoch in range(cfg.epochs):
            model.train()
            order = (rng.choice(len(train_y), size=steps_per_epoch * cfg.batch_size, p=sample_p)
                     if sample_p is not None else rng.permutation(len(train_y))[: steps_per_epoch * cfg.batch_size])
            order = torch.from_numpy(order).to(train_x.device)
            total_loss = torch.zeros((), device=dev)
            epoch_start = time.perf_counter()
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                x = _to_input(train_x[idx], dev)
                if cfg.input_aug == "flip":
                    x = _flip(x, gen)
                y = train_y[idx].to(dev, non_blocking=True)
                with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
                    loss = loss_fn(model(x), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                total_loss += loss.detach()
                seen += len(idx)
                bar(1)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            step_seconds += time.perf_counter() - epoch_start
            val_pred = predict(model, val[0], dev, cfg.eval_batch_size)
            val_f1 = classification_metrics(val[1], val_pred, num_classes)["weighted_f1"]
            mean_loss = float(total_loss) / steps_per_epoch
            history.append({"epoch": epoch + 1, "loss": mean_loss, "val_weighted_f1": val_f1})
            bar.note(f"loss {mean_loss:.3f}  val F1 {val_f1:.3f}")
            if val_f1 > best["val_weighted_f1"]:
                best = {"val_weighted_f1": val_f1, "epoch": epoch + 1,
                        "state": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})}
    train_seconds = time.perf_counter() - start_time
    model.load_state_dict(best["state"])
    test_pred = predict(model, test[0], dev, cfg.eval_batch_size)
    extra = {"model": model.eval()} if keep_model else {}
    return {
        **extra,
        "seed": seed,
        "optimizer_steps": cfg.epochs * steps_per_epoch,
        "best_epoch": best["epoch"],
        "history": history,
        "metrics": classification_metrics(test[1], test_pred, num_classes),
        "y_true": test[1].tolist(),
        "y_pred": test_pred.tolist(),
        "train_seconds": train_seconds,
        # training steps only (validation excluded): what benchmarks/evaluate.py compares
        "train_images_per_s": seen / step_seconds if step_seconds > 0 else None,
        "device": str(dev),
    }
