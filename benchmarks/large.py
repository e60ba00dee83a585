"""A dataset larger than memory: build a synthetic 200,000 x 128 px augkit file (~10 GB) and train a
classifier on it, streamed from HDF5, with peak resident memory under 3 GB.

1. Build: the file is written with augkit's DatasetWriter in batches (never whole in memory), or reused
   with ``--path``. Synthetic images: noise plus a class-dependent tint, 8 classes.
2. Read: the same random batches the training draws, through augkit's streaming DataLoader
   (``augkit.loading``) with no training: how fast the reader can deliver.
3. Train: ``augkit.evaluate.trainer.train_run`` on lazy H5Dataset views (the streamed path), a small timm
   model, one epoch capped at ``--steps`` optimiser steps, validation and test on 2,000 rows each.

Peak resident memory is sampled every 0.1 s over this process and its DataLoader workers together, as
the sum of their proportional set sizes (PSS: each resident page shared by k of them counts 1/k, so the
libraries the forked workers share with their parent count once), and checked against ``--limit-gb``
(3). The main process's own peak RSS (``getrusage``) is printed beside it. The page cache that holds recently read parts of the file is not resident memory of
any process: the kernel gives it back when programs need memory, so it is not counted.

    .venv/bin/python benchmarks/large.py                        # build in a temporary folder, run, delete
    .venv/bin/python benchmarks/large.py --workdir /tmp/big --keep
    .venv/bin/python benchmarks/large.py --path /tmp/big/large.h5 --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from augkit.data.reader import H5Dataset
from augkit.loading import image_bytes, loader_workers, memory_budget, stream_batches
from augkit.data.writer import DatasetWriter
from augkit.evaluate.trainer import TrainConfig, train_run
from augkit.progress import set_quiet, track

CLASSES = [f"class{k}" for k in range(8)]


def _pss(pid: int) -> int:
    """Proportional set size of a process, bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


class PeakRSS:
    """Samples the resident memory (PSS) of this process plus all its descendants; keeps the peak."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        pids, total = [os.getpid()], 0
        while pids:
            pid = pids.pop()
            total += _pss(pid)
            pids += _children(pid)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self._total()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())


def build(path: Path, rows: int, size: int, batch: int = 1000) -> float:
    """Write the synthetic file batch by batch; returns seconds."""
    rng = np.random.default_rng(0)
    tint = rng.integers(0, 256, (len(CLASSES), 3), dtype=np.uint8)
    t0 = time.perf_counter()
    with DatasetWriter(path, class_names=CLASSES, image_size=size, expected_rows=rows,
                       provenance={"benchmark": "large.py", "synthetic": True}) as writer, \
            track(f"Writing {rows:,} images of {size} px", rows) as advance:
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            labels = rng.integers(0, len(CLASSES), n)
            images = rng.integers(0, 128, (n, size, size, 3), dtype=np.uint8)
            images += tint[labels][:, None, None, :] // 2
            writer.append(images, labels)
            advance(n)
    return time.perf_counter() - t0


def read_only(train: H5Dataset, batches: list[np.ndarray]) -> float:
    """Images/s of the streaming reader alone, over the given batches."""
    t0 = time.perf_counter()
    n = 0
    for x, _ in stream_batches(train, train.labels, batches):
        n += len(x)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", type=Path, default=None, help="use this augkit file instead of building one")
    ap.add_argument("--workdir", type=Path, default=None, help="where to build the file (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the built file")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--model", default="test_resnet", help="timm model (small: the point is the data path)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=150, help="optimiser steps in the (capped) epoch")
    ap.add_argument("--read-batches", type=int, default=300, help="batches for the read-only measurement")
    ap.add_argument("--held-out", type=int, default=2000, help="rows for validation and for test, each")
    ap.add_argument("--limit-gb", type=float, default=3.0)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    console = Console()
    threads = torch.get_num_threads()
    load_start = os.getloadavg()

    tmp = None
    if args.path is None:
        folder = args.workdir or Path(tmp := tempfile.mkdtemp(prefix="augkit-large-"))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "large.h5"
    else:
        path = args.path
    results: dict = {"rows": args.rows, "size": args.size, "model": args.model, "batch": args.batch,
                     "steps": args.steps, "loader_workers": loader_workers(), "torch_threads": threads,
                     "memory_budget_bytes": memory_budget(), "load_start": load_start}
    try:
        if args.path is None:
            with PeakRSS() as rss:
                seconds = build(path, args.rows, args.size)
            results.update(build_seconds=seconds, build_peak_pss=rss.peak)
        data = H5Dataset(path)
        nbytes = image_bytes(data)
        results.update(file_bytes=path.stat().st_size, image_bytes=nbytes, rows=len(data))
        n_held = args.held_out
        train = data.subset(np.arange(len(data) - 2 * n_held))
        val = data.subset(np.arange(len(data) - 2 * n_held, len(data) - n_held))
        test = data.subset(np.arange(len(data) - n_held, len(data)))

        rng = np.random.default_rng(1)
        batches = [rng.choice(len(train), args.batch, replace=False) for _ in range(args.read_batches)]
        with PeakRSS() as rss:
            results["read_images_per_s"] = read_only(train, batches)
        results["read_peak_pss"] = rss.peak

        cfg = TrainConfig(model=args.model, epochs=1, batch_size=args.batch, eval_batch_size=256)
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            run = train_run(train, torch.from_numpy(train.labels), (val, val.labels), (test, test.labels),
                            len(data.class_names), cfg, seed=0, device="cpu", label="large",
                            epoch_size=args.steps * args.batch)
            results["train_wall_seconds"] = time.perf_counter() - t0
        results.update(train_peak_pss=rss.peak, train_images_per_s=run["train_images_per_s"],
                       optimizer_steps=run["optimizer_steps"], test_weighted_f1=run["metrics"]["weighted_f1"])
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif args.path is None and not args.keep:
            path.unlink(missing_ok=True)
    results["load_end"] = os.getloadavg()
    results["main_max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    gb = 1e9
    table = Table("what", "value")
    table.add_row("file", f"{results['rows']:,} x {args.size} px, {results['image_bytes'] / gb:.2f} GB of images, "
                          f"{results['file_bytes'] / gb:.2f} GB on disk")
    if "build_seconds" in results:
        table.add_row("build (DatasetWriter, streamed)",
                      f"{results['build_seconds']:.0f} s, {results['image_bytes'] / gb / results['build_seconds']:.2f} "
                      f"GB/s, peak PSS {results['build_peak_pss'] / gb:.2f} GB")
    table.add_row("read only: random batches, streaming DataLoader",
                  f"{results['read_images_per_s']:,.0f} img/s, peak PSS {results['read_peak_pss'] / gb:.2f} GB")
    table.add_row(f"train: {args.model}, {results['optimizer_steps']} steps of {args.batch}",
                  f"{results['train_images_per_s']:,.0f} img/s, peak PSS {results['train_peak_pss'] / gb:.2f} GB "
                  f"(wall {results['train_wall_seconds']:.0f} s incl. validation and test)")
    ratio = results["read_images_per_s"] / results["train_images_per_s"]
    table.add_row("reader / training consumption", f"{ratio:.1f}x")
    table.add_row("main process peak RSS (getrusage, whole run)", f"{results['main_max_rss'] / gb:.2f} GB")
    table.add_row("DataLoader workers, torch threads", f"{results['loader_workers']}, {threads}")
    table.add_row("load average start / end", f"{load_start[0]:.2f} / {results['load_end'][0]:.2f}")
    console.print(table)
    peak = max(results[k] for k in ("read_peak_pss", "train_peak_pss"))
    results["pass"] = peak < args.limit_gb * gb
    verdict = "[bold green]PASS[/]" if results["pass"] else "[bold red]FAIL[/]"
    console.print(f"Goal: peak resident memory of the epoch (process + workers, PSS) < {args.limit_gb:g} GB: {verdict} "
                  f"({peak / gb:.2f} GB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    set_quiet(not os.isatty(2))
    main()
