"""Generator quality per CPU-minute: cgan against class-fidelity candidates, scored on one ruler.

Each candidate (a generator augmenter and its parameters) trains on the same real training split
(PBC, stratified split seed 0) with metric-driven snapshots (:mod:`augkit.train.snapshots`): every
``--every`` steps its EMA generator makes the same latents of every class and is scored in augkit's
own feature space (one extractor for all candidates: the same spec on the same rows, trained once and
cached) by per-class FD, KID and the feature-space CAS against its real-trained reference. The scores
land in each run's ``metrics.jsonl`` with the training seconds so far, so the table reads quality
against CPU time: the reference's final FD, and when (in training seconds) each candidate first
reached it. Goal (issue 18): a candidate reaches the FD cgan has after 15 epochs in <= 1/3 of cgan's
training time.

    .venv/bin/python benchmarks/generator_fidelity.py --out runs/fidelity32 --epochs 15
    .venv/bin/python benchmarks/generator_fidelity.py --out runs/fidelity32 --resume   # after a stop
    .venv/bin/python benchmarks/generator_fidelity.py --out runs/fidelity32 --only cgan_long --minutes 30 --resume
    .venv/bin/python benchmarks/generator_fidelity.py --out runs/fidelity32 --only cgan_ada --only cgan_d2d --seed 1

Runs one candidate after another (``--only NAME`` for one); ``--resume`` continues a stopped one from
its checkpoint and skips finished ones. Each trained candidate is saved to ``OUT/NAME/augmenter`` (for
``augkit augment NAME --from``). Prints the load average with the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PBC = ROOT.parent / "shared" / "data" / "pbc128"

#: name -> (augmenter, parameters beyond the shared ones; they override the shared ones)
CANDIDATES = {
    # the reference: cgan as the issue found it, DiffAugment on every image (before ADA became the default)
    "cgan": ("cgan", {"ada_target": 0.0}),
    "cgan_aux": ("cgan", {"ada_target": 0.0, "head": "projection+aux", "aux_weight": 1.0, "aux_on_fakes": False}),
    "cgan_ada": ("cgan", {"ada_target": 0.6}),
    # ReACGAN's data-to-data cross-entropy (with ADA, cgan's default): beside the projection, and alone
    "cgan_d2d": ("cgan", {"ada_target": 0.6, "head": "projection+d2d"}),
    "cgan_reacgan": ("cgan", {"ada_target": 0.6, "head": "d2d"}),
    # the longer schedule: 80 epochs are ~40 min here, the diffusion cpu preset's training time, so its
    # curve also gives cgan at the diffusion model's wall time; scored every 4 epochs
    "cgan_long": ("cgan", {"ada_target": 0.0, "epochs": 80.0, "snapshot_every": 600, "sample_every": 600}),
}


def _data(args):
    from augkit.data.importers import import_source
    from augkit.data.reader import H5Dataset
    from augkit.data.split import stratified_split

    h5 = args.out / f"pbc{args.size}.h5"
    if not h5.exists():
        import_source(args.data, h5, size=args.size, n=0)
    base = H5Dataset(h5)
    split = stratified_split(base, seed=0)
    return split.apply(base, "train")


def _folder(args, name: str) -> Path:
    """A candidate's run folder; seed 0 keeps the bare name, so earlier runs are found."""
    return args.out / (name if not args.seed else f"{name}-seed{args.seed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=PBC)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=float, default=15.0, help="training length of every candidate")
    ap.add_argument("--every", type=int, default=150, help="steps between scores (~1 epoch at batch 64)")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--only", action="append", default=[], help="candidate(s) to run (default: all)")
    ap.add_argument("--reference", default="cgan", help="the candidate whose final FD is the bar")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=0,
                    help="the candidates' training seed; the ruler (its extractor and latents) is that seed's too, "
                         "so scores compare within one seed; the split stays seed 0; folders NAME-seedS")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="wall-time budget of this piece of a candidate's training (0: none); --resume continues it")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is not here (the PBC images)")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AUGKIT_CACHE_DIR", str(args.out.absolute() / "cache"))
    from augkit.augment import Context
    from augkit.errors import Paused
    from augkit.registry import get_augmenter
    from augkit.train.loop import read_metrics

    train = _data(args)
    names = args.only or list(CANDIDATES)
    for name in names:
        folder = _folder(args, name)
        if (folder / "done.json").exists():
            print(f"{name}: done before")
            continue
        augmenter_name, extra = CANDIDATES[name]
        params = {"epochs": args.epochs, "snapshot_every": args.every, "snapshot_per_class": args.per_class,
                  "sample_every": args.every, "checkpoint_every": args.every, **extra}
        if args.minutes:
            params["minutes"] = args.minutes  # a budget: left out of the run's identity, so --resume may change it
        resume = args.resume and (folder / augmenter_name / "checkpoints" / "latest.pt").exists()
        print(f"{name}: {'resuming' if resume else 'training'} {augmenter_name} {params}", flush=True)
        started = time.time()
        augmenter = get_augmenter(augmenter_name, params)
        try:
            augmenter.fit(train, Context(seed=args.seed, device="cpu", workdir=folder, resume=resume))
        except Paused as exc:
            print(f"{name}: paused: {exc}")
            return
        augmenter.save(folder / "augmenter")  # for `augkit augment NAME --from` and `augkit quality`
        (folder / "done.json").write_text(json.dumps({"params": params, "wall_s": time.time() - started,
                                                      "snapshot": augmenter.snapshot}))
    rows = {n: read_metrics(_folder(args, n) / CANDIDATES[n][0]) for n in CANDIDATES
            if (_folder(args, n) / "done.json").exists()}
    if args.reference not in rows:
        return
    bar = rows[args.reference][-1]
    print(f"\nbar: {args.reference}'s FD after {bar['step']} steps ({bar['train_seconds']:.0f} s of training): "
          f"{bar['fd_mean']:.2f}")
    print(f"{'candidate':12s} {'best FD':>8s} {'at s':>7s} {'KID':>8s} {'CAS':>6s} {'CAS/ref min':>11s} "
          f"{'reaches bar at s':>17s} {'x ref time':>10s}")
    result = {"bar": bar, "candidates": {}, "load_average": os.getloadavg(), "command": " ".join(sys.argv)}
    for name, rs in rows.items():
        best = min(rs, key=lambda r: r["fd_mean"])
        reach = next((r for r in rs if r["fd_mean"] <= bar["fd_mean"]), None)
        share = reach["train_seconds"] / bar["train_seconds"] if reach else None
        print(f"{name:12s} {best['fd_mean']:8.2f} {best['train_seconds']:7.0f} {best['kid_mean']:8.4f} "
              f"{best.get('cas_mean', float('nan')):6.3f} {best.get('cas_ratio_min', float('nan')):11.3f} "
              f"{(reach['train_seconds'] if reach else float('nan')):17.0f} {(share or float('nan')):10.2f}")
        result["candidates"][name] = {"best": best, "reaches_bar": reach, "share_of_reference_time": share}
    print(f"load average {os.getloadavg()[0]:.2f}")
    (args.out / _folder(args, "fidelity_benchmark").with_suffix(".json").name).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
