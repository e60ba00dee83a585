"""Training throughput of augkit's evaluator against a bare timm training loop, in one run.

Both train the same timm model on the same in-memory images with the same batch size, optimiser and
device. The bare loop is the usual hand-written one: float tensors normalised once up front,
channels-last, AdamW, cross-entropy. augkit keeps uint8 images and normalises them inside the step.
The goal (issue 4): augkit >= 0.95x the bare loop.

    .venv/bin/python benchmarks/evaluate.py --model resnet18 --size 64 --steps 40
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from augkit.evaluate.trainer import TrainConfig, train_run
from augkit.progress import set_quiet


def bare_loop(model_name: str, x_uint8: torch.Tensor, y: torch.Tensor, num_classes: int, batch: int, steps: int,
              warmup: int, device: torch.device) -> float:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=num_classes).to(device).to(memory_format=torch.channels_last)
    x = (x_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1).contiguous(memory_format=torch.channels_last).to(device)
    y = y.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    rng = np.random.default_rng(0)
    model.train()
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            if amp:
                torch.cuda.synchronize()
            start = time.perf_counter()
        idx = torch.from_numpy(rng.integers(0, len(y), batch)).to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    if amp:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def augkit_loop(model_name: str, x_uint8: torch.Tensor, y: torch.Tensor, num_classes: int, batch: int, steps: int,
                warmup: int, device: torch.device) -> float:
    """The evaluator's own training loop, timed by difference: a run of ``warmup`` steps and one of
    ``warmup + steps`` steps; their step-time difference is ``steps`` warm steps (first-step costs cancel)."""
    val = (x_uint8[:batch], y[:batch].numpy())
    cfg = TrainConfig(model=model_name, epochs=1, batch_size=batch, input_aug="none")
    seconds = []
    for n_steps in (warmup, warmup + steps):
        n = n_steps * batch
        run = train_run(x_uint8[:n], y[:n], val, val, num_classes, cfg, 0, str(device))
        seconds.append(n / run["train_images_per_s"])
    return steps * batch / (seconds[1] - seconds[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="alternate the two loops this many times; report the best")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    set_quiet(True)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    n = (args.steps + args.warmup) * args.batch
    x = torch.randint(0, 256, (n, args.size, args.size, 3), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 8, (n,), generator=gen)
    bare, ours = [], []
    for _ in range(args.repeats):  # alternate so a noisy neighbour hurts both alike
        bare.append(bare_loop(args.model, x, y, 8, args.batch, args.steps, args.warmup, device))
        ours.append(augkit_loop(args.model, x, y, 8, args.batch, args.steps, args.warmup, device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    ratio = max(ours) / max(bare)
    table = Table(title=f"classifier training, {args.model} {args.size}px batch {args.batch}, {name}")
    table.add_column("loop")
    table.add_column("images/s (best of runs)", justify="right")
    table.add_column("all runs", justify="right")
    table.add_row("bare timm loop (float tensors)", f"{max(bare):.1f}", ", ".join(f"{v:.1f}" for v in bare))
    table.add_row("augkit evaluator (uint8, normalise in step)", f"{max(ours):.1f}", ", ".join(f"{v:.1f}" for v in ours))
    table.add_row("ratio", f"{ratio:.3f}", "PASS (>= 0.95)" if ratio >= 0.95 else "FAIL (< 0.95)")
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "size": args.size, "batch": args.batch, "device": name,
                       "bare": bare, "augkit": ours, "ratio": ratio}, f, indent=1)


if __name__ == "__main__":
    main()
