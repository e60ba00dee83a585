"""The diffusion plugin's training and generation throughput against bare diffusers loops, in one run.

Training: augkit's step (:class:`augkit_diffusion.training.DiffusionTask`: uint8 images normalised in
the step, label dropout, AdamW, the EMA) against the loop of diffusers' training examples on the same
UNet and the same images (float tensors normalised once up front, ``DDPMScheduler.add_noise``, AdamW,
diffusers' ``EMAModel``). Generation: ``augment_to_file`` into HDF5 against a bare DDIM loop with
classifier-free guidance over the same UNet, batch and steps.

The loops run in pairs whose order alternates (bare first, then augkit first), since on a shared
2-core machine the loop that runs second in a pair has measured 10-15% faster or slower whichever it
is. Each two consecutive pairs form an order-balanced block whose ratio is the geometric mean of its
pairs' ratios; the goals are judged on the median block ratio: training >= 1.0x, generation >= 0.90x.
An odd ``--pairs`` is rounded up.

    .venv/bin/python benchmarks/diffusion.py --size 32 --steps 15 --pairs 6 --per-class 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _arch(size: int, k: int) -> dict:
    from augkit_diffusion.augmenter import PRESETS

    p = PRESETS["cpu"]
    return {"size": size, "num_classes": k, "channels": p["channels"], "attention": p["attention"],
            "layers_per_block": p["layers_per_block"], "prediction": "epsilon"}


def bare_train(images: torch.Tensor, labels: torch.Tensor, arch: dict, batch: int, steps: int, warmup: int) -> float:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    from augkit_diffusion.sampler import build_unet

    torch.manual_seed(0)
    unet = build_unet(arch)
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    opt = torch.optim.AdamW(unet.parameters(), lr=3e-4, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=0.999)
    gen = torch.Generator().manual_seed(0)
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        clean, y = x[idx], labels[idx].clone()
        y[torch.rand(batch, generator=gen) < 0.1] = arch["num_classes"]
        noise = torch.randn(clean.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        loss = F.mse_loss(unet(noise_scheduler.add_noise(clean, noise, t), t, class_labels=y).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.step(unet.parameters())
    return steps * batch / (time.perf_counter() - start)


def augkit_train(images: torch.Tensor, labels: torch.Tensor, arch: dict, batch: int, steps: int, warmup: int) -> float:
    from augkit.train.loop import Streams
    from augkit_diffusion.augmenter import DiffusionParams
    from augkit_diffusion.sampler import build_unet
    from augkit_diffusion.training import DiffusionTask

    torch.manual_seed(0)
    p = {**DiffusionParams(batch_size=batch).resolved(), "seed": 0}
    task = DiffusionTask(build_unet(arch), images, labels, p, Streams(0, {"noise": 1, "t": 2, "drop": 3}),
                         torch.device("cpu"), arch["num_classes"], arch["size"])
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        task.step()
    return steps * batch / (time.perf_counter() - start)


def bare_sample(unet, arch: dict, n: int, sample_steps: int, guidance: float) -> float:
    from augkit_diffusion.sampler import CPU_BATCH, sampling_scheduler

    start = time.perf_counter()
    k = arch["num_classes"]
    with torch.no_grad():
        for c in range(k):
            noise = torch.randn(n, 3, arch["size"], arch["size"], generator=torch.Generator().manual_seed(c))
            for x in noise.split(CPU_BATCH):  # the batch that runs fastest on a CPU, as augkit's sampler does
                scheduler = sampling_scheduler("ddim", "epsilon")
                scheduler.set_timesteps(sample_steps)
                y = torch.cat([torch.full((len(x),), c), torch.full((len(x),), k)])
                for t in scheduler.timesteps:
                    cond, uncond = unet(torch.cat([x, x]), t, class_labels=y).sample.chunk(2)
                    x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
                ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return k * n / (time.perf_counter() - start)


def augkit_sample(unet, arch: dict, n: int, sample_steps: int, guidance: float, folder: Path) -> float:
    from augkit.augment import Context
    from augkit.data.reader import ArrayDataset
    from augkit.generate import augment_to_file
    from augkit_diffusion.augmenter import Diffusion
    from augkit_diffusion.sampler import DiffusionSampler

    k = arch["num_classes"]
    aug = Diffusion({"sample_steps": sample_steps, "guidance": guidance})
    aug.arch = arch
    aug.G = DiffusionSampler(unet, arch["size"], k, "epsilon", "ddim", sample_steps, guidance)
    train = ArrayDataset(np.zeros((k, arch["size"], arch["size"], 3), np.uint8), np.arange(k), [f"c{i}" for i in range(k)])
    out = folder / "shard.h5"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    augment_to_file(aug, train, out, {"per_class": n}, Context(seed=0, device="cpu"), fit=False)
    return k * n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per loop and pair")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=64, help="images per class per generation pass")
    ap.add_argument("--sample-steps", type=int, default=25)
    args = ap.parse_args()
    from augkit.progress import set_quiet
    from augkit_diffusion.sampler import build_unet

    set_quiet(True)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (1024, args.size, args.size, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, args.classes, 1024))
    arch = _arch(args.size, args.classes)
    load = os.getloadavg()
    rows = []
    args.pairs += args.pairs % 2  # as many pairs in each order
    for pair in range(args.pairs):
        order = ("bare", "augkit") if pair % 2 == 0 else ("augkit", "bare")
        rates = {}
        for who in order:
            fn = bare_train if who == "bare" else augkit_train
            rates[who] = fn(images, labels, arch, args.batch, args.steps, args.warmup)
        rows.append(("train", rates["bare"], rates["augkit"]))
        print(f"train pair {pair + 1}: bare {rates['bare']:.1f} img/s, augkit {rates['augkit']:.1f} img/s, "
              f"ratio {rates['augkit'] / rates['bare']:.3f}", flush=True)
    torch.manual_seed(0)
    unet = build_unet(arch).eval()
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            order = ("bare", "augkit") if pair % 2 == 0 else ("augkit", "bare")
            rates = {}
            for who in order:
                rates[who] = (bare_sample(unet, arch, args.per_class, args.sample_steps, 2.0) if who == "bare" else
                              augkit_sample(unet, arch, args.per_class, args.sample_steps, 2.0, Path(tmp)))
            rows.append(("generate", rates["bare"], rates["augkit"]))
            print(f"generate pair {pair + 1}: bare {rates['bare']:.1f} img/s, augkit {rates['augkit']:.1f} img/s, "
                  f"ratio {rates['augkit'] / rates['bare']:.3f}", flush=True)
    for kind, goal in (("train", 1.0), ("generate", 0.9)):
        ratios = [a / b for k, b, a in rows if k == kind]
        blocks = [float(np.sqrt(ratios[i] * ratios[i + 1])) for i in range(0, len(ratios), 2)]
        med = float(np.median(blocks))
        print(f"{kind}: median block ratio {med:.3f} ({'PASS' if med >= goal else 'FAIL'}, goal >= {goal}); "
              f"blocks {', '.join(f'{r:.3f}' for r in blocks)}; pairs {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
