"""Training throughput of augkit's evaluator against a bare timm training loop, in one run.

Both train the same timm model on the same in-memory images with the same batch size, optimiser and
device. The bare loop is the usual hand-written one: float tensors normalised once up front,
channels-last, AdamW, cross-entropy. augkit keeps uint8 images and normalises them inside the step.
Goal: augkit >= 0.95x the bare loop.

A single timing on a shared 2-core machine moves by 10-20% on its own, so the two loops run in
interleaved pairs (bare then augkit, then augkit then bare, ...): each pair's ratio compares two
timings made seconds apart, under the same load, and the goal is judged on the median pair ratio.
The load average is printed with the result.

    .venv/bin/python benchmarks/evaluate.py --model resnet10_small --size 32 --steps 40 --pairs 7
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from augkit.evaluate.models import create_classifier
from augkit.evaluate.trainer import TrainConfig, train_run
from augkit.progress import set_quiet


def bare_loop(model_name: str, x_uint8: torch.Tensor, y: torch.Tensor, num_classes: int, batch: int, steps: int,
              warmup: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = create_classifier(model_name, num_classes).to(device).to(memory_format=torch.channels_last)
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
    ``warmup + steps`` steps; their step-time difference is ``steps`` warm steps (first-step costs cancel).
    One validation check per run (at its end), which ``train_images_per_s`` leaves out."""
    val = (x_uint8[:batch], y[:batch].numpy())
    cfg = TrainConfig(model=model_name, epochs=1, batch_size=batch, input_aug="none", checks_per_epoch=1)
    seconds = []
    for n_steps in (warmup, warmup + steps):
        n = n_steps * batch
        run = train_run(x_uint8[:n], y[:n], val, val, num_classes, cfg, 0, str(device))
        seconds.append(n / run["train_images_per_s"])
    return steps * batch / (seconds[1] - seconds[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet10_small")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=7, help="interleaved bare/augkit pairs; the goal uses the median ratio")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    set_quiet(True)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    n = (args.steps + args.warmup) * args.batch
    x = torch.randint(0, 256, (n, args.size, args.size, 3), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 8, (n,), generator=gen)
    loops = {"bare": bare_loop, "augkit": augkit_loop}
    pairs = []
    load_before = os.getloadavg()
    for k in range(args.pairs):
        order = ("bare", "augkit") if k % 2 == 0 else ("augkit", "bare")  # drift in load hurts both alike
        pair = {name: loops[name](args.model, x, y, 8, args.batch, args.steps, args.warmup, device) for name in order}
        pairs.append(pair)
    load_after = os.getloadavg()
    ratios = np.array([p["augkit"] / p["bare"] for p in pairs])
    median = float(np.median(ratios))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    table = Table(title=f"classifier training, {args.model} {args.size}px batch {args.batch}, {name}; "
                        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    table.add_column("pair")
    table.add_column("bare img/s", justify="right")
    table.add_column("augkit img/s", justify="right")
    table.add_column("ratio", justify="right")
    for k, (p, r) in enumerate(zip(pairs, ratios)):
        table.add_row(str(k + 1), f"{p['bare']:.1f}", f"{p['augkit']:.1f}", f"{r:.3f}")
    table.add_row("median", f"{np.median([p['bare'] for p in pairs]):.1f}",
                  f"{np.median([p['augkit'] for p in pairs]):.1f}",
                  f"{median:.3f} " + ("PASS (>= 0.95)" if median >= 0.95 else "FAIL (< 0.95)"))
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "size": args.size, "batch": args.batch, "device": name,
                       "pairs": pairs, "ratios": ratios.tolist(), "median_ratio": median,
                       "load_average": [load_before, load_after]}, f, indent=1)


if __name__ == "__main__":
    main()
