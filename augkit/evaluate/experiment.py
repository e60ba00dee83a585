"""The evaluation experiment: every arm x every seed, same split and settings; then the comparison.

Each finished run is saved at once (``runs/<arm>-seed<k>.json``), so an interrupted evaluation
started again with the same output folder and settings continues where it stopped.

Images are read into memory when they fit the memory budget (:mod:`augkit.loading`), else streamed
from the HDF5 files. Under torchrun every rank trains each run together (DDP); rank 0 alone decides
which runs are already done and writes every file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from augkit import atomic, distributed
from augkit.cache import cache_key
from augkit.data.reader import H5Dataset
from augkit.data.schema import REAL
from augkit.data.split import Split, stratified_split
from augkit.loading import StackedImages, fits_in_memory, image_bytes
from augkit.errors import DataError, UserError
from augkit.evaluate.arms import BASELINE, Arm, class_mapping, synthetic_rows, versus_key, versus_pairs
from augkit.evaluate.metrics import arm_interval, compare_arms, correct_per_class
from augkit.evaluate.trainer import TrainConfig, train_run
from augkit.params import parse_params


#: what metrics.json keeps of each run (the per-run files in runs/ also hold the test predictions)
RUN_FIELDS = ("seed", "best_epoch", "best_step", "epochs_trained", "stopped", "under_trained", "metrics", "history",
              "train_seconds", "train_images_per_s", "train_counts", "optimizer_steps", "steps_per_epoch",
              "synthetic_until_step", "synthetic_rows")


def _real_only(ds, what: str):
    if (ds.origin != ds.origins.index(REAL)).any():
        raise DataError(f"{what}: holds synthetic rows; validation and test sets must be real images only")
    return ds


def evaluate(
    data: str | Path,
    arms: list[Arm | str],
    out_dir: str | Path,
    *,
    split: str | Path | Split | None = None,
    split_seed: int = 0,
    test: str | Path | None = None,
    seeds: int | list[int] = 1,
    config: TrainConfig | dict | None = None,
    device: str | None = None,
    n_boot: int = 1000,
    run_cache: str | Path | None = None,
    versus=(),
    say=None,
) -> dict:
    """Train and test one classifier per arm and seed; write metrics.json, report.md and plots to ``out_dir``.

    ``run_cache``: a folder of finished runs shared between evaluations. A run is reused from it when the
    settings, data, split, test set, seed and the arm's synthetic shards (by content fingerprint) all
    match, so e.g. a baseline trained for one recipe serves every other recipe on the same data.
    ``versus``: further comparisons, ``"ARM=REFERENCE"`` of two augmented arms, e.g.
    ``"classical+cgan=classical"``: in metrics.json under ``versus`` and in the report, paired by seed
    like the baseline comparisons and Holm-corrected per class among themselves.
    ``say``: receives one line per finished run (the runner's log).
    """
    cfg = parse_params(TrainConfig, config if not isinstance(config, TrainConfig) else dataclasses.asdict(config),
                       where="evaluate")
    from augkit.evaluate.models import create_classifier

    arms = [a if isinstance(a, Arm) else Arm.parse(a) for a in arms]
    if not arms:
        raise UserError("evaluate: give at least one arm (baseline is added automatically)")
    if BASELINE not in [a.name for a in arms]:
        arms.insert(0, Arm(BASELINE))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise UserError(f"evaluate: arm names must be unique, got {names}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise UserError("evaluate: seeds must be at least 1")
    for a in arms:
        a.check(len(seed_list))
    pairs = versus_pairs(versus, names)
    device = distributed.setup(device)  # under torchrun: this rank's device, in the process group
    out_dir = Path(out_dir)

    base = H5Dataset(data)
    create_classifier(cfg.model, len(base.class_names), cfg.pretrained)  # bad model or weights fail before any work
    if isinstance(split, Split):
        the_split = split
    elif split is not None:
        the_split = Split.load(split, fingerprint=base.info.fingerprint)
    else:
        fractions = {"train": 0.7, "val": 0.15, "test": 0.15} if test is None else {"train": 0.8, "val": 0.2}
        the_split = stratified_split(base, fractions, split_seed)
    train_real = the_split.apply(base, "train")
    present = np.unique(train_real.labels)
    if len(present) < 2:
        which = f"one class ('{base.class_names[present[0]]}')" if len(present) else "no images"
        raise DataError(f"{data}: the training split holds {which}; a classifier needs at least two classes")
    val = _real_only(the_split.apply(base, "val"), "validation split")
    if len(val) == 0:
        raise DataError("the split has no validation images; model selection needs them")
    held_out = np.concatenate([the_split.val, the_split.test])
    if test is not None:
        test_file = H5Dataset(test)
        if test_file.image_size != base.image_size:
            raise DataError(f"{test}: images are {test_file.image_size[0]}px, the data's are {base.image_size[0]}px")
        test_ds = test_file.real()
        test_labels = class_mapping(test_file.class_names, base.class_names, f"test set {test}")[test_ds.labels]
    else:
        test_ds = _real_only(the_split.apply(base, "test"), "test split")
        test_labels = test_ds.labels
    if len(test_ds) == 0:
        raise DataError("the test set is empty")

    # an arm's synthetic rows for each seed position: one set for all seeds, or one per seed
    synthetic: dict[str, list] = {}
    for a in arms:
        positions = range(len(seed_list)) if a.per_seed else [0]
        rows = [synthetic_rows(a, base, the_split.train, held_out, subset=the_split.is_train_subset, position=k)
                for k in positions]
        synthetic[a.name] = rows if a.per_seed else rows * len(seed_list)

    def prepare_folder() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "runs").mkdir(exist_ok=True)
        the_split.save(out_dir / "split.json")

    distributed.run_on_main(prepare_folder)

    settings = {"config": dataclasses.asdict(cfg), "data": base.info.fingerprint,
                "split": cache_key(the_split.to_json()),
                # by content, not by the path as typed: `--test x.h5` and a recipe's absolute path are one set
                "test": test_file.info.fingerprint if test is not None else None}
    settings.update(distributed.cache_key_fields())
    key = cache_key(settings)
    # settings that only say what to do with synthetic rows leave an arm without them as it was: its
    # runs keep their key, and a baseline is shared by evaluations that differ only there
    real_only = {**settings, "config": dataclasses.asdict(cfg.for_real_rows_only())}
    real_only_key = cache_key(real_only)

    h, w = base.image_size
    largest_arm = max(rows.count for a in arms for rows in synthetic[a.name]) * h * w * 3
    in_memory = fits_in_memory(image_bytes([train_real, val, test_ds]) + largest_arm)
    real_y = torch.from_numpy(train_real.labels)
    real_data: dict[str, object] = {}

    def real_arrays():
        """(training images, validation, test), read on the first run that trains: a rerun whose runs are
        all finished reads no images."""
        if not real_data:
            if in_memory:
                real_data.update(x=torch.from_numpy(train_real.read(np.arange(len(train_real)))),
                                 val=(torch.from_numpy(val.read(np.arange(len(val)))), val.labels),
                                 test=(torch.from_numpy(test_ds.read(np.arange(len(test_ds)))), test_labels))
            else:  # larger than the memory budget: every batch is read from the files as training needs it
                real_data.update(x=None, val=(val, val.labels), test=(test_ds, test_labels))
        return real_data["x"], real_data["val"], real_data["test"]

    def arm_data(extra) -> tuple:
        """An arm's training images (real + its synthetic rows) and labels."""
        real_x, _, _ = real_arrays()
        if in_memory:
            extra_x, extra_y = extra.read_all()
            x = real_x if extra_x is None else torch.cat([real_x, torch.from_numpy(extra_x)])
            return x, (real_y if extra_x is None else torch.cat([real_y, torch.from_numpy(extra_y)]))
        x = StackedImages([(train_real, train_real.labels), *zip(extra.views, extra.labels)])
        return x, torch.from_numpy(x.labels)
    num_classes = len(base.class_names)
    results: dict[str, list[dict]] = {a.name: [] for a in arms}
    reused: list[str] = []
    cache = Path(run_cache) if run_cache is not None else None
    for arm in arms:
        x = y = x_rows = None  # read when a seed of this arm has to train
        for position, seed in enumerate(seed_list):
            rows = synthetic[arm.name][position]
            # in training order: the rows of a.h5,b.h5 and of b.h5,a.h5 are drawn in different orders, so
            # their runs differ and must not stand in for each other
            shard_prints = [view.info.fingerprint for view in rows.views]
            arm_key = key if rows.count else real_only_key
            path = out_dir / "runs" / f"{arm.name}-seed{seed}.json"
            run_key = cache_key([arm_key, shard_prints, seed])
            cached = cache / f"{run_key}.json" if cache is not None else None

            def finished(path=path, cached=cached, arm=arm, run_key=run_key) -> tuple[dict, bool] | None:
                """A finished run in the output folder or the cache (rank 0 looks, every rank gets it)."""
                if path.exists():  # the same settings, seed and synthetic images (an arm may change them)
                    done = json.loads(path.read_text())
                    if done.get("run_key") == run_key:
                        return done, False
                if cached is not None and cached.is_file():
                    done = {**json.loads(cached.read_text()), "arm": arm.name, "reused_from": str(cached),
                            "run_key": run_key}
                    atomic.write_json(path, done)
                    return done, True
                return None

            found = distributed.run_on_main(finished)
            if found is not None:
                results[arm.name].append(found[0])
                if found[1]:
                    reused.append(f"{arm.name} seed {seed}")
                continue
            if x_rows is not rows:  # the seeds of an arm with per-seed shards each read their own
                x = y = None  # the previous seed's images go before the next are read (the memory budget)
                x, y = arm_data(rows)
                x_rows = rows
            _, val_t, test_t = real_arrays()
            run = train_run(x, y, val_t, test_t, num_classes, cfg, seed, device, label=arm.name,
                            epoch_size=len(real_y) if cfg.equal_steps else None, real_rows=len(real_y))
            run.update({"arm": arm.name, "run_key": run_key,
                        "train_counts": np.bincount(y.numpy(), minlength=num_classes).tolist(),
                        "synthetic_rows": rows.count})

            def save(run=run, path=path, cached=cached) -> None:
                atomic.write_json(path, run)
                if cached is not None:
                    try:
                        cache.mkdir(parents=True, exist_ok=True)
                        atomic.write_json(cached, run)
                    except OSError:
                        pass  # a cache that cannot be written costs time later, never a result

            distributed.run_on_main(save)
            results[arm.name].append(run)
            if say is not None:
                say(f"evaluate: {arm.name} seed {seed}: test weighted F1 {run['metrics']['weighted_f1']:.4f}, best "
                    f"check at epoch {run['best_epoch']:.1f} of {run['epochs_trained']:.1f} (ended by "
                    f"{'plateau' if run['stopped'] == 'plateau' else 'the cap'}"
                    f"{'; may be under-trained' if run['under_trained'] else ''}), {run['train_seconds']:.0f} s")

    comparison = correct_per_class({a.name: compare_arms(results[BASELINE], results[a.name], num_classes,
                                                         n_boot=n_boot) for a in arms if a.name != BASELINE})
    against = correct_per_class({versus_key(a, r): {"arm": a, "reference": r,
                                                    **compare_arms(results[r], results[a], num_classes, n_boot=n_boot)}
                                 for a, r in pairs}, unit="comparisons")
    summary = {
        "data": str(data), "fingerprint": base.info.fingerprint, "device": device, "seeds": seed_list,
        "class_names": list(base.class_names), "config": dataclasses.asdict(cfg),
        "split": {"method": the_split.method, "seed": the_split.seed, "fractions": the_split.fractions,
                  "sizes": {"train": len(train_real), "val": len(val), "test": len(test_ds)}},
        "test_source": str(test) if test else "split",
        "arms": {a.name: {"shards": [str(p) for p in a.shards],
                          **({"shards_per_seed": [[str(p) for p in s] for s in a.per_seed]} if a.per_seed else {}),
                          "synthetic_rows": int(round(np.mean([rows.count for rows in synthetic[a.name]]))),
                          "weighted_f1_ci": arm_interval(results[a.name], num_classes, n_boot=n_boot),
                          "runs": [{k: r.get(k) for k in RUN_FIELDS} for r in results[a.name]]} for a in arms},
        "deltas": comparison,
        "versus": against,
        "protocol": cfg.protocol,
        # runs whose best validation check was their last: still improving when they ended
        "under_trained": [f"{a.name} seed {r['seed']}" for a in arms for r in results[a.name]
                          if r.get("under_trained", True)],
        "reused_runs": reused,
    }
    from augkit.evaluate.report import write_report

    def report() -> None:
        atomic.write_json(out_dir / "metrics.json", summary)
        write_report(summary, out_dir)

    distributed.run_on_main(report)
    return summary
