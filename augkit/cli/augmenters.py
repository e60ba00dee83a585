"""`augkit plugins`, `train`, `augment` and `interpolate`: the augmenters and what they make."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
from rich.markup import escape
from rich.table import Table

from augkit import distributed
from augkit.cli.common import DEVICE, PARAMS, SYNC_BN, context, err, force, out, out_path, parse_param, say, seed
from augkit.errors import ParamError, UserError


def _augmenter(name: str, params: tuple[str, ...], from_dir: Path | None):
    """A new augmenter from --param values, or (with --from) a saved one; returns (augmenter, loaded)."""
    from augkit.registry import get_registry

    cls = get_registry().get(name).cls
    if from_dir is None:
        return cls(dict(parse_param(p) for p in params)), False
    if params:
        raise UserError("--param and --from exclude each other: a saved augmenter keeps its parameters")
    return cls.load(from_dir), True


@click.command("plugins")
@click.option("--params", "show_params", is_flag=True, help="Also list each augmenter's parameters.")
def plugins_cmd(show_params):
    """Installed plugins, their augmenters, versions and distributions; broken ones with the reason."""
    from augkit.params import describe_params
    from augkit.registry import get_registry

    reg = get_registry()
    table = Table("augmenter", "plugin", "distribution", "version", "status")
    for p in reg.plugins:
        provides = p.augmenters + [f"quality check {c}" for c in p.quality_checks]
        for name in provides or ["-"]:
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


@click.command("train")
@click.argument("name")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="Dataset (.h5).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder: config, checkpoints, samples, loss curves, and the trained augmenter.")
@click.option("--split", "split_path", type=click.Path(path_type=Path), default=None,
              help="Train only on the training part of this split.")
@PARAMS
@seed()
@DEVICE
@click.option("--resume", is_flag=True, help="Continue the interrupted run in OUT from its last checkpoint.")
@SYNC_BN
def train_cmd(name, data_path, out_dir, split_path, params, seed, device, resume, sync_bn):
    """Train augmenter NAME (a GAN) and save it to OUT/augmenter for `augkit augment NAME --from`."""
    from augkit.data.reader import H5Dataset
    from augkit.generate import fit_augmenter, training_rows

    augmenter, _ = _augmenter(name, params, None)
    if not augmenter.trains:
        raise UserError(f"augmenter '{name}' has nothing to train; use `augkit augment {name}` directly")
    if (out_dir / "augmenter").exists():
        raise UserError(f"{out_dir}: holds a finished run (augmenter/ exists); choose another folder")
    base = H5Dataset(data_path)
    train, where = training_rows(base, split_path)
    ctx = context(seed, device, out_dir, resume, sync_bn)
    if distributed.is_main():
        err.print(f"training '{name}' on {where}" + (f" with {distributed.world_size()} processes (DDP)"
                                                     if distributed.world_size() > 1 else ""), highlight=False)
    fit_augmenter(augmenter, train, ctx)
    if not distributed.is_main():  # rank 0 alone writes the augmenter and the report
        return
    augmenter.save(out_dir / "augmenter")
    out.print(f"trained '{name}': run folder {out_dir}, augmenter saved to {out_dir / 'augmenter'}")
    from augkit.quality.diversity import MIN_SIZE, runs_collapse_check

    if runs_collapse_check(type(augmenter), min(train.image_size)):
        _diversity_report(augmenter, train, ctx, out_dir)
    elif augmenter.conditional:
        err.print(f"no collapse check: MS-SSIM needs images of at least {MIN_SIZE} px, these are "
                  f"{min(train.image_size)} px", highlight=False)


def _diversity_report(augmenter, train, ctx, out_dir: Path) -> None:
    from augkit.quality.diversity import format_table, write_diversity_report

    rows = write_diversity_report(augmenter, train, ctx, out_dir)
    out.print(format_table(rows), highlight=False)
    collapsed = [r["class"] for r in rows if r["collapsed"]]
    if collapsed:
        err.print(f"[yellow]warning:[/] generated images of {escape(', '.join(collapsed))} are far less diverse "
                  "than the real ones (mode collapse); see diversity.md", highlight=False)


@click.command("augment")
@click.argument("name")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="Dataset to augment (.h5).")
@click.option("--out", "out_file", required=True, type=click.Path(path_type=Path), help="Output dataset (.h5).")
@click.option("--amount", type=click.FloatRange(0, min_open=True), default=None,
              help="Fraction to add per class: 0.5 = +50%.")
@click.option("--per-class", type=click.IntRange(min=1), default=None, help="Add this many images to every class.")
@click.option("--balance-to", default=None, help="Top every class up to 'max' or to this many images.")
@click.option("--classes", "classes", default=None, metavar="NAME[,NAME...]",
              help="Add images only to these classes (e.g. the rare ones); with --amount, a fraction of theirs.")
@click.option("--split", "split_path", type=click.Path(path_type=Path), default=None,
              help="Augment only the training part of this split (.json from `augkit data split`).")
@PARAMS
@seed()
@click.option("--shard", is_flag=True, help="Write only the synthetic rows, not a copy of the real ones.")
@click.option("--from", "from_dir", type=click.Path(path_type=Path), default=None,
              help="Use an augmenter trained with `augkit train` (its OUT/augmenter folder) instead of fitting one.")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Folder for the augmenter's training run (checkpoints, samples); default: a temporary one.")
@click.option("--filter", "use_filter", is_flag=True,
              help="Keep only images that a classifier of the real training images assigns to their class "
                   "(needs --split: the classifier's epoch is chosen on its validation rows).")
@click.option("--filter-param", "filter_params", multiple=True,
              help="Filter setting key=value (threshold, manifold_k, model, epochs, max_tries, ...; repeatable).")
@DEVICE
@force()
def augment_cmd(name, data_path, out_file, amount, per_class, balance_to, classes, split_path, params, seed, shard,
                from_dir, workdir, use_filter, filter_params, device, force):
    """Add synthetic images made by augmenter NAME to a dataset."""
    from augkit.augment import Amount
    from augkit.data.reader import H5Dataset
    from augkit.generate import augment_to_file, training_rows

    out_path(out_file, force)
    given = [v for v in (amount, per_class, balance_to) if v is not None]
    if len(given) != 1:
        raise UserError("give exactly one of --amount, --per-class, --balance-to")
    filter_spec = _filter_spec(use_filter, filter_params, split_path)
    if balance_to is not None and balance_to != "max":
        try:
            balance_to = int(balance_to)
        except ValueError:
            raise UserError(f"--balance-to: expected 'max' or an integer, got '{balance_to}'") from None
    base = H5Dataset(data_path)
    chosen = None if classes is None else tuple(c.strip() for c in classes.split(","))
    try:
        how = Amount(fraction=amount, per_class=per_class, balance_to=balance_to, classes=chosen)
        how.counts(base.class_counts(), base.class_names)  # names checked before any fitting or filter training
    except ParamError as exc:
        raise ParamError(f"--classes: {str(exc).removeprefix('amount: ')}") from None
    augmenter, loaded = _augmenter(name, params, from_dir)
    train, where = training_rows(base, split_path)
    ctx = context(seed, device, workdir)
    if distributed.is_main():
        err.print(f"augmenting {where} with '{name}', {how.describe()}", highlight=False)
    consistency = None
    if filter_spec is not None:
        if not augmenter.conditional:  # before the filter's classifier trains, not after
            from augkit.generator import cannot_choose_a_class

            raise UserError(cannot_choose_a_class(name))
        from augkit.cache import cache_root
        from augkit.data.split import Split
        from augkit.filter import filter_for

        val = Split.load(split_path, fingerprint=base.info.fingerprint).apply(base, "val")
        consistency = filter_for(filter_spec, train, val, ctx.device, cache_root() / "filters",
                                 say=lambda line: err.print(line, highlight=False) if distributed.is_main() else None)
    summary = augment_to_file(augmenter, train, out_file, how, ctx, base=None if shard else base,
                              fit=not (loaded and augmenter.trains), overwrite=force,
                              provenance={"command": " ".join(sys.argv)}, consistency=consistency)
    per_class = ", ".join(f"{k} {v}" for k, v in summary["per_class"].items())
    say(f"wrote {out_file}: {summary['total']} '{summary['origin']}' images ({per_class})", highlight=False)
    if consistency is not None:
        rates = ", ".join(f"{k} {v['rate']:.0%}" for k, v in summary["filter"].items() if v["rate"] is not None)
        say(f"filter acceptance per class: {rates}", highlight=False)


def _filter_spec(use_filter: bool, filter_params: tuple[str, ...], split_path: Path | None):
    """The filter --filter and --filter-param ask for (None without --filter), checked before any work."""
    from augkit.evaluate.models import check_model_name
    from augkit.filter import FilterSpec
    from augkit.params import parse_params

    if not use_filter:
        if filter_params:
            raise UserError("--filter-param needs --filter")
        return None
    if split_path is None:
        raise UserError("--filter needs --split: the filter's classifier is trained on the split's training rows "
                        "and its epoch chosen on the validation rows")
    spec = parse_params(FilterSpec, dict(parse_param(p, "--filter-param") for p in filter_params), where="--filter-param")
    check_model_name(spec.model)
    return spec


@click.command("interpolate")
@click.option("--from", "from_dir", required=True, type=click.Path(path_type=Path),
              help="A saved generator or latent augmenter (an OUT/augmenter folder of `augkit train`).")
@click.option("--out", "out_file", required=True, type=click.Path(path_type=Path), help="The strip (.png).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None, help="Dataset holding --rows.")
@click.option("--rows", default=None, help="Two rows of --data to go between, e.g. 12,840 (default: random latents).")
@click.option("--steps", default=8, show_default=True, type=click.IntRange(min=2),
              help="Generated images from one end to the other.")
@click.option("--label", default=None, help="Class (name or index) for class-conditional generators.")
@seed("Seed of the random latents.")
@DEVICE
@force()
def interpolate_cmd(from_dir, out_file, data_path, rows, steps, label, seed, device, force):
    """Render a strip of images between two images (through the encoder) or two random latents."""
    from augkit.data.reader import H5Dataset
    from augkit.images import save_grid
    from augkit.registry import load_augmenter

    out_path(out_file, force)
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
    ctx = context(seed, device, None)
    strip = augmenter.interpolate(steps, ctx, images, label_index)
    if images is not None:
        strip = np.concatenate([images[:1], strip, images[1:]])
    save_grid(strip, out_file, columns=len(strip))
    ends = "the two images at both ends" if images is not None else "random latents"
    out.print(f"wrote {out_file}: {steps} generated images between {ends}")
