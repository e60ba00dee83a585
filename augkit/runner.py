"""Run a checked recipe: data -> split -> augment steps (train, generate) -> evaluate -> report.

Every run is a folder (StyleGAN2-ADA style), so a result can always be traced to what made it::

    recipe.toml        the recipe file as given       recipe.json   the checked recipe after --set
    state.json         finished stages, wall times, cache hits        run.log       one line per event
    data/dataset.h5    the imported data (an augkit .h5 source at the right size is used in place)
    split.json         the split every stage uses
    steps/<id>/        a step's training run (config, samples, losses, checkpoints) and augmenter/
    shards/<id>.h5     the synthetic images of a step; shards/<id>.png: a sample grid, a row per class
    evaluate/          the evaluator's metrics.json, report.md, plots and per-run results
    report.html        one self-contained page; report.md the same numbers as text

Stages are recorded as they finish; ``resume`` skips finished ones and continues a training stage from
its last checkpoint. Trained augmenters are cached by a hash of what determines them (augmenter,
version, parameters, seed, training rows and the keys of the steps they build on), so another recipe
needing the same generator copies it instead of training it again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from augkit import __version__, atomic, distributed
from augkit.augment import Context
from augkit.cache import CLASSIFIER_RUNS, cache_key, cache_root
from augkit.data.reader import H5Dataset, ImageDataset
from augkit.data.split import Split, rows_fingerprint, stratified_split
from augkit.errors import DataError, Paused, UserError
from augkit.params import budget_fields
from augkit.progress import also_log
from augkit.recipe import Recipe, StepSpec

if TYPE_CHECKING:
    from augkit.filter import ConsistencyFilter

STATE_SCHEMA = 1


def _copy_run(src: Path, dst: Path) -> None:
    """Copy a step's folder without its checkpoints (the trained augmenter/ is what is reused), atomically."""
    with atomic.folder(dst) as tmp:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("checkpoints", ".*.partial"))


class ModelCache:
    """Finished training runs by key: ``<root>/<key>/`` holds the run folder with ``augmenter/``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()

    def get(self, key: str) -> Path | None:
        entry = self.root / key
        return entry if (entry / "augmenter").is_dir() and (entry / "cache.json").is_file() else None

    def put(self, key: str, run_dir: Path, record: dict) -> Path | None:
        """Store a finished run; a cache that cannot be written is reported, never fatal."""
        entry = self.root / key
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _copy_run(run_dir, entry)
            atomic.write_json(entry / "cache.json", record)
        except OSError:
            return None
        return entry


class RunState:
    """state.json: which stages finished, how long they took, and what they produced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {"schema": STATE_SCHEMA, "stages": {}}

    def done(self, stage: str, **match) -> dict | None:
        entry = self.data["stages"].get(stage)
        if entry is None or any(entry.get(k) != v for k, v in match.items()):
            return None
        return entry

    def mark(self, stage: str, seconds: float, **info) -> None:
        self.data["stages"][stage] = {"seconds": round(seconds, 2), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                      **info}
        if distributed.is_main():  # under torchrun every rank keeps the record, rank 0 writes it
            atomic.write_json(self.path, self.data)


class Runner:
    """Carries out one recipe in one run folder. ``say`` receives one line per event (the CLI prints them)."""

    def __init__(self, recipe: Recipe, *, device: str | None = None, resume: bool = False,
                 cache: ModelCache | None = None, say: Callable[[str], None] | None = None,
                 command: str | None = None) -> None:
        self.recipe = recipe
        self.out = Path(recipe.out).absolute()
        self.command = command
        self.device = distributed.setup(device)  # under torchrun: joins the process group
        self.resume = resume
        self.cache = cache or ModelCache()
        self._say = say or (lambda line: None)
        self.state: RunState | None = None
        self.data_path: Path | None = None
        self.base: H5Dataset | None = None
        self.split: Split | None = None  # the split of the training fraction being run
        self.fraction = 1.0
        self.step_keys: dict[str, str] = {}
        self.stage = "start"

    # -- bookkeeping -------------------------------------------------------------------------------
    def say(self, line: str) -> None:
        if not distributed.is_main():
            return
        self._log(line)
        self._say(line)

    def _log(self, line: str) -> None:
        """One line of run.log (events, and the progress of long work)."""
        with open(self.out / "run.log", "a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {line}\n")

    def _prepare_folder(self) -> None:
        state_file = self.out / "state.json"
        resolved = self.out / "recipe.json"
        if self.resume:
            if not state_file.exists():
                raise UserError(f"{self.out}: no run to resume here (state.json is missing); run without --resume")
            try:
                before = json.loads(resolved.read_text())
            except (OSError, ValueError):
                raise UserError(f"{resolved}: missing or unreadable, so this run cannot be resumed; "
                                "start a new run with another --out") from None
            now = _without_budgets(json.loads(json.dumps(self.recipe.resolved)))
            before = _without_budgets(before)
            if before != now:  # a wall-time budget may change between pieces: the rest may not
                changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
                raise UserError(f"{self.out}: the recipe differs from the one this run started with "
                                f"(changed: {', '.join(changed)}); resume with the same recipe and --set values, "
                                "or start a new run with another --out")
        elif self.out.exists() and any(self.out.iterdir()):
            raise UserError(f"{self.out}: holds a run already; continue it with --resume, or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            shutil.copyfile(self.recipe.path, self.out / "recipe.toml")
            atomic.write_json(resolved, self.recipe.resolved)
        self.state = RunState(state_file)
        self.state.data.setdefault("commands", []).append(
            {"command": self.command or f"run_recipe({str(self.recipe.path)!r})", "device": self.device,
             "started": time.strftime("%Y-%m-%d %H:%M:%S"), "augkit": __version__})
        atomic.write_json(state_file, self.state.data)

    def _stage(self, name: str, fn: Callable[[], dict | None], **match) -> dict:
        """Run ``fn`` unless the stage already finished (with the same ``match`` values)."""
        done = self.state.done(name, **match)
        if done is not None:
            self.say(f"{name}: done before ({done['seconds']:.0f} s), skipped")
            return done
        self.stage = name
        t0 = time.perf_counter()
        info = distributed.broadcast_object(fn() or {})  # rank 0's record, on every rank
        seconds = time.perf_counter() - t0
        self.state.mark(name, seconds, **{**info, **match})
        self.say(f"{name}: finished in {seconds:.0f} s")
        return self.state.done(name)

    # -- stages ------------------------------------------------------------------------------------
    def _data(self) -> dict:
        spec = self.recipe.data
        source = Path(spec.source) if spec.source != "demo" else None
        if source is not None and source.suffix.lower() in (".h5", ".hdf5"):
            try:
                ds = H5Dataset(source)
            except DataError:
                ds = None
            if ds is not None and ds.image_size == (spec.image_size, spec.image_size):
                self.say(f"data: using {source} in place ({len(ds)} images, {spec.image_size}px)")
                return {"path": str(source), "fingerprint": ds.info.fingerprint, "in_place": True}
        from augkit.data.importers import import_source

        (self.out / "data").mkdir(exist_ok=True)
        target = self.out / "data" / "dataset.h5"
        report = import_source(spec.source, target, size=spec.image_size, n=spec.demo_images, seed=spec.seed,
                               overwrite=True)
        if report.skipped:
            self.say(f"data: {len(report.skipped)} unreadable file(s) skipped, e.g. {report.skipped[0][0]}")
        ds = H5Dataset(target)
        self.say(f"data: imported {spec.source} -> {target} ({len(ds)} images, {len(ds.class_names)} classes)")
        return {"path": str(target), "fingerprint": ds.info.fingerprint, "in_place": False}

    def _split(self) -> dict:
        spec = self.recipe.data
        # the source's split folders when it has them, a part they lack carved from the train folder by
        # the recipe's fractions; else stratified by them (Recipe.plan says so)
        split = stratified_split(self.base, spec.split or None, spec.seed)
        split.save(self.out / "split.json")
        self.say(f"split: train {len(split.train)}, val {len(split.val)}, test {len(split.test)} ({split.method})")
        return {"train": len(split.train), "val": len(split.val), "test": len(split.test)}

    def _train_rows(self) -> ImageDataset:
        return self.split.apply(self.base, "train")

    def folder_of(self, fraction: float) -> Path:
        """Where a training fraction's steps, shards and evaluation live: the run folder for the whole
        training split, ``fractions/f<fraction>/`` for a smaller one."""
        return self.out if fraction == 1.0 else self.out / "fractions" / f"f{fraction:g}"

    @property
    def here(self) -> Path:
        return self.folder_of(self.fraction)

    def _name(self, stage: str) -> str:
        return stage if self.fraction == 1.0 else f"{stage} @ {self.fraction:g}"

    def _step_key(self, step: StepSpec, cls) -> str:
        from augkit.registry import get_registry

        plugin = get_registry().plugin_of(cls)
        train_rows = rows_fingerprint(self.split.train)
        # a wall-time budget bounds a session, not the result: a run made in pieces has the key of one made at once
        budget = budget_fields(cls.Params)
        params = {k: (f"step:{self.step_keys[v]}" if k in step.refs else val)
                  for k, val in step.params.items() for v in [step.refs.get(k)] if k not in budget}
        record = {"augmenter": step.name, "plugin": None if plugin is None else [plugin.distribution, plugin.version],
                  "augkit": __version__, "params": params, "seed": step.seed,
                  "data": self.base.info.fingerprint, "train_rows": train_rows}
        record.update(distributed.cache_key_fields())
        return cache_key(record)

    def _context(self, step: StepSpec, workdir: Path | None, resume: bool = False) -> Context:
        return Context(seed=step.seed, device=self.device, workdir=workdir, resume=resume)

    def _run_step(self, step: StepSpec) -> None:
        from augkit.generate import fit_augmenter
        from augkit.registry import get_registry

        cls = get_registry().get(step.name).cls
        step_dir = self.here / "steps" / step.id
        params = {k: (str(self.here / "steps" / step.refs[k] / "augmenter") if k in step.refs else v)
                  for k, v in step.params.items()}
        augmenter = None
        if cls.trains:
            key = self._step_key(step, cls)
            self.step_keys[step.id] = key

            def prepare() -> tuple[Path | None, bool]:  # rank 0 looks at the cache and the folder
                cached = self.cache.get(key)
                if cached is not None:
                    _copy_run(cached, step_dir)
                    return cached, False
                resume = self.resume and any(step_dir.rglob("latest.pt"))
                if not resume and step_dir.exists():
                    shutil.rmtree(step_dir)  # an attempt that died before its first checkpoint
                step_dir.mkdir(parents=True, exist_ok=True)
                return None, resume

            def train() -> dict:
                nonlocal augmenter
                cached, resume = distributed.run_on_main(prepare)
                if cached is not None:
                    self.say(f"step {step.id}: reusing the trained '{step.name}' from the cache ({cached}); "
                             "delete that folder to train it again")
                    return {"key": key, "cache": "hit", "cache_path": str(cached)}
                augmenter = cls(params)
                train = self._train_rows()
                self.say(f"step {step.id}: {'resuming' if resume else 'training'} '{step.name}' on "
                         f"{len(train)} training images")
                fit_augmenter(augmenter, train, self._context(step, step_dir, resume))

                def keep() -> None:  # rank 0 alone writes the trained augmenter, its report and the cache
                    from augkit.quality.diversity import runs_collapse_check

                    with atomic.folder(step_dir / "augmenter") as tmp:
                        augmenter.save(tmp)
                    if runs_collapse_check(cls, min(train.image_size)):
                        self._diversity(step, augmenter, train, step_dir)
                    stored = self.cache.put(key, step_dir, {
                        "step": step.id, "augmenter": step.name, "recipe": str(self.recipe.path),
                        "params": step.params, "seed": step.seed, "created": time.strftime("%Y-%m-%d %H:%M:%S")})
                    if stored is None:
                        self.say(f"step {step.id}: could not write the cache at {self.cache.root} (not fatal)")

                distributed.run_on_main(keep)
                return {"key": key, "cache": "miss"}

            self._stage(self._name(f"train {step.id}"), train, key=key)
        if step.amount is None:
            return

        def generate() -> dict:
            nonlocal augmenter
            from augkit.generate import augment_to_file

            train = self._train_rows()
            if cls.trains:
                augmenter = augmenter or cls.load(step_dir / "augmenter")
            else:
                augmenter = cls(params)
                fit_augmenter(augmenter, train, self._context(step, None))
            (self.here / "shards").mkdir(parents=True, exist_ok=True)
            shard = self.here / "shards" / f"{step.id}.h5"
            consistency = self._filter(step.filter) if step.filter is not None else None
            summary = augment_to_file(augmenter, train, shard, step.amount, self._context(step, None), fit=False,
                                      overwrite=True, provenance={"recipe": self.recipe.resolved, "step": step.id},
                                      consistency=consistency)
            distributed.run_on_main(lambda: self._grid(shard))
            self.say(f"step {step.id}: wrote {summary['total']} images to {shard}")
            info = {"path": str(shard), "rows": summary["total"], "per_class": summary["per_class"]}
            if consistency is not None:
                info["filter"] = summary["filter"]
                rates = ", ".join(f"{k} {v['rate']:.0%}" for k, v in summary["filter"].items() if v["rate"] is not None)
                self.say(f"step {step.id}: filter acceptance per class: {rates}")
            return info

        self._stage(self._name(f"generate {step.id}"), generate)

    def _filter(self, spec) -> ConsistencyFilter:
        """The filter's classifier for ``spec``: trained once per run on the real training split."""
        from augkit.filter import ConsistencyFilter, train_filter

        record = spec.classifier_fields()
        key = cache_key(record)  # one classifier for filters that only use it differently
        folder = self.here / "filters" / key

        def train() -> dict:
            self.say(f"filter: training a {spec.model} classifier on the real training split ({spec.epochs} epochs)")
            trained = train_filter(spec, self._train_rows(), self.split.apply(self.base, "val"), self.device, folder,
                                   {"classifier": record})
            return {"path": str(folder), **trained.val_metrics}

        self._stage(self._name(f"filter {key}"), train)
        # the step's own threshold, tries and manifold test over the shared classifier; its own counts
        return ConsistencyFilter.ready(folder, self.device, spec, self._train_rows())

    def _diversity(self, step: StepSpec, augmenter, train: ImageDataset, step_dir: Path) -> None:
        """Per-class MS-SSIM of generated vs real images (steps/<id>/diversity.md): the collapse alarm."""
        from augkit.quality.diversity import write_diversity_report

        rows = write_diversity_report(augmenter, train, self._context(step, None), step_dir)
        collapsed = [r["class"] for r in rows if r["collapsed"]]
        if collapsed:
            self.say(f"step {step.id}: warning: generated images of {', '.join(collapsed)} are far less diverse "
                     f"than the real ones (mode collapse); see {step_dir / 'diversity.md'}")

    def _quality(self) -> None:
        """Generative quality of each step's images against the real training split (quality/<id>/), in
        the feature space of a classifier trained on that split (trained once, shared by the steps)."""
        from augkit.quality.pipeline import assess_to_folder, extractor_of

        spec = self.recipe.quality
        if distributed.world_size() > 1:  # its metrics and files are single-process code
            self.say("quality: skipped under torchrun; run `augkit quality --real ... --fake shards/<id>.h5` in one "
                     "process afterwards")
            return
        extractor = None
        for step in self.recipe.run_order():
            if step.amount is None:
                continue

            def run(step: StepSpec = step) -> dict:
                nonlocal extractor
                if extractor is None:
                    extractor = extractor_of(spec, self._train_rows(), self.split.apply(self.base, "val"),
                                             self.device, self.say)
                folder = self.out / "quality" / step.id
                result = assess_to_folder(self.data_path, self.out / "shards" / f"{step.id}.h5", folder, spec,
                                          split=self.split, device=self.device, extractor=extractor,
                                          title=f"Generative quality of {step.id}", say=self.say)
                collapsed = [r["class"] for r in result["classes"] if r.get("collapsed")]
                copies = result["overall"].get("copies", 0)
                if collapsed or copies:
                    self.say(f"quality {step.id}: warning: " + "; ".join(
                        ([f"collapsed: {', '.join(collapsed)}"] if collapsed else [])
                        + ([f"{copies} near copies of training images"] if copies else []))
                        + f"; see {folder / 'quality.md'}")
                return {"path": str(folder), "collapsed": collapsed, "copies": copies}

            self._stage(f"quality {step.id}", run)

    def _grid(self, shard: Path, per_class: int = 8) -> Path:
        """A sample grid of a shard: one row per class, the first ``per_class`` images of it."""
        from augkit.images import save_grid

        ds = H5Dataset(shard)
        h, w = ds.image_size
        rows = []
        for label in range(len(ds.class_names)):
            idx = np.flatnonzero(ds.labels == label)[:per_class]
            row = np.full((per_class, h, w, 3), 255, np.uint8)
            if len(idx):
                row[: len(idx)] = ds.read(idx)
            rows.append(row)
        path = shard.with_suffix(".png")
        save_grid(np.concatenate(rows), path, columns=per_class)
        return path

    def _evaluate(self) -> dict:
        from augkit.evaluate import evaluate

        spec = self.recipe.evaluate
        arms = [self._arm(name) for name in spec.arms]
        summary = evaluate(self.data_path, arms, self.here / "evaluate", split=self.split, test=self.recipe.data.test,
                           seeds=spec.seeds, config=spec.config, device=self.device, n_boot=spec.bootstrap,
                           run_cache=self.cache.root / CLASSIFIER_RUNS, versus=spec.versus, say=self.say)
        if summary["reused_runs"]:
            self.say(f"evaluate: reused finished classifier runs from the cache ({', '.join(summary['reused_runs'])}): "
                     "same data, split, settings, seed and synthetic images")
        headline = {name: float(np.mean([r["metrics"]["weighted_f1"] for r in arm["runs"]]))
                    for name, arm in summary["arms"].items()}
        return {"weighted_f1": headline, "reused_runs": summary["reused_runs"]}

    def _arm(self, name: str):
        """An arm's shards: a step of one run serves every seed; one of several runs gives seed k run k's."""
        from augkit.evaluate.arms import Arm
        from augkit.recipe import run_ids

        return Arm.from_parts(name, [[self.here / "shards" / f"{r}.h5" for r in run_ids(s, self.recipe.step(s).runs)]
                                     for s in self.recipe.arm_steps(name)])

    def _curve(self) -> dict:
        """The data-efficiency curve over the training fractions: evaluate/curve.json, curve.png, curve.md."""
        from augkit.evaluate.curve import write_curve

        folders = {f: self.folder_of(f) / "evaluate" for f in self.recipe.evaluate.train_fractions}

        def write() -> dict:
            curve = write_curve({f: json.loads((d / "metrics.json").read_text()) for f, d in folders.items()},
                                self.out / "evaluate")
            for line in curve["worth"].values():
                self.say(f"curve: {line}")
            return {"path": str(self.out / "evaluate" / "curve.json")}

        return distributed.run_on_main(write)

    def _report(self) -> dict:
        from augkit.report import write_run_report

        paths = write_run_report(self.out, self.recipe, self.state.data)
        return {"files": [str(p) for p in paths]}

    # -- the whole run -----------------------------------------------------------------------------
    def run(self) -> Path:
        """Carry out every stage not finished yet; returns the report's path (or the run folder)."""
        distributed.run_on_main(self._prepare_folder)
        if self.state is None:  # the other ranks under torchrun read what rank 0 prepared
            self.state = RunState(self.out / "state.json")
        self.say(f"run {self.recipe.name} in {self.out} on {self.device}"
                 + (" (resuming)" if self.resume else ""))
        with also_log(self._log if distributed.is_main() else lambda line: None):
            return self._run_stages()

    def _run_stages(self) -> Path:
        try:
            data = self._stage("data", lambda: distributed.run_on_main(self._data))
            self.data_path = Path(data["path"])
            self.base = H5Dataset(self.data_path)
            if self.base.info.fingerprint != data["fingerprint"]:
                raise DataError(f"{self.data_path}: changed since this run imported it (fingerprints differ); "
                                "start a new run")
            self._stage("split", lambda: distributed.run_on_main(self._split))
            full = Split.load(self.out / "split.json", fingerprint=self.base.info.fingerprint)
            fractions = self.recipe.evaluate.train_fractions if self.recipe.evaluate is not None else (1.0,)
            # the whole training split first: its verdict is the headline, the smaller fractions follow
            splits = full.with_train_fractions(self.base.labels, fractions, self.recipe.data.seed)
            for fraction in sorted(fractions, reverse=True):
                self.fraction = fraction
                self.split = splits[fraction]
                if fraction != 1.0:
                    self.say(f"training fraction {fraction:g}: {len(self.split.train)} of {len(full.train)} real "
                             "training images; every step and classifier of it learns from these only")
                for step in self.recipe.run_order():
                    self._run_step(step)
                if self.recipe.quality is not None and fraction == 1.0:
                    self._quality()
                if self.recipe.evaluate is not None:
                    self._stage(self._name("evaluate"), self._evaluate)
            self.fraction, self.split = 1.0, full
            if len(fractions) > 1:
                self._stage("data-efficiency curve", self._curve)
            self.stage = "report"
            t0 = time.perf_counter()
            report = distributed.run_on_main(self._report)
            self.state.mark("report", time.perf_counter() - t0, **report)
        except Paused as exc:
            raise Paused(f"stage '{self.stage}': {exc}: augkit run {self.recipe.path} --out {self.out} --resume "
                         "(and the same --set values; a budget may change)") from None
        except KeyboardInterrupt as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise KeyboardInterrupt(
                f"stopped in stage '{self.stage}'{detail}; continue with: augkit run {self.recipe.path} "
                f"--out {self.out} --resume (and the same --set values)") from None
        html = self.out / "report.html"
        return html if html.exists() else self.out


def _without_budgets(resolved: dict) -> dict:
    """A resolved recipe without the steps' wall-time budget parameters (see augkit.params.BUDGET)."""
    from augkit.registry import get_registry

    registry = get_registry()
    steps = []
    for step in resolved.get("augment") or []:
        budget = budget_fields(registry.get(step["name"]).cls.Params) if step["name"] in registry.names() else set()
        steps.append({**step, "params": {k: v for k, v in step["params"].items() if k not in budget}})
    return {**resolved, "augment": steps}


def run_recipe(recipe: Recipe, **kwargs) -> Path:
    """Library entry point: ``run_recipe(load_recipe("r.toml", ["evaluate.epochs=2"]))``."""
    return Runner(recipe, **kwargs).run()


__all__ = ["ModelCache", "Runner", "run_recipe"]
