"""Drive an augmenter: fit it, ask it for each class's images in batches, stream them to HDF5.

Plugins only make pixels; this module owns the bookkeeping they must not get wrong: per-class
amounts, shapes and dtypes, parent rows, provenance, atomic output, progress, and turning a plugin's
crash into an error that names the plugin and its distribution.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from augkit import distributed
from augkit.augment import Amount, Augmenter, Context, Samples
from augkit.data.reader import H5Dataset, ImageDataset
from augkit.data.schema import SPLIT_NAMES
from augkit.data.split import rows_fingerprint
from augkit.data.writer import DatasetWriter, refuse_existing
from augkit.errors import AugkitError, PluginError, UserError
from augkit.progress import track
from augkit.registry import get_registry

GENERATE_BATCH = 256


def _origin_of(augmenter: Augmenter) -> str:
    info = get_registry().plugin_of(augmenter)
    if info is None:
        return f"augmenter '{augmenter.name}' ({type(augmenter).__module__}.{type(augmenter).__qualname__})"
    return f"augmenter '{augmenter.name}' from {info.origin}"


def call_plugin(augmenter: Augmenter, method: str, fn: Callable[[], Any]) -> Any:
    """Run plugin code; a crash becomes a PluginError naming the plugin (augkit's own errors pass)."""
    try:
        return fn()
    except (AugkitError, KeyboardInterrupt):
        raise
    except OSError as exc:
        if exc.filename is not None:  # the file system refused a path: the user's to fix, named by the CLI
            raise
        raise PluginError(f"{_origin_of(augmenter)} failed in {method}(): {exc.__class__.__name__}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - third-party code may raise anything
        raise PluginError(f"{_origin_of(augmenter)} failed in {method}(): {exc.__class__.__name__}: {exc}") from exc


def check_samples(augmenter: Augmenter, out: Any, n: int, image_size: tuple[int, int]) -> Samples:
    """Accept ``Samples`` or a bare array; anything else, or a wrong shape or dtype, is the plugin's bug."""
    samples = out if isinstance(out, Samples) else Samples(np.asarray(out) if out is not None else None)
    images = samples.images
    expected = (n, *image_size, 3)
    if not isinstance(images, np.ndarray) or images.shape != expected or images.dtype != np.uint8:
        got = f"{images.shape} {images.dtype}" if isinstance(images, np.ndarray) else type(images).__name__
        raise PluginError(f"{_origin_of(augmenter)} returned {got} from generate(); expected {expected} uint8")
    parents = np.full(n, -1, np.int64) if samples.parents is None else np.asarray(samples.parents)
    shapes = [(n,), (n, 2)] if augmenter.two_parents else [(n,)]
    if parents.shape not in shapes or not np.issubdtype(parents.dtype, np.integer):
        expected = " or ".join(str(s) for s in shapes)
        raise PluginError(f"{_origin_of(augmenter)} returned parents of shape {parents.shape}; expected {expected} integers")
    return Samples(images, parents.astype(np.int64))


def generate_checked(augmenter: Augmenter, label: int, n: int, ctx: Context,
                     image_size: tuple[int, int]) -> Samples:
    """``augmenter.generate(label, n, ctx)``, with a crash or a malformed result blamed on the plugin."""
    out = call_plugin(augmenter, "generate", lambda: augmenter.generate(label, n, ctx))
    return check_samples(augmenter, out, n, image_size)


def fit_augmenter(augmenter: Augmenter, train: ImageDataset, ctx: Context) -> None:
    call_plugin(augmenter, "fit", lambda: augmenter.fit(train, ctx))


def augment_to_file(
    augmenter: Augmenter,
    train: ImageDataset,
    out: str | Path,
    amount: Amount | float | dict,
    ctx: Context,
    *,
    base: H5Dataset | None = None,
    fit: bool = True,
    overwrite: bool = False,
    provenance: dict | None = None,
    consistency=None,
) -> dict:
    """Fit ``augmenter`` on ``train`` and write its images to ``out``; returns a summary.

    With ``base`` (the dataset ``train`` was taken from) the output holds every row of ``base``
    first, unchanged, then the synthetic rows: a complete augmented dataset whose ``parent`` values
    are rows of that same file. Without it, the output is a shard of synthetic rows only.
    ``consistency`` (an :class:`augkit.filter.ConsistencyFilter`) keeps only images its classifier
    assigns to their intended class; the acceptance rate per class is recorded in the provenance.
    """
    amount = Amount.parse(amount)
    counts = amount.counts(train.class_counts(), train.class_names)
    if not augmenter.conditional and counts.any():
        from augkit.generator import cannot_choose_a_class

        raise UserError(cannot_choose_a_class(augmenter.name))
    empty = [train.class_names[k] for k in np.flatnonzero(train.class_counts() == 0)
             if amount.classes is None or train.class_names[k] in amount.classes]
    if empty and amount.fraction is None:
        raise UserError(f"class '{empty[0]}' has no training images to augment from")
    if fit:
        fit_augmenter(augmenter, train, ctx)
    else:
        call_plugin(augmenter, "prepare", lambda: augmenter.prepare(train, ctx))

    origins = list(base.origins) if base is not None else ["real"]
    origin_name = augmenter.name
    k = 2
    while origin_name in origins:  # augmenting an augmented file: keep each step apart
        origin_name, k = f"{augmenter.name}-{k}", k + 1
    origins.append(origin_name)
    origin_id = len(origins) - 1
    plugin = get_registry().plugin_of(augmenter)
    record = {
        "augmenter": augmenter.name,
        "plugin": None if plugin is None else {"name": plugin.name, "distribution": plugin.distribution,
                                               "version": plugin.version},
        "params": dataclasses.asdict(augmenter.params),
        "amount": amount.to_json(),
        "seed": ctx.seed,
        "train_rows": len(train),
        # which real rows the augmenter was given: the evaluator checks a shard against its arm's rows
        "train_rows_sha256": rows_fingerprint(train.rows),
        "source_fingerprint": getattr(getattr(train, "info", None), "fingerprint", None),
        "per_class": {name: int(c) for name, c in zip(train.class_names, counts)},
    }
    full_provenance = {**(provenance or {}), "augment": record}
    if base is not None:
        full_provenance["base"] = {"path": str(base.path), "fingerprint": base.info.fingerprint,
                                   "provenance": base.provenance}
    total = int(counts.sum()) + (len(base) if base is not None else 0)
    # a merged file keeps the base's fixed split (synthetic rows are training rows) and source files
    with_split = base is not None and base.split is not None
    with_source = base is not None and base.has_source
    with_parent2 = augmenter.two_parents or (base is not None and base.has_parent2)
    # the work in fixed chunks, each with its own seed (ctx.child(label, b)): the images do not depend on
    # how the chunks are shared out, so several ranks make the same file one process makes
    chunks = [(label, b, min(GENERATE_BATCH, int(n_label) - start))
              for label, n_label in enumerate(counts) for b, start in enumerate(range(0, int(n_label), GENERATE_BATCH))]

    def make(k: int, share: np.ndarray | None = None) -> Samples:
        label, b, n = chunks[k]
        if consistency is None:
            return generate_checked(augmenter, label, n, ctx.child(label, b), train.image_size)
        return _filtered(augmenter, consistency, label, n, ctx.child(label, b), train, int(counts[label]),
                         None if share is None else int(share[label]))

    def write(made: Callable[[int], Samples]) -> None:
        writer = DatasetWriter(out, class_names=train.class_names, image_size=train.image_size, origins=origins,
                               provenance=full_provenance, overwrite=overwrite, expected_rows=total,
                               with_split=with_split, with_source=with_source, with_parent2=with_parent2)
        with writer, track(f"Augmenting with {augmenter.name}", total) as advance:
            if base is not None:
                # the columns once (each property builds the whole view's column)
                labels, origin, parent, parent2 = base.labels, base.origin, base.parent, base.parent2
                split = base.split if with_split else None
                for images, pos in base.iter_batches(2048):
                    writer.append(images, labels[pos], origin=origin[pos], parent=parent[pos],
                                  parent2=parent2[pos], split=split[pos] if with_split else None,
                                  source=base.read_sources(np.arange(pos.start, pos.stop)) if with_source else None)
                    advance(len(images))
            with WriteBehind() as behind:  # batch k is written while batch k + 1 is generated
                for k, (label, _, n) in enumerate(chunks):
                    samples = made(k)
                    parent, parent2 = samples.parent_columns()
                    behind.submit(writer.append, samples.images, np.full(n, label), origin=origin_id,
                                  parent=parent, parent2=parent2,
                                  split=SPLIT_NAMES.index("train") if with_split else None,
                                  source=[""] * n if with_source else None)
                    advance(n)
            if consistency is not None:
                writer.provenance["filter"] = {"spec": dataclasses.asdict(consistency.spec),
                                               "classifier": consistency.val_metrics,
                                               "per_class": consistency.rates()}

    if distributed.world_size() > 1:
        _write_from_ranks(chunks, make, write, Path(out), train, consistency, overwrite)
    else:
        write(make)
    summary = {"path": Path(out), "origin": origin_name, "per_class": record["per_class"], "total": int(counts.sum())}
    if consistency is not None:
        summary["filter"] = consistency.rates()
    return summary


class WriteBehind:
    """Runs each write in one background thread while the caller makes the next batch, so generating
    and writing (checks, HDF5, SHA-256) overlap; on a GPU the generator then never waits for the disk.
    Writes run one at a time, in order; a failed write is raised at the next ``submit`` or on leaving
    the ``with`` block, which always waits for the write in flight (the writer closes after it)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="augkit-write")
        self._pending = None

    def submit(self, fn: Callable[..., Any], *args, **kwargs) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args, **kwargs)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:  # waits for the write in flight; on failure its own error is dropped, the first one kept
            self._pool.shutdown(wait=True)


def _write_from_ranks(chunks: list[tuple[int, int, int]], make: Callable[..., Samples],
                      write: Callable[[Callable[[int], Samples]], None], out: Path, train: ImageDataset,
                      consistency, overwrite: bool) -> None:
    """Generation under torchrun: each rank makes its share of the chunks into a part file; rank 0 then
    writes the output, taking the chunks from the parts in their fixed order, and removes the parts."""
    rank, world = distributed.rank(), distributed.world_size()
    owner = _share_out([n for _, _, n in chunks], world)
    refuse_existing(out, overwrite)  # the writer would refuse only after all the work
    parts = out.with_name(f".{out.name}.parts")
    distributed.run_on_main(lambda: parts.mkdir(exist_ok=True))
    mine = [k for k in range(len(chunks)) if owner[k] == rank]
    share = np.zeros(len(train.class_names), np.int64)  # this rank's images per class (filter budget)
    for k in mine:
        share[chunks[k][0]] += chunks[k][2]
    try:
        with distributed.fail_together():
            writer = DatasetWriter(parts / f"rank{rank}.h5", class_names=train.class_names,
                                   image_size=train.image_size, origins=["real", "part"], with_parent2=True,
                                   overwrite=True, expected_rows=int(share.sum()))
            with writer, track(f"Generating (rank {rank} of {world})", int(share.sum())) as advance:
                for k in mine:
                    samples = make(k, share)
                    parent, parent2 = samples.parent_columns()
                    writer.append(samples.images, np.full(len(samples.images), chunks[k][0]), origin=1,
                                  parent=parent, parent2=parent2)
                    advance(len(samples.images))
        if consistency is not None:  # the filter's counts over all ranks, for the provenance and summary
            counts = distributed.all_gather_object((consistency.tried.copy(), consistency.accepted.copy(),
                                                    consistency.outside.copy()))
            consistency.tried = np.sum([c[0] for c in counts], axis=0)
            consistency.accepted = np.sum([c[1] for c in counts], axis=0)
            consistency.outside = np.sum([c[2] for c in counts], axis=0)

        def merge() -> None:
            views = [H5Dataset(parts / f"rank{r}.h5") for r in range(world)]
            parents = [(v.parent, v.parent2) for v in views]  # once: each property builds the whole column
            where: dict[int, tuple[int, int]] = {}
            filled = [0] * world
            for k, (_, _, n) in enumerate(chunks):
                where[k] = (owner[k], filled[owner[k]])
                filled[owner[k]] += n

            def made(k: int) -> Samples:
                r, start = where[k]
                pos = np.arange(start, start + chunks[k][2])
                parent, parent2 = parents[r]
                return Samples(views[r].read(pos), np.stack([parent[pos], parent2[pos]], 1))

            write(made)

        distributed.run_on_main(merge)
    finally:
        if distributed.is_main():
            shutil.rmtree(parts, ignore_errors=True)


def _share_out(sizes: list[int], world: int) -> list[int]:
    """The rank that makes each chunk: largest chunks first, each to the least loaded rank (ties: the
    lowest), so ranks get about equal numbers of images; deterministic."""
    load = [0] * world
    owner = [0] * len(sizes)
    for k in sorted(range(len(sizes)), key=lambda k: (-sizes[k], k)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[k] = r
        load[r] += sizes[k]
    return owner


def _filtered(augmenter: Augmenter, consistency, label: int, n: int, ctx: Context, train: ImageDataset,
              class_total: int, share: int | None = None) -> Samples:
    """``n`` images of ``label`` that the consistency filter keeps, asking the augmenter for candidates
    in rounds sized by the acceptance rate so far; refuses once the class's candidate budget is spent
    (``share``: the class's images this rank makes, under torchrun; its budget is in proportion)."""
    import math

    name = train.class_names[label]
    budget = math.ceil(consistency.spec.max_tries * (class_total if share is None else share))
    images, parents, have, attempt = [], [], 0, 0
    while have < n:
        tried, accepted = int(consistency.tried[label]), int(consistency.accepted[label])
        rate = accepted / tried if tried else 1.0
        ask = min(GENERATE_BATCH, max(8, math.ceil((n - have) / max(rate, 0.05))))
        if tried + ask > budget:
            outside = int(consistency.outside[label])
            why = (f" ({outside} more were confident but outside the real class's manifold)"
                   if consistency.spec.manifold_k else "")
            raise UserError(
                f"filter: class '{name}': only {accepted} of {tried} generated images ({rate:.1%}) were kept as "
                f"'{name}' with p >= {consistency.spec.threshold}{why}; {class_total} are requested, more than "
                f"max_tries = {consistency.spec.max_tries} candidates per image can give. Lower the filter's "
                "threshold (or manifold_k) or the amount, or train the generator longer")
        batch = generate_checked(augmenter, label, ask, ctx.child(attempt), train.image_size)
        attempt += 1
        keep = consistency.accept(batch.images, label)
        images.append(batch.images[keep])
        parents.append(batch.parents[keep])
        have += int(keep.sum())
    return Samples(np.concatenate(images)[:n], np.concatenate(parents)[:n])


def training_rows(base, split_path: Path | None) -> tuple[ImageDataset, str]:
    """The rows augmenters may learn from, and in words which: a split's train part, the source's
    train folder, or all real rows."""
    from augkit.data.split import Split

    real = base.real()
    if split_path is not None:
        train = Split.load(split_path, fingerprint=base.info.fingerprint).apply(base, "train")
        return train, f"the training split ({len(train)} images)"
    if real.split is not None:
        train = real.where(split="train")
        return train, f"the {len(train)} images of the source's train folder"
    return real, f"all {len(real)} real images (no --split given)"
