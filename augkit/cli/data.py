"""`augkit data`: import, inspect, split and export datasets."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from augkit.cli.common import err, force, out, out_path, seed


@click.group()
def data() -> None:
    """Import, inspect, split and export datasets."""


@data.command("import")
@click.argument("src")
@click.argument("out_file", metavar="OUT.h5", type=click.Path(path_type=Path))
@click.option("--size", default=64, show_default=True, type=click.IntRange(8, 1024),
              help="Output side in pixels (centre-crop, resize).")
@click.option("--n", "n", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Images to draw when SRC is 'demo'.")
@seed("Seed of the demo set.")
@click.option("--class-names", default=None, help="Comma-separated class names for .npz/.h5 sources without them.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(min=1), help="Threads decoding images.")
@force("OUT.h5")
def data_import(src, out_file, size, n, seed, class_names, workers, force):
    """Import SRC (an image folder, .npz, .h5 or 'demo') into a new dataset OUT.h5."""
    from augkit.data.importers import import_source

    out_path(out_file, force)
    names = [c.strip() for c in class_names.split(",")] if class_names else None
    report = import_source(src, out_file, size=size, n=n, seed=seed, class_names=names, overwrite=force,
                           workers=workers)
    if report.skipped:
        err.print(f"[yellow]skipped {len(report.skipped)} unreadable file(s):[/]")
        for path, reason in report.skipped[:10]:
            err.print(f"  {path}: {reason}", highlight=False)
        if len(report.skipped) > 10:
            err.print(f"  ... and {len(report.skipped) - 10} more (all listed in the dataset's provenance)")
    if report.ignored:
        err.print(f"ignored {report.ignored} file(s) without an image suffix")
    if len(report.class_names) < 2:
        err.print(f"[yellow]note:[/] {out_file} holds a single class; augmenting works, but evaluating needs at "
                  "least two classes", highlight=False)
    out.print(f"wrote {out_file}: {report.num_rows} images, {len(report.class_names)} classes, {size}px")


@data.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data_info(path, as_json):
    """Counts per class and origin, image size and provenance of a dataset."""
    from augkit.data.summary import dataset_summary

    info = dataset_summary(path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    origins = list(info["origins"])
    out.print(f"[bold]{path}[/]  {info['rows']} rows, {info['image_size'][0]}x{info['image_size'][1]} px, "
              f"fingerprint {info['fingerprint'][:12]}")
    table = Table("class", *origins, "total")
    for name, counts in info["classes"].items():
        table.add_row(name, *(str(counts[o]) for o in origins), str(sum(counts.values())))
    table.add_row("[bold]total", *(f"[bold]{info['origins'][o]}" for o in origins), f"[bold]{info['rows']}")
    out.print(table)
    if "fixed_split" in info:
        out.print("fixed split (from the source's folders): " +
                  ", ".join(f"{k} {v}" for k, v in info["fixed_split"].items()))
    prov = dict(info["provenance"])
    skipped = prov.pop("skipped", None)
    out.print("provenance:", json.dumps(prov, indent=2, default=str), highlight=False, soft_wrap=True)
    if skipped:
        out.print(f"skipped files listed: {len(skipped)} (see --json)")


@data.command("split")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", "out_file", required=True, type=click.Path(path_type=Path),
              help="Where to save the split (.json).")
@click.option("--val", default=0.15, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--test", default=0.15, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@seed()
@click.option("--resplit", is_flag=True, help="Ignore the split folders the images came in and stratify anew.")
@click.option("--train-fraction", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Keep this share of every class's training rows (validation and test unchanged): the same "
                   "nested, stratified subset a recipe's evaluate.train_fractions trains on with this --seed.")
@force("the split file")
def data_split(path, out_file, val, test, seed, resplit, train_fraction, force):
    """Make a stratified, seeded train/val/test split of a dataset's real rows."""
    from augkit.data.reader import H5Dataset
    from augkit.data.split import stratified_split

    out_path(out_file, force)
    ds = H5Dataset(path)
    split = stratified_split(ds, {"train": 1.0 - val - test, "val": val, "test": test}, seed, use_fixed=not resplit)
    how = ("from the source's split folders" if split.method == "fixed" else split.method
           if split.method.startswith("fixed") else f"stratified, seed {seed}")
    if train_fraction < 1.0:
        full = len(split.train)
        split = split.with_train_fractions(ds.labels, [train_fraction], seed)[train_fraction]
        how += f"; training rows: {len(split.train)} of {full}, nested stratified {train_fraction:g}"
    split.save(out_file)
    out.print(f"wrote {out_file}: train {len(split.train)}, val {len(split.val)}, test {len(split.test)} ({how})")


@data.command("export")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--origin", default=None, help="Export only rows of this origin (e.g. real, classical).")
@click.option("--limit", default=None, type=click.IntRange(min=1),
              help="At most this many images per class and origin.")
@force("FOLDER")
def data_export(path, folder, origin, limit, force):
    """Write a dataset back to FOLDER/<origin>/<class>/<row>.png for viewing."""
    from augkit.data.export import export_folder

    written = export_folder(path, folder, origin=origin, limit=limit, overwrite=force)
    out.print(f"wrote {written} images to {folder}/<origin>/<class>/")
