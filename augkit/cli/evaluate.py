"""`augkit evaluate`: a classifier per arm and seed, and the verdict against the baseline."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from rich.table import Table

from augkit import distributed
from augkit.cli.common import DEVICE, SYNC_BN, out


@click.command("evaluate")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="Real dataset (.h5).")
@click.option("--arm", "arms", multiple=True, required=True,
              help="'baseline' or NAME=SHARD.h5[,SHARD2.h5] (repeatable); the baseline is always included. "
                   "A part 'G0.h5|G1.h5|G2.h5' gives each seed its own shard (separate generator runs), so the "
                   "intervals cover the variation between them (quote it in a shell).")
@click.option("--versus", "versus", multiple=True, metavar="ARM=REFERENCE",
              help="Also compare ARM with another arm, e.g. classical+cgan=classical: what a generator adds to "
                   "classical augmentation (repeatable).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--split", "split_path", type=click.Path(path_type=Path), default=None,
              help="Split file from `augkit data split` (default: stratified 70/15/15, --split-seed).")
@click.option("--split-seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--test", "test_path", type=click.Path(path_type=Path), default=None,
              help="External fixed test set (.h5); classes matched by name.")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1),
              help="Training seeds per arm (0..k-1).")
@click.option("--model", default="legacy_xception", show_default=True,
              help="Any timm model name, or resnet10_small / resnet18_small (augkit's models for 32-64 px).")
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(min=1),
              help="The most epochs a run may train (with --schedule onecycle: exactly this many).")
@click.option("--schedule", type=click.Choice(["plateau", "onecycle"]), default="plateau", show_default=True,
              help="plateau: train until validation weighted F1 stops improving; onecycle: a fixed schedule.")
@click.option("--patience", default=3, show_default=True, type=click.IntRange(min=1),
              help="Validation checks without improvement before the learning rate is cut or the run stops.")
@click.option("--patience-steps", default=200, show_default=True, type=click.IntRange(min=0),
              help="The fewest optimiser steps patience spans: on a small training set it counts more checks "
                   "(0: checks only).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--input-aug", type=click.Choice(["none", "flip", "dihedral"]), default="flip", show_default=True,
              help="On-the-fly augmentation in every arm (dihedral: flips and 90-degree turns).")
@click.option("--tta/--no-tta", default=True, show_default=True,
              help="Test predictions averaged over the views --input-aug trains on (flip: 4, dihedral: 8).")
@click.option("--balanced-sampling", is_flag=True, help="Class-balanced batches.")
@click.option("--class-weights", is_flag=True, help="Inverse-frequency class weights in the loss.")
@click.option("--equal-steps/--plain-epochs", default=True, show_default=True,
              help="Every arm makes the baseline's optimiser steps per epoch (default), or an epoch is every image "
                   "of the arm (augmented arms then make more steps).")
@click.option("--synthetic-phase", type=click.Choice(["all", "before_cut"]), default="all", show_default=True,
              help="before_cut: synthetic images train only until the first learning-rate cut, and the run ends on "
                   "the real images alone (pretrain on the mixture, fine-tune on real).")
@click.option("--synthetic-weight", default=1.0, show_default=True, type=click.FloatRange(0, 1),
              help="What one synthetic image weighs in the loss, a real one weighing 1.")
@click.option("--pretrained", default=None, help="Local checkpoint file to start from (no hub downloads).")
@DEVICE
@click.option("--bootstrap", default=1000, show_default=True, type=click.IntRange(min=100),
              help="Bootstrap resamples (over seeds and test images) for the intervals.")
@SYNC_BN
@click.option("--reuse/--no-reuse", default=True, show_default=True,
              help="Reuse finished classifier runs from augkit's model cache (the runs recipes share): same data, "
                   "split, settings, seed and synthetic images. --no-reuse trains every run and leaves the cache "
                   "as it was.")
def evaluate_cmd(data_path, arms, versus, out_dir, split_path, split_seed, test_path, seeds, model, epochs, schedule,
                 patience, patience_steps, batch_size, lr, input_aug, tta, balanced_sampling, class_weights,
                 equal_steps, synthetic_phase, synthetic_weight, pretrained, device, bootstrap, sync_bn, reuse):
    """Train a classifier per arm and seed; report per-class deltas against the baseline with 95% CIs."""
    from augkit.cache import CLASSIFIER_RUNS, cache_root
    from augkit.evaluate import evaluate

    config = {"model": model, "epochs": epochs, "schedule": schedule, "patience": patience,
              "patience_steps": patience_steps, "batch_size": batch_size,
              "lr": lr, "input_aug": input_aug, "tta": tta,
              "balanced_sampling": balanced_sampling, "class_weights": class_weights, "pretrained": pretrained,
              "equal_steps": equal_steps, "synthetic_phase": synthetic_phase,
              "synthetic_weight": synthetic_weight}
    device = distributed.setup(device, sync_batchnorm=sync_bn)
    run_cache = cache_root() / CLASSIFIER_RUNS if reuse else None
    summary = evaluate(data_path, list(arms), out_dir, split=split_path, split_seed=split_seed, test=test_path,
                       seeds=seeds, config=config, device=device, n_boot=bootstrap, run_cache=run_cache,
                       versus=list(versus))
    if not distributed.is_main():
        return
    if summary["reused_runs"]:
        out.print(f"reused finished runs from {run_cache}: {', '.join(summary['reused_runs'])} "
                  "(--no-reuse trains them again)", highlight=False)
    from augkit.evaluate.report import verdict

    table = Table("arm", "weighted F1 (mean)", "Δ vs baseline [95% CI]", "verdict")
    for name, arm in summary["arms"].items():
        f1 = np.mean([r["metrics"]["weighted_f1"] for r in arm["runs"]])
        d = summary["deltas"].get(name, {}).get("weighted_f1")
        delta = "—" if d is None else _interval(d)
        table.add_row(name, f"{f1:.4f}", delta, "" if d is None else verdict(summary, name)[0])
    out.print(table)
    if summary["versus"]:
        against = Table("arm", "reference", "Δ weighted F1 [95% CI]", "verdict")
        for c in summary["versus"].values():
            d = c["weighted_f1"]
            against.add_row(c["arm"], c["reference"], _interval(d), verdict(summary, c["arm"], c["reference"])[0])
        out.print(against)
    out.print(f"protocol: {summary['protocol']}", highlight=False)
    if summary["under_trained"]:
        out.print(f"may be under-trained (best validation check = last): {', '.join(summary['under_trained'])}",
                  highlight=False)
    out.print(f"report: {out_dir / 'report.md'}")


def _interval(d: dict) -> str:
    """A delta with its 95% interval, as the terminal tables show it."""
    return f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
