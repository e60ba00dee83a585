"""GAN benchmark: training throughput of augkit's GAN loop against a plain PyTorch DCGAN loop, and
generation into HDF5 against a bare generator forward, all in one run.

Both training loops train the same networks (the thesis's DCGAN: ``Generator(size, 100, g_channels,
"transpose")`` and ``Discriminator(size, d_channels)``, widths of augkit_gan's ``cpu`` preset by
default) from the same initial weights on the same real images, with batch 64, BCE and Adam
(lr 2e-4, betas 0.5/0.999):

1. training, images/s (real images consumed per second; one D step + one G step per iteration):
   (a) augkit: ``augkit.train.gan.train_gan`` on the uint8 images held in memory (normalised inside
       the step, channels-last);
   (b) the common hand-written loop (the PyTorch DCGAN tutorial): torchvision ``ImageFolder``,
       ``DataLoader(batch_size=64, shuffle=True)`` with ``num_workers=0`` and ``2``, default NCHW memory
       format, ``nn.Dropout`` in D (``--plain-dropout augkit`` swaps in augkit's cheaper-mask dropout, an
       ablation), ``BCEWithLogitsLoss``; one G forward per iteration, reused (detached) for the D step. Two
       sources (``--plain-source``): ``jpeg``, the original image files through the tutorial's own
       ``Resize`` + ``CenterCrop`` + ``ToTensor`` + ``Normalize`` (what a user with a folder of images
       runs; the reference), and ``png``, the pixels augkit imported, exported as PNG files at the
       training size (``ToTensor`` + ``Normalize`` only: the plain loop's best case, after a
       preprocessing pass that the tutorial does not make).
   The loops run interleaved, step by step, in one thread: train_gan's callback runs one step of each
   plain loop after each augkit step, so all of them share the machine's changing load. Each loop
   times its own steps (the plain loops' include fetching the batch); the first ``--warmup`` steps of
   each loop are not timed, nor is train_gan's extra last step (its sample grid and checkpoint are
   written right after it). images/s = timed images / summed step times. The FLOPs of one step of
   each loop are counted with ``torch.utils.flop_counter.FlopCounterMode`` (on its second step) and
   the achieved FLOP/s are compared with an fp32 2048x2048 matmul timed in the same run (torch's
   default threads; best of three measurements: before training, after it, and at the end).
2. generation, images/s: ``augkit.generate.augment_to_file`` with a tiny conditional augmenter whose
   ``generate`` runs the generator (batch 256, eval, no_grad, channels-last, uint8 out), writing an
   HDF5 file (in ``--workdir``: the disk by default), against the bare forward of the same generator
   with the same uint8 conversion. The two alternate ``--gen-repeats`` times; each pair runs back to
   back, so it shares the machine's load, and goal 2 reads the median of the pairs' ratios, which one
   burst of a neighbour's load in either direction does not move (best vs best is printed too).

Goals: (1) augkit training >= 1.3x the faster plain loop over the original files (jpeg); (2) generation into HDF5 >= 90% of the
bare forward. Prints one table, the machine load average, PASS/FAIL lines, and with ``--json FILE``
writes the rows as JSON.

    .venv/bin/python benchmarks/gan_train.py [--size 64] [--steps N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_SRC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pbc128"
GOAL_TRAIN_RATIO = 1.3
GOAL_GEN_FRACTION = 0.90
#: timed steps per training loop when --steps is not given: keeps a run at 64 px under ~4 min on 2 cores
DEFAULT_STEPS = {16: 40, 32: 24, 64: 10, 128: 3}
LATENT = 100
GEN_BATCH = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import torch

    from augkit_gan.augmenters import PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=DEFAULT_SRC,
                   help="image folder (<class>/<image>), default ../shared/data/pbc128; absent: demo data")
    p.add_argument("--size", type=int, default=64, choices=(16, 32, 64, 128), help="image side (default 64)")
    p.add_argument("--n-images", type=int, default=2000, help="real images to train on (default 2000)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"timed training steps per loop (default by size: {DEFAULT_STEPS})")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones (>= 2; default 3)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--g-channels", type=int, default=PRESETS["cpu"]["g_channels"],
                   help="G width at 4x4 (default: the cpu preset's, %(default)s)")
    p.add_argument("--d-channels", type=int, default=PRESETS["cpu"]["d_channels"],
                   help="D width of the first conv (default: the cpu preset's, %(default)s)")
    p.add_argument("--workers", default="0,2", help="num_workers of the plain loop's DataLoader (default 0,2)")
    p.add_argument("--plain-source", default="jpeg,png",
                   help="what the plain loop reads: jpeg (the original files, Resize + CenterCrop: the "
                        "reference) and/or png (augkit's pixels exported at the training size); default jpeg,png")
    p.add_argument("--plain-dropout", default="torch", choices=("torch", "augkit"),
                   help="the plain loop's dropout layers: torch's nn.Dropout (the common way; default) or "
                        "augkit's (an ablation: how much of the gain is the cheaper dropout masks)")
    p.add_argument("--gen-images", type=int, default=4096,
                   help="images to generate, split evenly over the classes (default 4096)")
    p.add_argument("--gen-repeats", type=int, default=9,
                   help="alternate bare forward and augment_to_file this many times; goal 2 reads the median "
                        "of the pairs' ratios (default 9)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="where to write temporary files (removed at the end)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and metadata as JSON")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = DEFAULT_STEPS[args.size]
    if args.warmup < 2:
        p.error("--warmup must be >= 2 (the FLOPs are counted on the second warm-up step)")
    if args.steps < 1:
        p.error("--steps must be >= 1")
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    args.plain_source = [s.strip() for s in str(args.plain_source).split(",") if s.strip()]
    if not args.plain_source or set(args.plain_source) - {"jpeg", "png"}:
        p.error("--plain-source takes jpeg, png or jpeg,png")
    return args


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def build_networks(args, plain: bool = False):
    """G and D from the same seed. ``plain``: D's dropout layers become ``nn.Dropout``, as a hand-written
    loop has them (augkit's :class:`~augkit_gan.networks.Dropout` is the same function with cheaper masks)."""
    import torch
    from torch import nn

    from augkit_gan.networks import Discriminator, Dropout, Generator

    torch.manual_seed(args.seed)  # both loops start from the same weights
    G = Generator(args.size, LATENT, args.g_channels, "transpose")
    D = Discriminator(args.size, args.d_channels)
    if plain and args.plain_dropout == "torch":
        for i, layer in enumerate(D.convs):
            if isinstance(layer, Dropout):
                D.convs[i] = nn.Dropout(layer.p)
    return G, D


# -- data -----------------------------------------------------------------------------------------
def folder_subset(src: Path, dst: Path, n: int) -> int:
    """Symlinks to the first files (sorted) of each class, n in all, shared in proportion to class size."""
    import numpy as np

    from augkit.data.importers import IMAGE_SUFFIXES
    from augkit.data.split import largest_remainder

    classes = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith(".")
                    and f.suffix.lower() in IMAGE_SUFFIXES) for d in classes]
    sizes = np.array([len(f) for f in files])
    take = np.minimum(largest_remainder(min(n, int(sizes.sum())), sizes), sizes)
    for d, fs, k in zip(classes, files, take):
        (dst / d.name).mkdir(parents=True)
        for f in fs[:k]:
            (dst / d.name / f.name).symlink_to(f.resolve())
    return int(take.sum())


def export_png(images, labels, class_names, dst: Path) -> None:
    """The same uint8 images as PNG files in an ImageFolder layout (lossless, so both loops see the same pixels)."""
    from PIL import Image

    for name in class_names:
        (dst / name).mkdir(parents=True)
    for i, (img, lab) in enumerate(zip(images, labels)):
        Image.fromarray(img).save(dst / class_names[lab] / f"{i:05d}.png")


# -- training --------------------------------------------------------------------------------------
def plain_steps(folder: Path, args, dev, workers: int, out: dict, resize: bool):
    """The PyTorch DCGAN tutorial's loop over an ImageFolder (NCHW, BCEWithLogits, Adam), as a generator:
    each ``next()`` runs one training step and yields its duration in seconds. The FLOPs of the second
    step are counted with FlopCounterMode into ``out["flops"]``. ``resize``: the tutorial's
    ``Resize`` + ``CenterCrop`` to the training size (for files at their original size)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision import datasets, transforms

    G, D = build_networks(args, plain=True)
    G.to(dev)
    D.to(dev)
    size_tf = [transforms.Resize(args.size), transforms.CenterCrop(args.size)] if resize else []
    tf = transforms.Compose(size_tf + [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    data = datasets.ImageFolder(str(folder), transform=tf)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=dev.type == "cuda")
    criterion = nn.BCEWithLogitsLoss()
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    G.train()
    D.train()

    def step(real):
        real = real.to(dev, non_blocking=True)
        b = real.size(0)
        ones = torch.ones(b, device=dev)
        zeros = torch.zeros(b, device=dev)
        # D: the real batch, then a fake batch (detached); gradients accumulate, one optimizer step
        D.zero_grad(set_to_none=True)
        err_real = criterion(D(real)[0], ones)
        err_real.backward()
        fake = G(torch.randn(b, LATENT, device=dev))
        err_fake = criterion(D(fake.detach())[0], zeros)
        err_fake.backward()
        opt_d.step()
        # G: the same fake batch through the updated D
        G.zero_grad(set_to_none=True)
        err_g = criterion(D(fake)[0], ones)
        err_g.backward()
        opt_g.step()
        return (err_real + err_fake).item(), err_g.item()  # the tutorial logs .item() every step

    done = 0
    while True:
        it = iter(loader)
        while True:
            sync(dev)
            t0 = time.perf_counter()
            try:
                real, _ = next(it)  # loading the batch is part of the step
            except StopIteration:
                break
            if done == 1:
                with FlopCounterMode(display=False) as counter:
                    step(real)
                out["flops"] = counter.get_total_flops()
            else:
                step(real)
            sync(dev)
            done += 1
            yield time.perf_counter() - t0


class Interleaver:
    """train_gan's callback. After each augkit step it runs one step of every plain loop, so all loops
    share the machine's (changing) load step by step. augkit's step k lasts from the end of callback
    k-1 to the start of callback k. The FLOPs of augkit's step 2 are counted by a FlopCounterMode that
    is entered at the end of callback 1 and left at the start of callback 2."""

    def __init__(self, dev, plain: dict, plain_steps_total: int):
        from torch.utils.flop_counter import FlopCounterMode

        self.dev, self.plain, self.plain_total = dev, plain, plain_steps_total
        self.durations: dict = {"augkit": {}} | {name: [] for name in plain}
        self.flops = None
        self._counter = FlopCounterMode(display=False)
        self._resumed = None

    def start(self) -> None:
        self._resumed = time.perf_counter()

    def __call__(self, step: int) -> None:
        sync(self.dev)
        self.durations["augkit"][step] = time.perf_counter() - self._resumed
        if step == 2:
            self._counter.__exit__(None, None, None)
            self.flops = self._counter.get_total_flops()
        if step <= self.plain_total:
            for name, gen in self.plain.items():
                self.durations[name].append(next(gen))
        if step == 1:
            self._counter.__enter__()
        self._resumed = time.perf_counter()


def run_training(images_u8, folders: dict, args, dev, run_dir: Path) -> dict:
    """train_gan for warmup + steps + 1 steps, with the plain loops' warmup + steps steps interleaved.

    Timed: augkit's steps warmup+1 .. warmup+steps (the extra last step is not: train_gan writes its
    sample grid and checkpoint right after it, before the callback), and the plain loops' steps
    warmup+1 .. warmup+steps. The first step of each loop is timed from the start of train_gan
    (network set-up included); warm-up excludes it anyway.
    """
    from augkit.train.gan import GANConfig, train_gan

    total = args.warmup + args.steps + 1
    loops = [(source, w) for source in folders for w in args.workers]
    plain_out = {key: {} for key in loops}
    plain = {key: plain_steps(folders[key[0]], args, dev, key[1], plain_out[key], resize=key[0] == "jpeg")
             for key in loops}
    G, D = build_networks(args)
    cfg = GANConfig(steps=total, batch_size=args.batch_size, loss="bce", sample_every=total + 1,
                    checkpoint_every=total + 1, log_every=total)
    inter = Interleaver(dev, plain, args.warmup + args.steps)
    t0 = time.perf_counter()
    inter.start()
    train_gan(G, D, images_u8, None, cfg, run_dir, kind="vanilla", seed=args.seed, device=str(dev), callback=inter)
    wall = time.perf_counter() - t0
    timed = range(args.warmup + 1, args.warmup + args.steps + 1)
    result = {"augkit": {"durations": [inter.durations["augkit"][k] for k in timed], "flops": inter.flops},
              "wall": wall, "G": G}
    for key in loops:
        result[key] = {"durations": inter.durations[key][args.warmup:], "flops": plain_out[key].get("flops")}
        plain[key].close()
    return result


def matmul_gflops(dev, n: int = 2048, reps: int = 5, inner: int = 3) -> float:
    """Best fp32 n x n @ n x n rate over ``reps`` timings of ``inner`` products (torch's default threads)."""
    import torch

    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    c = a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(inner):
            c = torch.mm(a, b, out=c)
        sync(dev)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best / 1e9


# -- generation ------------------------------------------------------------------------------------
def make_augmenter(G, dev, noop_size: int = 0):
    """A tiny conditional augmenter: generate() runs the generator (eval, no_grad, channels-last).

    With ``G=None`` it returns ready-made zeros of ``noop_size`` px instead: what is left is augkit's own cost.
    """
    import numpy as np
    import torch

    from augkit.augment import Augmenter, Samples
    from augkit.images import to_uint8

    class BenchGenerator(Augmenter):
        name = "bench-generator"
        conditional = True
        summary = "benchmark: an unconditional generator, asked per class"

        def generate(self, label, n, ctx):
            if G is None:
                return Samples(zeros[:n])
            z = torch.randn(n, G.latent_dim, generator=ctx.torch_generator()).to(dev)
            with torch.no_grad():
                return Samples(to_uint8(G(z)))

    zeros = np.zeros((GEN_BATCH, noop_size, noop_size, 3), np.uint8) if G is None else None
    return BenchGenerator()


def bare_forward(G, dev, n: int, seed: int) -> list:
    """The reference: batches of 256 through the generator, converted to uint8 NHWC numpy arrays."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, n, GEN_BATCH):
            z = torch.randn(min(GEN_BATCH, n - start), G.latent_dim, generator=gen).to(dev)
            x = G(z)
            out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return out


# -- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from torch.utils.flop_counter import FlopCounterMode

    import augkit
    from augkit.augment import Context
    from augkit.data import H5Dataset, import_source
    from augkit.generate import augment_to_file
    from augkit.progress import set_quiet

    set_quiet(True)
    console = Console(width=None if sys.stdout.isatty() else 170)
    dev = torch.device(args.device)
    load_start = loadavg()
    started = time.perf_counter()
    base = Path(args.workdir) if args.workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="augkit-gan-bench-", dir=base))
    rows: list[dict] = []
    notes: list[str] = []

    def add(section, method, rate, *, durations=None, images=0, gflop_img=None, note="", ref=False):
        median = (args.batch_size / statistics.median(durations)) if durations else None
        row = {"section": section, "method": method, "images_per_s": round(rate, 2),
               "median_step_images_per_s": None if median is None else round(median, 2), "images": images,
               "gflop_per_image": None if gflop_img is None else round(gflop_img, 3),
               "achieved_gflop_per_s": None if gflop_img is None else round(rate * gflop_img, 1),
               "note": note, "reference": ref}
        rows.append(row)
        return row

    try:
        # -- data: a subset of the real folder, imported by augkit, and the same pixels as PNGs -----
        h5 = work / "train.h5"
        src = args.src.resolve()
        folders = {}
        if src.is_dir():
            subset = work / "subset"
            n_sub = folder_subset(src, subset, args.n_images)
            import_source(subset, h5, size=args.size)
            source = f"{n_sub:,} images of {src.name} (first files of each class, in proportion)"
            if "jpeg" in args.plain_source:
                folders["jpeg"] = subset
        else:
            import_source("demo", h5, size=args.size, n=args.n_images, seed=args.seed)
            source = f"{args.n_images:,} built-in demo images"
            notes.append(f"{src} not found: used augkit's built-in demo data instead of real images")
            if "jpeg" in args.plain_source:
                notes.append("no original image files (demo data): the plain loop reads the PNG export only")
        train = H5Dataset(h5)
        images = train.read(np.arange(len(train)))
        if "png" in args.plain_source or not folders:
            folders["png"] = work / "png"
            export_png(images, train.labels, train.class_names, folders["png"])
        images_t = torch.from_numpy(images)

        # -- machine peak -------------------------------------------------------------------------
        peaks = [matmul_gflops(dev)]  # measured again after each section: the best is the peak

        # -- 1. training --------------------------------------------------------------------------
        sec = "training"
        bs = args.batch_size
        tr = run_training(images_t, folders, args, dev, work / "augkit-run")
        ak = tr["augkit"]
        ak_rate = args.steps * bs / sum(ak["durations"])
        ak_row = add(sec, "(a) augkit train_gan", ak_rate, durations=ak["durations"], images=args.steps * bs,
                     gflop_img=ak["flops"] / bs / 1e9,
                     note="uint8 in RAM, channels-last")
        plain_rows = {}
        for kind in folders:
            for w in args.workers:
                r = tr[(kind, w)]
                rate = args.steps * bs / sum(r["durations"])
                note = ("ImageFolder, original files, Resize + CenterCrop, NCHW" if kind == "jpeg"
                        else "ImageFolder, PNG at training size, NCHW")
                plain_rows[(kind, w)] = add(sec, f"(b) plain loop, {kind}, num_workers={w}", rate,
                                              durations=r["durations"], images=args.steps * bs,
                                              gflop_img=r["flops"] / bs / 1e9, note=note)
        peaks.append(matmul_gflops(dev))
        ref_source = next(iter(folders))  # jpeg when the original files exist: the tutorial's own pipeline
        ref_key = (max((k for k in plain_rows if k[0] == ref_source), key=lambda k: plain_rows[k]["images_per_s"])
                   if plain_rows else None)
        if ref_key is not None:
            plain_rows[ref_key]["reference"] = True

        # -- 2. generation --------------------------------------------------------------------------
        gsec = "generation"
        G = tr["G"].to(dev).to(memory_format=torch.channels_last).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            G(torch.randn(GEN_BATCH, LATENT, device=dev))  # also the warm-up of batch-256 inference
        g_flop_img = counter.get_total_flops() / GEN_BATCH / 1e9
        k = train.num_classes
        per_class = max(1, args.gen_images // k)
        n_gen = per_class * int((train.class_counts() > 0).sum())
        aug = make_augmenter(G, dev)
        ctx = Context(seed=args.seed, device=str(dev))
        out = work / "generated.h5"
        # warm-up: the first augment_to_file loads the plugin registry and opens HDF5 machinery
        augment_to_file(aug, train, out, {"per_class": 1}, ctx, fit=False, overwrite=True)
        bare_t, aug_t = [], []
        for _ in range(args.gen_repeats):
            sync(dev)
            t0 = time.perf_counter()
            bare_forward(G, dev, n_gen, args.seed)
            sync(dev)
            bare_t.append(time.perf_counter() - t0)
            out.unlink(missing_ok=True)  # deleting the previous repeat's file is not part of generating
            t0 = time.perf_counter()
            summary = augment_to_file(aug, train, out, {"per_class": per_class}, ctx, fit=False, overwrite=True)
            sync(dev)
            aug_t.append(time.perf_counter() - t0)
            assert summary["total"] == n_gen
        # augkit's own cost per image: the same call with a generate() that returns ready-made zeros
        noop = make_augmenter(None, dev, noop_size=args.size)
        noop_t = []
        for _ in range(args.gen_repeats):
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            augment_to_file(noop, train, out, {"per_class": per_class}, ctx, fit=False, overwrite=True)
            noop_t.append(time.perf_counter() - t0)
        check = H5Dataset(out)
        assert len(check) == n_gen, "augment_to_file wrote the wrong number of rows"
        check.close()
        gen_aug = add(gsec, "augkit augment_to_file -> HDF5", n_gen / min(aug_t), images=n_gen,
                      gflop_img=g_flop_img,
                      note=f"{k} classes x {per_class}; best of {args.gen_repeats}")
        gen_bare = add(gsec, "bare G forward + uint8", n_gen / min(bare_t), images=n_gen, gflop_img=g_flop_img,
                       note=f"batch {GEN_BATCH}, channels-last; best of {args.gen_repeats}",
                       ref=True)
        gen_noop = add(gsec, "augment_to_file, no-op generate()", n_gen / min(noop_t), images=n_gen,
                       note="augkit's own cost: checks, HDF5 writer, hashing")
        gen_aug["runs_images_per_s"] = [round(n_gen / t, 1) for t in aug_t]
        gen_bare["runs_images_per_s"] = [round(n_gen / t, 1) for t in bare_t]
        gen_noop["runs_images_per_s"] = [round(n_gen / t, 1) for t in noop_t]
        pair_ratios = [b / a for a, b in zip(aug_t, bare_t)]
        overhead_us = min(noop_t) / n_gen * 1e6
        train.close()
        peaks.append(matmul_gflops(dev))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    load_end = loadavg()

    # -- report ------------------------------------------------------------------------------------
    peak = max(peaks)
    for r in rows:
        r["fraction_of_matmul_peak"] = (None if r["achieved_gflop_per_s"] is None
                                        else round(r["achieved_gflop_per_s"] / peak, 3))
    ref_rate = {sec: plain_rows[ref_key]["images_per_s"] if ref_key is not None else None,
                gsec: gen_bare["images_per_s"]}
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores {cpu_model()}, {platform.system()} {platform.machine()}",
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "augkit": augkit.__version__, "torch": torch.__version__, "numpy": np.__version__,
        "loadavg_start": load_start, "loadavg_end": load_end, "data": source, "size": args.size,
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "plain_sources": list(folders), "plain_dropout": args.plain_dropout, "reference": f"{ref_key[0]}, num_workers={ref_key[1]}" if ref_key else None,
        "g_channels": args.g_channels, "d_channels": args.d_channels, "gen_images": n_gen,
        "matmul_fp32_gflop_per_s": round(peak, 1), "matmul_fp32_runs": [round(p, 1) for p in peaks],
        "training_wall_s": round(tr["wall"], 1),
        "runtime_s": round(total, 1), "notes": notes,
    }
    table = Table(title=f"augkit GAN benchmark: DCGAN {args.size} px (G {args.g_channels}, D {args.d_channels} "
                        f"channels, transpose), batch {args.batch_size}, {meta['device']}")
    for col, just in (("section", "left"), ("method", "left"), ("images/s", "right"), ("× ref", "right"),
                      ("median step img/s", "right"), ("GFLOP/img", "right"), ("GFLOP/s", "right"),
                      ("% matmul peak", "right"), ("note", "left")):
        table.add_column(col, justify=just)
    for r in rows:
        ratio = r["images_per_s"] / ref_rate[r["section"]] if ref_rate[r["section"]] else float("nan")
        frac = r["fraction_of_matmul_peak"]
        table.add_row(r["section"], escape(r["method"]), f"{r['images_per_s']:,.1f}",
                      "ref" if r["reference"] else f"{ratio:.2f}",
                      "" if r["median_step_images_per_s"] is None else f"{r['median_step_images_per_s']:,.1f}",
                      "" if r["gflop_per_image"] is None else f"{r['gflop_per_image']:.3f}",
                      "" if r["achieved_gflop_per_s"] is None else f"{r['achieved_gflop_per_s']:,.0f}",
                      "" if frac is None else f"{100 * frac:.0f}%", escape(r["note"]))
    console.print(f"{meta['machine']}; torch {meta['torch']} ({meta['torch_threads']} threads), "
                  f"python {meta['python']}, augkit {meta['augkit']}")
    console.print(f"load average (1/5/15 min): {load_start} at start, {load_end} at end")
    console.print(f"data: {escape(source)} at {args.size} px; training: {args.warmup} warm-up + {args.steps} timed "
                  f"steps per loop, the loops interleaved step by step; fp32 matmul 2048³: {peak:,.1f} GFLOP/s "
                  f"(best of 3 measurements: start, after training, end: {', '.join(f'{p:.0f}' for p in peaks)})")
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    console.print(table)
    train_ratio = ak_row["images_per_s"] / ref_rate[sec] if ref_rate[sec] else float("nan")
    gen_best = gen_aug["images_per_s"] / gen_bare["images_per_s"]
    gen_frac = statistics.median(pair_ratios)
    verdict_train = "PASS" if train_ratio >= GOAL_TRAIN_RATIO else "FAIL"
    verdict_gen = "PASS" if gen_frac >= GOAL_GEN_FRACTION else "FAIL"
    others = ", ".join(f"{ak_row['images_per_s'] / r['images_per_s']:.2f}x vs {kind}, num_workers={w}"
                       for (kind, w), r in plain_rows.items())
    console.print(f"goal 1: augkit training >= {GOAL_TRAIN_RATIO}x the faster plain loop over {ref_source}: "
                  f"[bold]{verdict_train}[/bold] "
                  f"({train_ratio:.2f}x; {others})")
    console.print(f"goal 2: augment_to_file >= {GOAL_GEN_FRACTION:.0%} of the bare forward: [bold]{verdict_gen}[/bold] "
                  f"(median of the alternating pairs {gen_frac:.1%}; best vs best {gen_best:.1%}; pairs: "
                  f"{', '.join(f'{r:.0%}' for r in pair_ratios)}; augkit's own cost {overhead_us:.0f} µs/image, "
                  f"{overhead_us / (overhead_us + 1e6 / gen_bare['images_per_s']):.1%} of an image's time)")
    console.print(f"total runtime {total:.0f} s")
    if args.json:
        payload = {"meta": meta, "goals": {
            "training": {"ratio_min": GOAL_TRAIN_RATIO, "measured": round(train_ratio, 3), "result": verdict_train},
            "generation": {"fraction_min": GOAL_GEN_FRACTION, "measured": round(gen_frac, 3), "result": verdict_gen,
                           "statistic": "median of pair ratios", "best_vs_best": round(gen_best, 3),
                           "pair_ratios": [round(r, 3) for r in pair_ratios],
                           "augkit_overhead_us_per_image": round(overhead_us, 1)}},
            "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
