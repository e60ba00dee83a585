"""`augkit quality`: generative quality in the feature space of augkit's own classifier."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from augkit.cli.common import DEVICE, err, force, out, seed
from augkit.errors import UserError


@click.command("quality")
@click.option("--real", "real_path", required=True, type=click.Path(path_type=Path),
              help="Real dataset (.h5); its real rows (with --split: the training rows) are the reference.")
@click.option("--fake", "fake_path", required=True, type=click.Path(path_type=Path),
              help="Generated images (.h5): a shard, or an augmented file (its real rows are left out).")
@click.option("--split", "split_path", type=click.Path(path_type=Path), default=None,
              help="Split of --real: compare with its training rows, validate and test CAS on its validation rows.")
@click.option("--features", default="resnet18", show_default=True,
              help="timm model trained on the real training images as the feature extractor, or a saved "
                   "extractor folder.")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(min=1),
              help="Feature extractor's training epochs.")
@click.option("--checks", default=None, help="Comma-separated subset of: distances, manifold, diversity, memorisation, "
              "cas, two_sample (default: all), or checks plugins register.")
@click.option("--n-per-class", default=1000, show_default=True, type=click.IntRange(min=2),
              help="Images per class and side, at most.")
@click.option("--cas-epochs", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--two-sample-epochs", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--min-steps", default=300, show_default=True, type=click.IntRange(min=0),
              help="Optimiser steps each classifier (extractor, CAS, real-vs-fake) trains at least: more epochs "
                   "than asked on a small set, within 30; 0 = the epochs exactly.")
@click.option("--overall-only", is_flag=True, help="Ignore the generated labels (an unconditional generator).")
@seed()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: FAKE's name + '_quality' next to it).")
@DEVICE
@force("the output folder")
def quality_cmd(real_path, fake_path, split_path, features, epochs, checks, n_per_class, cas_epochs, two_sample_epochs,
                min_steps, overall_only, seed, out_dir, device, force):
    """Generative quality in the feature space of augkit's own classifier (not Inception): distances,
    precision/recall, diversity, memorisation, train-on-synthetic accuracy, a real-vs-fake test."""
    from augkit.distributed import check_device
    from augkit.data.split import Split
    from augkit.params import parse_params
    from augkit.quality.assess import QualitySpec
    from augkit.quality.pipeline import assess_to_folder

    for path in (real_path, fake_path):
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    out_dir = out_dir or fake_path.with_name(f"{fake_path.stem}_quality")
    if out_dir.exists() and not force:
        raise UserError(f"{out_dir}: already exists; pass --force to replace it")
    values = {"features": features, "epochs": epochs, "n_per_class": n_per_class, "cas_epochs": cas_epochs,
              "two_sample_epochs": two_sample_epochs, "min_steps": min_steps, "seed": seed}
    if checks is not None:
        values["checks"] = [c.strip() for c in checks.split(",") if c.strip()]
    spec = parse_params(QualitySpec, values, where="augkit quality")
    split = None
    if split_path is not None:
        from augkit.data.reader import H5Dataset

        split = Split.load(split_path, fingerprint=H5Dataset(real_path).info.fingerprint)
    device = check_device(device)
    result = assess_to_folder(real_path, fake_path, out_dir, spec, split=split, device=device,
                              overall_only=overall_only, say=lambda line: err.print(escape(line), highlight=False))
    _print_quality(result)
    out.print(f"features: {escape(result['extractor']['description'])}", highlight=False)
    out.print(f"wrote {out_dir / 'quality.json'} and {out_dir / 'quality.md'}", highlight=False)


def _print_quality(result: dict) -> None:
    from augkit.quality.report import number as f
    from augkit.quality.report import EXPERT_ACCURACY, row_flags
    from augkit.quality.two_sample import describe

    table = Table("class", "n real/gen", "FD", "KID", "prec.", "recall", "density", "cover.", "MS-SSIM r/g",
                  "copies", "CAS", "flags", title="generative quality (augkit's own classifier features)")
    o = result["overall"]
    for r in [*result["classes"], {"class": "overall", **o}]:
        table.add_row(escape(str(r["class"])), f"{r['real_n']}/{r['fake_n']}", f(r.get("fd"), 2), f(r.get("kid"), "3g"),
                      f(r.get("precision")), f(r.get("recall")), f(r.get("density")), f(r.get("coverage")),
                      f"{f(r.get('real_ms_ssim'))}/{f(r.get('fake_ms_ssim'))}", str(r.get("copies", "–")),
                      f(r.get("cas_recall", r.get("cas_accuracy"))), ", ".join(row_flags(r)) or "ok")
    out.print(table)
    if "two_sample" in result:
        t = result["two_sample"]
        out.print(f"real-vs-fake classifier: {describe(t, EXPERT_ACCURACY)}", highlight=False)
    if o.get("reference_accuracy") is not None:
        from augkit.quality.cas import describe as describe_cas

        out.print(describe_cas(result["cas"]), highlight=False)
