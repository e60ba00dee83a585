"""The ``augkit`` command line: run recipes; import, inspect, export, augment and evaluate datasets.

User mistakes end with one line on stderr and exit code 2; a misbehaving plugin with exit code 1
and the plugin's name; ``--traceback`` shows the full story for bug reports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from augkit import __version__, distributed
from augkit.errors import AugkitError, UserError
from augkit.progress import set_quiet

# piped output (grep, files, tests) gets wide lines instead of tables cut at 80 columns
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _on_sigterm(signum, frame):  # noqa: ARG001
    # turn `kill` into an exception so writers remove their temporary files on the way out
    raise SystemExit(128 + signum)


class AugkitGroup(click.Group):
    """Turns augkit's own errors into one-line messages with the right exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AugkitError as exc:
            if ctx.obj and ctx.obj.get("traceback"):
                raise
            if distributed.should_report(exc):  # under torchrun: once, by the rank that failed
                where = f"rank {distributed.rank()}: " if distributed.rank() else ""
                err.print(f"[bold red]error:[/] {escape(where + str(exc))}", highlight=False, soft_wrap=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            # training loops say where they stopped and how to continue; writers leave nothing behind
            err.print(f"[yellow]interrupted[/]: {escape(str(exc) or 'nothing was written at the output path')}",
                      highlight=False)
            ctx.exit(130)


@click.group(cls=AugkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="augkit")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--traceback", is_flag=True, envvar="AUGKIT_TRACEBACK", help="Show full tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, traceback: bool) -> None:
    """augkit: augment white-blood-cell image datasets and measure whether it helped."""
    ctx.obj = {"traceback": traceback}
    set_quiet(quiet)


def _out_path(path: Path, force: bool) -> Path:
    if path.exists() and not force:
        raise UserError(f"{path}: already exists; pass --force to replace it")
    if not path.parent.exists():
        raise UserError(f"{path.parent}: output folder does not exist")
    return path


# -- data --------------------------------------------------------------------------------------
@cli.group()
def data() -> None:
    """Import, inspect, split and export datasets."""


@data.command("import")
@click.argument("src")
@click.argument("out_path", metavar="OUT.h5", type=click.Path(path_type=Path))
@click.option("--size", default=64, show_default=True, type=int, help="Output side in pixels (centre-crop, resize).")
@click.option("--n", "n", default=2000, show_default=True, type=int, help="Images to draw when SRC is 'demo'.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the demo set.")
@click.option("--class-names", default=None, help="Comma-separated class names for .npz/.h5 sources without them.")
@click.option("--workers", default=4, show_default=True, type=int, help="Threads decoding images.")
@click.option("--force", is_flag=True, help="Replace OUT.h5 if it exists.")
def data_import(src, out_path, size, n, seed, class_names, workers, force):
    """Import SRC (an image folder, .npz, .h5 or 'demo') into a new dataset OUT.h5."""
    from augkit.data.importers import import_source

    _out_path(out_path, force)
    names = [c.strip() for c in class_names.split(",")] if class_names else None
    report = import_source(src, out_path, size=size, n=n, seed=seed, class_names=names, overwrite=force,
                           workers=workers)
    if report.skipped:
        err.print(f"[yellow]skipped {len(report.skipped)} unreadable file(s):[/]")
        for path, reason in report.skipped[:10]:
            err.print(f"  {path}: {reason}", highlight=False)
        if len(report.skipped) > 10:
            err.print(f"  ... and {len(report.skipped) - 10} more (all listed in the dataset's provenance)")
    if report.ignored:
        err.print(f"ignored {report.ignored} file(s) without an image suffix")
    out.print(f"wrote {out_path}: {report.num_rows} images, {len(report.class_names)} classes, {size}px")


@data.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data_info(path, as_json):
    """Counts per class and origin, image size and provenance of a dataset."""
    from augkit.data.reader import H5Dataset

    ds = H5Dataset(path)
    counts = np.zeros((len(ds.class_names), len(ds.origins)), dtype=np.int64)
    np.add.at(counts, (ds.labels, ds.origin), 1)
    info = {
        "path": str(path), "rows": len(ds), "image_size": list(ds.image_size), "fingerprint": ds.info.fingerprint,
        "origins": {o: int(counts[:, k].sum()) for k, o in enumerate(ds.origins)},
        "classes": {c: {o: int(counts[i, k]) for k, o in enumerate(ds.origins)} for i, c in enumerate(ds.class_names)},
        "provenance": ds.provenance,
    }
    if ds.split is not None:
        from augkit.data.schema import SPLIT_NAMES
        info["fixed_split"] = {name: int((ds.split == k).sum()) for k, name in enumerate(SPLIT_NAMES)}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    out.print(f"[bold]{path}[/]  {len(ds)} rows, {ds.image_size[0]}x{ds.image_size[1]} px, "
              f"fingerprint {ds.info.fingerprint[:12]}")
    table = Table("class", *ds.origins, "total")
    for i, c in enumerate(ds.class_names):
        table.add_row(c, *(str(v) for v in counts[i]), str(counts[i].sum()))
    table.add_row("[bold]total", *(f"[bold]{v}" for v in counts.sum(0)), f"[bold]{counts.sum()}")
    out.print(table)
    if "fixed_split" in info:
        out.print("fixed split (from the source's folders): " +
                  ", ".join(f"{k} {v}" for k, v in info["fixed_split"].items()))
    prov = dict(ds.provenance)
    skipped = prov.pop("skipped", None)
    out.print("provenance:", json.dumps(prov, indent=2, default=str), highlight=False, soft_wrap=True)
    if skipped:
        out.print(f"skipped files listed: {len(skipped)} (see --json)")


@data.command("split")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path), help="Where to save the split (.json).")
@click.option("--val", default=0.15, show_default=True, type=float)
@click.option("--test", default=0.15, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resplit", is_flag=True, help="Ignore the split folders the images came in and stratify anew.")
@click.option("--force", is_flag=True, help="Replace the split file if it exists.")
def data_split(path, out_path, val, test, seed, resplit, force):
    """Make a stratified, seeded train/val/test split of a dataset's real rows."""
    from augkit.data.reader import H5Dataset
    from augkit.data.split import stratified_split

    _out_path(out_path, force)
    ds = H5Dataset(path)
    split = stratified_split(ds, {"train": 1.0 - val - test, "val": val, "test": test}, seed, use_fixed=not resplit)
    split.save(out_path)
    how = "from the source's split folders" if split.method == "fixed" else f"stratified, seed {seed}"
    out.print(f"wrote {out_path}: train {len(split.train)}, val {len(split.val)}, test {len(split.test)} ({how})")


@data.command("export")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--origin", default=None, help="Export only rows of this origin (e.g. real, classical).")
@click.option("--limit", default=None, type=int, help="At most this many images per class and origin.")
@click.option("--force", is_flag=True, help="Replace FOLDER if it exists.")
def data_export(path, folder, origin, limit, force):
    """Write a dataset back to FOLDER/<origin>/<class>/<row>.png for viewing."""
    from PIL import Image

    from augkit.data.reader import H5Dataset
    from augkit.progress import track

    if folder.exists() and not force:
        raise UserError(f"{folder}: already exists; pass --force to replace it")
    ds = H5Dataset(path)
    if origin is not None:
        ds = ds.where(origin=origin)
    keep = np.arange(len(ds))
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit: expected a positive integer, got {limit}")
        key = ds.origin.astype(np.int64) * len(ds.class_names) + ds.labels
        keep = np.concatenate([np.flatnonzero(key == k)[:limit] for k in np.unique(key)]) if len(ds) else keep
        keep.sort()
        ds = ds.subset(keep)
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with track("Exporting", len(ds)) as advance:
            for images, pos in ds.iter_batches(512):
                for img, row, lab, org in zip(images, ds.rows[pos], ds.labels[pos], ds.origin[pos]):
                    target = tmp / ds.origins[org] / ds.class_names[lab]
                    target.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).save(target / f"{row:07d}.png")
                advance(len(images))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    out.print(f"wrote {len(ds)} images to {folder}/<origin>/<class>/")


# -- plugins -----------------------------------------------------------------------------------
@cli.command("plugins")
@click.option("--params", "show_params", is_flag=True, help="Also list each augmenter's parameters.")
def plugins_cmd(show_params):
    """Installed plugins, their augmenters, versions and distributions; broken ones with the reason."""
    from augkit.params import describe_params
    from augkit.registry import get_registry

    reg = get_registry()
    table = Table("augmenter", "plugin", "distribution", "version", "status")
    for p in reg.plugins:
        for name in p.augmenters or ["-"]:
            status = "[red]broken: " + p.error + "[/]" if p.error else "ok"
            table.add_row(name, p.name, p.distribution, p.version, status)
    out.print(table)
    if show_params:
        for name in reg.names():
            cls = reg.get(name).cls
            out.print(f"\n[bold]{name}[/]: {cls.summary}")
            for prm in describe_params(cls.Params):
                out.print(f"  {prm['name']} ({prm['type']}, default {prm['default']!r}): {prm['help']}",
                          highlight=False)


# -- augment -----------------------------------------------------------------------------------
def _parse_param(text: str) -> tuple[str, object]:
    """``key=value`` with a TOML value (numbers, true/false, [lists], "strings"); bare words are strings."""
    from augkit.recipe import parse_value

    if "=" not in text:
        raise UserError(f"--param '{text}': expected key=value")
    key, raw = text.split("=", 1)
    return key.strip(), parse_value(raw.strip())


def _augmenter(name: str, params: tuple[str, ...], from_dir: Path | None):
    """A new augmenter from --param values, or (with --from) a saved one; returns (augmenter, loaded)."""
    from augkit.registry import get_registry

    cls = get_registry().get(name).cls
    if from_dir is None:
        return cls(dict(_parse_param(p) for p in params)), False
    if params:
        raise UserError("--param and --from exclude each other: a saved augmenter keeps its parameters")
    return cls.load(from_dir), True


def _training_rows(base, split_path: Path | None):
    """The rows augmenters may learn from: a split's train part, the source's train folder, or all."""
    from augkit.data.split import Split

    real = base.real()
    if split_path is not None:
        train = Split.load(split_path, fingerprint=base.info.fingerprint).apply(base, "train")
        return train, f"the training split ({len(train)} images)"
    if real.split is not None:
        train = real.where(split="train")
        return train, f"the {len(train)} images of the source's train folder"
    return real, f"all {len(real)} real images (no --split given)"


def _context(seed: int, device: str | None, workdir: Path | None, resume: bool = False, sync_bn: bool = False):
    """The augmenter's context; under torchrun this also starts the process group (see augkit.distributed)."""
    from augkit.augment import Context

    return Context(seed=seed, device=distributed.setup(device, sync_batchnorm=sync_bn), workdir=workdir,
                   resume=resume)


def _say(*args, **kwargs) -> None:
    """Print a result line (rank 0 only under torchrun)."""
    if distributed.is_main():
        out.print(*args, **kwargs)


SYNC_BN = click.option("--sync-bn", is_flag=True,
                       help="Under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm).")


@cli.command("train")
@click.argument("name")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="Dataset (.h5).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder: config, checkpoints, samples, loss curves, and the trained augmenter.")
@click.option("--split", "split_path", type=click.Path(path_type=Path), default=None,
              help="Train only on the training part of this split.")
@click.option("--param", "params", multiple=True, help="Augmenter parameter key=value (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in OUT from its last checkpoint.")
@SYNC_BN
def train_cmd(name, data_path, out_dir, split_path, params, seed, device, resume, sync_bn):
    """Train augmenter NAME (a GAN) and save it to OUT/augmenter for `augkit augment NAME --from`."""
    from augkit.data.reader import H5Dataset
    from augkit.generate import fit_augmenter

    augmenter, _ = _augmenter(name, params, None)
    if not augmenter.trains:
        raise UserError(f"augmenter '{name}' has nothing to train; use `augkit augment {name}` directly")
    if (out_dir / "augmenter").exists():
        raise UserError(f"{out_dir}: holds a finished run (augmenter/ exists); choose another folder")
    base = H5Dataset(data_path)
    train, where = _training_rows(base, split_path)
    ctx = _context(seed, device, out_dir, resume, sync_bn)
    if distributed.is_main():
        err.print(f"training '{name}' on {where}" + (f" with {distributed.world_size()} processes (DDP)"
                                                     if distributed.world_size() > 1 else ""), highlight=False)
    fit_augmenter(augmenter, train, ctx)
    if not distributed.is_main():  # rank 0 alone writes the augmenter and the report
        return
    augmenter.save(out_dir / "augmenter")
    out.print(f"trained '{name}': run folder {out_dir}, augmenter saved to {out_dir / 'augmenter'}")
    if augmenter.conditional:
        _diversity_report(augmenter, train, ctx, out_dir)


def _diversity_report(augmenter, train, ctx, out_dir: Path) -> None:
    from augkit.quality.diversity import format_table, write_diversity_report

    rows = write_diversity_report(augmenter, train, ctx, out_dir)
    out.print(format_table(rows), highlight=False)
    collapsed = [r["class"] for r in rows if r["collapsed"]]
    if collapsed:
        err.print(f"[yellow]warning:[/] generated images of {escape(', '.join(collapsed))} are far less diverse "
                  "than the real ones (mode collapse); see diversity.md", highlight=False)


@cli.command("augment")
@click.argument("name")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="Dataset to augment (.h5).")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path), help="Output dataset (.h5).")
@click.option("--amount", type=float, default=None, help="Fraction to add per class: 0.5 = +50%.")
@click.option("--per-class", type=int, default=None, help="Add this many images to every class.")
@click.option("--balance-to", default=None, help="Top every class up to 'max' or to this many images.")
@click.option("--split", "split_path", type=click.Path(path_type=Path), default=None,
              help="Augment only the training part of this split (.json from `augkit data split`).")
@click.option("--param", "params", multiple=True, help="Augmenter parameter key=value (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--shard", is_flag=True, help="Write only the synthetic rows, not a copy of the real ones.")
@click.option("--from", "from_dir", type=click.Path(path_type=Path), default=None,
              help="Use an augmenter trained with `augkit train` (its OUT/augmenter folder) instead of fitting one.")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Folder for the augmenter's training run (checkpoints, samples); default: a temporary one.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def augment_cmd(name, data_path, out_path, amount, per_class, balance_to, split_path, params, seed, shard, from_dir,
                workdir, device, force):
    """Add synthetic images made by augmenter NAME to a dataset."""
    from augkit.augment import Amount
    from augkit.data.reader import H5Dataset
    from augkit.generate import augment_to_file

    _out_path(out_path, force)
    given = [v for v in (amount, per_class, balance_to) if v is not None]
    if len(given) != 1:
        raise UserError("give exactly one of --amount, --per-class, --balance-to")
    if balance_to is not None and balance_to != "max":
        try:
            balance_to = int(balance_to)
        except ValueError:
            raise UserError(f"--balance-to: expected 'max' or an integer, got '{balance_to}'") from None
    how = Amount(fraction=amount, per_class=per_class, balance_to=balance_to)
    augmenter, loaded = _augmenter(name, params, from_dir)
    base = H5Dataset(data_path)
    train, where = _training_rows(base, split_path)
    ctx = _context(seed, device, workdir)
    if distributed.is_main():
        err.print(f"augmenting {where} with '{name}', {how.describe()}", highlight=False)
    summary = augment_to_file(augmenter, train, out_path, how, ctx, base=None if shard else base,
                              fit=not (loaded and augmenter.trains), overwrite=force,
                              provenance={"command": " ".join(sys.argv)})
    per_class = ", ".join(f"{k} {v}" for k, v in summary["per_class"].items())
    _say(f"wrote {out_path}: {summary['total']} '{summary['origin']}' images ({per_class})", highlight=False)


@cli.command("interpolate")
@click.option("--from", "from_dir", required=True, type=click.Path(path_type=Path),
              help="A saved augmenter folder: latent_interp/latent_perturb (images or random latents) or a GAN.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path), help="The strip (.png).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None, help="Dataset holding --rows.")
@click.option("--rows", default=None, help="Two rows of --data to go between, e.g. 12,840 (default: random latents).")
@click.option("--steps", default=8, show_default=True, type=int, help="Generated images from one end to the other.")
@click.option("--label", default=None, help="Class (name or index) for class-conditional generators.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random latents.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def interpolate_cmd(from_dir, out_path, data_path, rows, steps, label, seed, device, force):
    """Render a strip of images between two images (through the encoder) or two random latents."""
    from augkit.data.reader import H5Dataset
    from augkit.registry import load_augmenter
    from augkit.images import save_grid

    _out_path(out_path, force)
    augmenter = load_augmenter(from_dir)  # one that cannot interpolate says so when asked, before any file is written
    images, class_names, label_index = None, None, None
    if rows is not None:
        if data_path is None:
            raise UserError("--rows needs --data (the dataset the rows belong to)")
        try:
            pair = [int(r) for r in rows.split(",")]
        except ValueError:
            pair = []
        if len(pair) != 2:
            raise UserError(f"--rows '{rows}': expected two row numbers, e.g. 12,840")
        data = H5Dataset(data_path)
        bad = [r for r in pair if not 0 <= r < len(data)]
        if bad:
            raise UserError(f"--rows: row {bad[0]} is outside {data_path} (0..{len(data) - 1})")
        images = data.read(np.array(pair))
        class_names = data.class_names
        label_index = int(data.labels[pair[0]])
        if label is None and data.labels[pair[0]] != data.labels[pair[1]] and getattr(augmenter, "conditional", False):
            raise UserError(f"rows {pair[0]} and {pair[1]} are of different classes; give --label for the generator")
    elif data_path is not None:
        class_names = H5Dataset(data_path).class_names
    if label is not None:
        if label.isdigit():
            label_index = int(label)
        elif class_names is not None and label in class_names:
            label_index = class_names.index(label)
        else:
            raise UserError(f"--label '{label}': give a class index, or a class name together with --data")
    ctx = _context(seed, device, None)
    strip = augmenter.interpolate(steps, ctx, images, label_index)
    if images is not None:
        strip = np.concatenate([images[:1], strip, images[1:]])
    save_grid(strip, out_path, columns=len(strip))
    ends = "the two images at both ends" if images is not None else "random latents"
    out.print(f"wrote {out_path}: {steps} generated images between {ends}")


# -- evaluate ----------------------------------------------------------------------------------
@cli.command("evaluate")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="Real dataset (.h5).")
@click.option("--arm", "arms", multiple=True, required=True,
              help="'baseline' or NAME=SHARD.h5[,SHARD2.h5] (repeatable); the baseline is always included.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--split", "split_path", type=click.Path(path_type=Path), default=None,
              help="Split file from `augkit data split` (default: stratified 70/15/15, --split-seed).")
@click.option("--split-seed", default=0, show_default=True, type=int)
@click.option("--test", "test_path", type=click.Path(path_type=Path), default=None,
              help="External fixed test set (.h5); classes matched by name.")
@click.option("--seeds", default=1, show_default=True, type=int, help="Training seeds per arm (0..k-1).")
@click.option("--model", default="legacy_xception", show_default=True,
              help="Any timm model name, or resnet10_small / resnet18_small (augkit's models for 32-64 px).")
@click.option("--epochs", default=40, show_default=True, type=int,
              help="The most epochs a run may train (with --schedule onecycle: exactly this many).")
@click.option("--schedule", type=click.Choice(["plateau", "onecycle"]), default="plateau", show_default=True,
              help="plateau: train until validation weighted F1 stops improving; onecycle: a fixed schedule.")
@click.option("--patience", default=4, show_default=True, type=int,
              help="Validation checks without improvement before the learning rate is cut or the run stops.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--input-aug", type=click.Choice(["none", "flip", "dihedral"]), default="flip", show_default=True,
              help="On-the-fly augmentation in every arm (dihedral: flips and 90-degree turns).")
@click.option("--tta/--no-tta", default=True, show_default=True,
              help="Test predictions averaged over the views --input-aug trains on (flip: 4, dihedral: 8).")
@click.option("--balanced-sampling", is_flag=True, help="Class-balanced batches.")
@click.option("--class-weights", is_flag=True, help="Inverse-frequency class weights in the loss.")
@click.option("--equal-steps/--plain-epochs", default=True, show_default=True,
              help="Every arm makes the baseline's optimiser steps per epoch (default), or an epoch is every image "
                   "of the arm (augmented arms then make more steps).")
@click.option("--pretrained", default=None, help="Local checkpoint file to start from (no hub downloads).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present).")
@click.option("--bootstrap", default=1000, show_default=True, type=int,
              help="Bootstrap resamples (over seeds and test images) for the intervals.")
@SYNC_BN
def evaluate_cmd(data_path, arms, out_dir, split_path, split_seed, test_path, seeds, model, epochs, schedule, patience,
                 batch_size, lr, input_aug, tta, balanced_sampling, class_weights, equal_steps, pretrained, device,
                 bootstrap, sync_bn):
    """Train a classifier per arm and seed; report per-class deltas against the baseline with 95% CIs."""
    from augkit.evaluate import evaluate

    config = {"model": model, "epochs": epochs, "schedule": schedule, "patience": patience, "batch_size": batch_size,
              "lr": lr, "input_aug": input_aug, "tta": tta,
              "balanced_sampling": balanced_sampling, "class_weights": class_weights, "pretrained": pretrained,
              "equal_steps": equal_steps}
    device = distributed.setup(device, sync_batchnorm=sync_bn)
    summary = evaluate(data_path, list(arms), out_dir, split=split_path, split_seed=split_seed, test=test_path,
                       seeds=seeds, config=config, device=device, n_boot=bootstrap)
    if not distributed.is_main():
        return
    from augkit.evaluate.report import verdict

    table = Table("arm", "weighted F1 (mean)", "Δ vs baseline [95% CI]", "verdict")
    for name, arm in summary["arms"].items():
        f1 = np.mean([r["metrics"]["weighted_f1"] for r in arm["runs"]])
        d = summary["deltas"].get(name, {}).get("weighted_f1")
        delta = "—" if d is None else f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
        table.add_row(name, f"{f1:.4f}", delta, "" if d is None else verdict(summary, name)[0])
    out.print(table)
    out.print(f"protocol: {summary['protocol']}", highlight=False)
    if summary["under_trained"]:
        out.print(f"may be under-trained (best validation check = last): {', '.join(summary['under_trained'])}",
                  highlight=False)
    out.print(f"report: {out_dir / 'report.md'}")


# -- generative quality ------------------------------------------------------------------------
@cli.command("quality")
@click.option("--real", "real_path", required=True, type=click.Path(path_type=Path),
              help="Real dataset (.h5); its real rows (with --split: the training rows) are the reference.")
@click.option("--fake", "fake_path", required=True, type=click.Path(path_type=Path),
              help="Generated images (.h5): a shard, or an augmented file (its real rows are left out).")
@click.option("--split", "split_path", type=click.Path(path_type=Path), default=None,
              help="Split of --real: compare with its training rows, validate and test CAS on its validation rows.")
@click.option("--features", default="resnet18", show_default=True,
              help="timm model trained on the real training images as the feature extractor, or a saved "
                   "extractor folder.")
@click.option("--epochs", default=3, show_default=True, type=int, help="Feature extractor's training epochs.")
@click.option("--checks", default=None, help="Comma-separated subset of: distances, manifold, diversity, memorisation, "
              "cas, two_sample (default: all).")
@click.option("--n-per-class", default=1000, show_default=True, type=int, help="Images per class and side, at most.")
@click.option("--cas-epochs", default=3, show_default=True, type=int)
@click.option("--two-sample-epochs", default=3, show_default=True, type=int)
@click.option("--overall-only", is_flag=True, help="Ignore the generated labels (an unconditional generator).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: FAKE's name + '_quality' next to it).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present).")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
def quality_cmd(real_path, fake_path, split_path, features, epochs, checks, n_per_class, cas_epochs, two_sample_epochs,
                overall_only, seed, out_dir, device, force):
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
              "two_sample_epochs": two_sample_epochs, "seed": seed}
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
        out.print(f"real-vs-fake classifier: held-out accuracy {t['accuracy']:.3f} [{t['ci_low']:.3f}, "
                  f"{t['ci_high']:.3f}] on {t['test_images']} images (0.5 = indistinguishable; the thesis's "
                  f"expert {EXPERT_ACCURACY})",
                  highlight=False)
    if o.get("reference_accuracy") is not None:
        out.print(f"CAS {o['cas_accuracy']:.3f} vs {o['reference_accuracy']:.3f} when trained on as many real images",
                  highlight=False)


# -- expert test -------------------------------------------------------------------------------
@cli.command("expert-test")
@click.argument("sessions", nargs=-1, metavar="[SESSION...]")
@click.option("--real", "real_path", type=click.Path(path_type=Path), default=None,
              help="Dataset (.h5) whose rows of origin 'real' are shown (a full dataset is fine).")
@click.option("--fake", "fake_path", type=click.Path(path_type=Path), default=None,
              help="Shard (.h5) whose generated rows are shown.")
@click.option("--n", "n", type=int, default=None, help="Images per source: n real and n generated.  [default: 50]")
@click.option("--show-class", is_flag=True, help="Show each image's class (a generated image's intended class).")
@click.option("--session", "name", default=None,
              help="Session name (default: date and time); an existing session is resumed.")
@click.option("--sessions-dir", type=click.Path(path_type=Path), default=Path("expert-sessions"), show_default=True,
              help="Folder holding the sessions.")
@click.option("--expert", default=None, help="Who answers, for the report (default: the session name).")
@click.option("--seed", type=int, default=None, help="Seed of the draw and order (default: random, recorded).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on; only this machine reaches the page unless you change it.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port to serve on (0: any free port).")
@click.option("--report", "report_only", is_flag=True,
              help="Print and save the report of SESSION... (folders or names in --sessions-dir), combined.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="With --report: folder for expert_report.json/.csv (default: the one session's folder).")
@click.option("--force", is_flag=True, help="With --report --out: replace report files there.")
def expert_test_cmd(sessions, real_path, fake_path, n, show_class, name, sessions_dir, expert, seed, host, port,
                    report_only, out_dir, force):
    """Serve a page on which an expert tells real from generated images; or, with --report, the numbers."""
    if report_only:
        _expert_report(sessions, sessions_dir, out_dir, force)
    elif sessions:
        raise UserError("SESSION arguments go with --report; to answer, give --session NAME")
    else:
        _expert_serve(real_path, fake_path, n, show_class, name, sessions_dir, expert, seed, host, port)


def _expert_serve(real_path, fake_path, n, show_class, name, sessions_dir, expert, seed, host, port):
    from datetime import datetime

    from augkit.expert import ExpertServer, Session, build_report, create_session
    from augkit.expert.session import check_name

    name = check_name(name or datetime.now().strftime("%Y%m%d-%H%M%S"))
    folder = sessions_dir / name
    if folder.exists():
        manifest = Session(folder).manifest
        for option, given, kept in [("--real", real_path, manifest["real"]["path"]),
                                    ("--fake", fake_path, manifest["fake"]["path"])]:
            if given is not None and str(given.resolve()) != kept:
                raise UserError(f"{option} {given}: session '{name}' was made from {kept}; leave {option} out "
                                "to resume it, or choose another --session")
        for option, given, kept in [("--n", n, manifest["n_per_source"]), ("--seed", seed, manifest["seed"]),
                                    ("--show-class", show_class or None, manifest["show_class"] or None),
                                    ("--expert", expert, manifest["expert"])]:
            if given is not None and given != kept:
                raise UserError(f"{option}: session '{name}' was made with {kept}; leave it out to resume")
        say = f"resuming session '{name}'"
    else:
        if real_path is None or fake_path is None:
            raise UserError(f"no session '{name}' in {sessions_dir}: give --real and --fake to start one")
        create_session(folder, real_path, fake_path, 50 if n is None else n, seed=seed, show_class=show_class,
                       expert=expert)
        say = f"new session '{name}'"

    def finished(s):
        path = _show_report(build_report([s]), s.folder)[0]
        out.print(f"all {s.total} images answered; report: {path} (and .csv)")

    resume = f"augkit expert-test --session {name}" + ("" if sessions_dir == Path("expert-sessions")
                                                      else f" --sessions-dir {sessions_dir}")
    with Session(folder, writer=True) as session:
        server = ExpertServer(session, host, port, on_complete=finished)
        out.print(f"{say} in {folder}: {session.answered} of {session.total} images answered")
        if session.done:
            out.print(f"(all answered: `augkit expert-test --report {folder}` gives the numbers; the page allows undo)")
        out.print(f"open [bold]{server.url}[/] in a browser; Ctrl-C stops (every answer is already saved)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:  # also on `kill`, which main() turns into SystemExit
            server.server_close()
            out.print(f"stopped with {session.answered} of {session.total} answered; continue with: {resume}",
                      highlight=False)


def _show_report(report: dict, folder: Path) -> tuple[Path, Path]:
    """Print an expert-test report's tables and save it (JSON and CSV) in ``folder``."""
    from augkit.expert import report_tables, write_report

    for table in report_tables(report):
        out.print(table)
    return write_report(report, folder)


def _expert_report(sessions, sessions_dir, out_dir, force):
    from augkit.expert import Session, build_report
    from augkit.expert.report import REPORT_CSV, REPORT_JSON

    if not sessions:
        raise UserError("--report needs one or more SESSION folders (or names in --sessions-dir)")
    folders = []
    for given in sessions:
        folder = Path(given)
        if not folder.is_dir() and (sessions_dir / given).is_dir():
            folder = sessions_dir / given
        if not folder.is_dir():
            raise UserError(f"{given}: no such session folder (nor in {sessions_dir})")
        folders.append(folder)
    report = build_report([Session(folder) for folder in folders])
    if out_dir is None:
        if len(folders) > 1:
            raise UserError("--out DIR is needed to save a report of several sessions")
        out_dir = folders[0]
    else:
        if not out_dir.is_dir():
            raise UserError(f"{out_dir}: output folder does not exist")
        for existing in (out_dir / REPORT_JSON, out_dir / REPORT_CSV):
            _out_path(existing, force)
    json_path, csv_path = _show_report(report, out_dir)
    for s in report["sessions"]:
        if not s["complete"]:
            err.print(f"[yellow]note:[/] session '{s['name']}' has {s['answered']} of {s['total']} answers; "
                      "its numbers cover those only", highlight=False)
    out.print(f"wrote {json_path} and {csv_path}")


# -- run ---------------------------------------------------------------------------------------
@cli.command("run")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (repeatable): evaluate.epochs=2, data.source=PATH, "
                   "augment.acgan.params.epochs=3.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: the recipe's [output] dir, else runs/<recipe name>).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in its folder (same recipe and --set).")
@click.option("--check", is_flag=True, help="Only check the recipe and print the plan; run nothing.")
@SYNC_BN
def run_cmd(recipe_path, overrides, out_dir, device, resume, check, sync_bn):
    """Run a whole experiment from a TOML recipe: data, augment steps, evaluation and report."""
    from augkit.recipe import load_recipe
    from augkit.cache import cache_root
    from augkit.runner import run_recipe

    recipe = load_recipe(recipe_path, overrides, out=out_dir)
    if check:
        if distributed.env_rank() != 0:  # under torchrun every rank checks, rank 0 alone prints the plan
            return
        out.print(f"recipe {recipe.name}: OK (fingerprint {recipe.fingerprint()})")
        out.print(f"  data: {recipe.data.source} at {recipe.data.image_size}px, split {recipe.data.split}")
        for step in recipe.order():
            what = step.amount.describe() if step.amount else "trains only"
            needs = f", after {', '.join(step.needs)}" if step.needs else ""
            out.print(f"  step {step.id}: {step.name}, {what}{needs}")
        if recipe.quality:
            q = recipe.quality
            out.print(f"  quality: {', '.join(q.checks)} of each step's images; features of {q.features} "
                      f"({q.epochs} epochs on the real training split)", highlight=False)
        if recipe.evaluate:
            e = recipe.evaluate
            out.print(f"  evaluate: {e.config.model}, {e.seeds} seed(s), arms {list(e.arms)}", highlight=False)
            out.print(f"    protocol: {e.config.protocol}", highlight=False)
            if len(e.train_fractions) > 1:
                out.print(f"    data-efficiency curve: every arm (and every step) again on nested stratified "
                          f"fractions {list(e.train_fractions)} of the real training split", highlight=False)
        out.print(f"  run folder: {recipe.out}; model cache: {cache_root()}")
        return
    device = distributed.setup(device, sync_batchnorm=sync_bn)
    report = run_recipe(recipe, device=device, resume=resume, command=" ".join(["augkit", *sys.argv[1:]]),
                        say=lambda line: err.print(line, highlight=False, markup=False))
    _say(f"report: {report}")


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli(prog_name="augkit")
        code: int | str | None = 0
    except SystemExit as exc:  # click ends every command this way
        code = exc.code
    except BaseException:
        distributed.cleanup()
        raise
    distributed.end_process(code)  # under torchrun: without interpreter teardown (see there)


if __name__ == "__main__":
    main()
