"""TOML recipes: one file describes a whole experiment (data, augment steps, evaluation, output).

A recipe is checked completely before any work starts. Every mistake is a ParamError naming the file,
the key (with its line where it can be found) and what was expected; unknown keys get a "did you mean".
``--set key=value`` overrides any key before the check, so the checked recipe is the one that runs.

    [data]
    source = "demo"                    # "demo", an image folder, a .npz or an augkit .h5
    image_size = 32
    split = { train = 0.7, val = 0.15, test = 0.15 }
    seed = 0

    [[augment]]
    name = "vanilla"                   # trained only: acgan below builds on it

    [[augment]]
    name = "acgan"
    amount = 0.5                       # +50% per class; { per_class = N }; { balance_to = "max" }
    params = { base = "vanilla" }      # a parameter that names a saved augmenter may name a step

    [evaluate]
    arms = ["baseline", "acgan"]       # "+" joins steps: "classical+acgan"
    # versus = ["classical+acgan=classical"]   # also compare two augmented arms
    model = "legacy_xception"
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augkit.augment import Amount
from augkit.cache import cache_key
from augkit.data.split import DEFAULT_FRACTIONS, check_fractions
from augkit.errors import AugkitError, ParamError, UserError
from augkit.evaluate.arms import BASELINE, versus_pairs
from augkit.evaluate.trainer import TrainConfig
from augkit.filter import FilterSpec
from augkit.params import AUGMENTER_REF, did_you_mean, parse_params
from augkit.quality.assess import QualitySpec

RECIPE_SCHEMA = 1
SECTIONS = ("recipe", "data", "augment", "evaluate", "quality", "output")
_STEP_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class DataSpec:
    source: str = field(default="demo", metadata={"help": "'demo', an image folder, a .npz or an augkit .h5"})
    image_size: int = field(default=64, metadata={"min": 8, "max": 1024, "help": "side in pixels after import"})
    demo_images: int = field(default=2000, metadata={"min": 16, "help": "images drawn when source = 'demo'"})
    seed: int = field(default=0, metadata={"min": 0, "help": "seed of the split (and of the demo images)"})
    test: str | None = field(default=None, metadata={"help": "external, fixed test set (.h5) instead of a test split"})
    split: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StepSpec:
    """One ``[[augment]]`` table: an augmenter, its parameters, and how many images it adds (if any)."""

    id: str
    name: str
    params: dict
    amount: Amount | None
    seed: int
    #: parameter name -> step id, for parameters that name another step's trained augmenter
    refs: dict = field(default_factory=dict)
    #: the class-consistency filter applied to this step's images (None: keep all)
    filter: FilterSpec | None = None
    #: how many times the step trains and draws, with seeds seed, seed + 1, ...: evaluation seed k
    #: trains on run k's images, so the verdict's intervals cover the variation between generator runs
    runs: int = 1

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.refs.values())))


@dataclass(frozen=True)
class EvaluateSpec:
    arms: tuple[str, ...]
    seeds: int
    bootstrap: int
    config: TrainConfig
    #: nested stratified shares of the real training split that every arm is trained on (the
    #: data-efficiency curve); 1.0 alone: the whole split
    train_fractions: tuple[float, ...] = (1.0,)
    #: further comparisons "ARM=REFERENCE" of two augmented arms (evaluate's ``versus``)
    versus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    data: DataSpec
    steps: tuple[StepSpec, ...]
    evaluate: EvaluateSpec | None
    out: Path
    resolved: dict  # the checked recipe as plain data (what a run folder records)
    #: the generative-quality checks run on each step's images (None: no [quality] table, or enabled = false)
    quality: QualitySpec | None = None

    def step(self, step_id: str) -> StepSpec:
        return next(s for s in self.steps if s.id == step_id)

    def order(self) -> list[StepSpec]:
        """Steps with every dependency before the steps that need it (recipe order otherwise)."""
        done: list[str] = []
        pending = list(self.steps)
        while pending:
            ready = next(s for s in pending if all(d in done for d in s.needs))
            done.append(ready.id)
            pending.remove(ready)
        return [self.step(i) for i in done]

    def run_order(self) -> list[StepSpec]:
        """:meth:`order` with a step of several runs as one step per run (id ``<id>-run<k>``, seed + k);
        run k of a step is built on run k of a base that has several runs too, else on its one run."""
        runs = []
        for step in self.order():
            for k, run_id in enumerate(run_ids(step.id, step.runs)):
                refs = {key: run_ids(target, self.step(target).runs)[k if self.step(target).runs > 1 else 0]
                        for key, target in step.refs.items()}
                runs.append(dataclasses.replace(step, id=run_id, seed=step.seed + k, refs=refs, runs=1))
        return runs

    def arm_steps(self, arm: str) -> list[str]:
        return [] if arm == BASELINE else arm.split("+")

    def fingerprint(self) -> str:
        return cache_key(self.resolved)

    def plan(self) -> list[str]:
        """What a run of this recipe does, line by line (`augkit run --check`): the plan that runs."""
        from augkit.cache import cache_root
        from augkit.quality.diversity import COLLAPSE_CHECK_IMAGES, runs_collapse_check
        from augkit.registry import get_registry

        registry = get_registry()
        fractions = ", ".join(f"{k} {v:g}" for k, v in (self.data.split or DEFAULT_FRACTIONS).items())
        lines = [f"recipe {self.name}: OK (fingerprint {self.fingerprint()})",
                 f"  data: {self.data.source} at {self.data.image_size}px; split: the source's split folders when "
                 f"it has them (a part they lack carved from the train folder by {fractions}), else stratified "
                 f"{fractions}; seed {self.data.seed}"]
        for step in self.order():
            what = step.amount.describe() if step.amount else "trains only"
            needs = f", after {', '.join(step.needs)}" if step.needs else ""
            # the runner's collapse alarm generates images of its own: a plan that runs says so
            check = (f"; when it trains, a collapse check ({COLLAPSE_CHECK_IMAGES} generated and real images "
                     f"per class, MS-SSIM)"
                     if runs_collapse_check(registry.get(step.name).cls, self.data.image_size) else "")
            runs = (f"; {step.runs} runs (seeds {step.seed}-{step.seed + step.runs - 1}, steps/{step.id}-run<k>)"
                    + (", evaluation seed k training on run k's images" if step.amount else "")
                    if step.runs > 1 else "")
            lines.append(f"  step {step.id}: {step.name}, {what}{needs}{check}{runs}")
        if self.quality:
            q = self.quality
            lines.append(f"  quality: {', '.join(q.checks)} of each step's images; features of {q.features} "
                         f"({q.epochs} epochs on the real training split)")
        if self.evaluate:
            e = self.evaluate
            lines.append(f"  evaluate: {e.config.model}, {e.seeds} seed(s), arms {list(e.arms)}"
                         + (f", versus {list(e.versus)}" if e.versus else ""))
            lines.append(f"    protocol: {e.config.protocol}")
            if len(e.train_fractions) > 1:
                lines.append(f"    data-efficiency curve: every arm (and every step) again on nested stratified "
                             f"fractions {list(e.train_fractions)} of the real training split")
        lines.append(f"  run folder: {self.out}; model cache: {cache_root()}")
        return lines


class _Where:
    """Builds error messages that name the file, the table and the key, with the key's line if found."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.base = path.parent.resolve()
        self.lines = text.splitlines()
        self.overridden: dict[tuple[str, str], str] = {}  # (table, key) -> the --set that gave its value

    def set_by(self, assignment: str) -> None:
        """Record that ``assignment`` (a --set) gave a key its value: errors about it name the --set."""
        parts = [p.strip() for p in assignment.split("=", 1)[0].split(".")]
        if parts[0] == "augment" and len(parts) >= 3:
            self.overridden[(f"augment {parts[1]}", parts[-1])] = assignment
        elif len(parts) >= 2:
            self.overridden[(parts[0], parts[1])] = assignment

    def _blocks(self, table: str) -> list[tuple[int, int]]:
        """Line ranges (0-based, end exclusive) of a table: [data], or one [[augment]] by its id."""
        section, _, step = table.partition(" ")
        heads = [(i, line.strip()) for i, line in enumerate(self.lines) if line.strip().startswith("[")]
        blocks = []
        for k, (i, head) in enumerate(heads):
            name = head.strip("[] ").split(".")[0].strip()
            if name != section or "." in head.strip("[] "):
                continue
            end = next((j for j, h in heads[k + 1:] if h.strip("[] ").split(".")[0].strip() != section
                        or h.startswith("[[")), len(self.lines))
            blocks.append((i, end))
        if step and section == "augment":
            mine = [b for b in blocks if any(re.match(rf"^\s*id\s*=\s*[\"']{re.escape(step)}[\"']", ln)
                                             for ln in self.lines[b[0]:b[1]])]
            mine = mine or [b for b in blocks if any(re.match(rf"^\s*name\s*=\s*[\"']{re.escape(step)}[\"']", ln)
                                                     for ln in self.lines[b[0]:b[1]])]
            return mine[:1]
        return blocks

    def line_of(self, key: str, table: str) -> int | None:
        """The 1-based line where ``key`` is set inside ``table``, when it can be found."""
        pattern = re.compile(rf"(^|[{{,])\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for start, end in self._blocks(table) or [(0, len(self.lines))]:
            for i in range(start, end):
                if pattern.search(self.lines[i].split("#", 1)[0]):
                    return i + 1
        return None

    def __call__(self, table: str, key: str | None = None) -> str:
        if key and (table, key.split(".")[-1]) in self.overridden:
            return f"--set {self.overridden[(table, key.split('.')[-1])]} (over {self.path}): [{table}]"
        line = self.line_of(key.split(".")[-1], table) if key else None
        return f"{self.path}" + (f", line {line}" if line else "") + f": [{table}]"


def parse_value(raw: str) -> Any:
    """A ``--set``/``--param`` value: any TOML value (numbers, true/false, [lists], "strings",
    {tables}); a bare word that is not TOML is taken as a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_set(raw: dict, assignment: str) -> None:
    """Apply one ``key.path=value`` override to the raw recipe. ``augment.<id or index>.key`` reaches
    into a step; missing tables are created."""
    if "=" not in assignment:
        raise ParamError(f"--set '{assignment}': expected key=value, e.g. evaluate.epochs=2")
    key, value_text = assignment.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise ParamError(f"--set '{assignment}': empty part in the key '{key}'")
    if parts[0] not in SECTIONS:
        raise ParamError(f"--set '{assignment}': unknown table '{parts[0]}'{did_you_mean(parts[0], SECTIONS)} "
                         f"(tables: {', '.join(SECTIONS)})")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):  # [[augment]]: by step id or by position
            ids = [str(s.get("id", s.get("name", ""))) for s in node if isinstance(s, dict)]
            if part in ids:
                node = node[ids.index(part)]
            elif part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise ParamError(f"--set '{assignment}': no augment step '{part}'{did_you_mean(part, ids)} "
                                 f"(steps: {', '.join(ids) or 'none'})")
            continue
        if not isinstance(node, dict):
            raise ParamError(f"--set '{assignment}': '{'.'.join(parts[:depth])}' is not a table")
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        raise ParamError(f"--set '{assignment}': '{'.'.join(parts[:-1])}' is not a table")
    node[parts[-1]] = parse_value(value_text.strip())


def _checked(cls: type, values: dict, w: _Where, table: str, prefix: str = "") -> Any:
    """parse_params with the file, table and line of the offending key in the message."""
    try:
        return parse_params(cls, values, where=f"{w.path}: [{table}]")
    except ParamError as exc:
        text = str(exc).split(": ", 2)[-1]
        key = re.search(r"parameter '([^']+)'", text)
        text = text.replace("parameter '", f"key '{prefix}", 1)
        raise ParamError(f"{w(table, key.group(1) if key else None)}: {text}") from None


def _table(value: Any, where: str, what: str) -> dict:
    if not isinstance(value, dict):
        raise ParamError(f"{where}: {what} must be a table, got {value!r}")
    return value


def _resolve_path(value: str | None, base: Path) -> str | None:
    if value is None or value == "demo":
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _parse_data(raw: dict, w: _Where) -> DataSpec:
    raw = dict(_table(raw, f"{w.path}: [data]", "[data]"))
    split = raw.pop("split", None)
    spec = _checked(DataSpec, raw, w, "data")
    if spec.source != "demo" and not Path(spec.source).exists():
        raise ParamError(f"{w('data', 'source')}: source '{spec.source}': no such file or folder "
                         "(give 'demo', an image folder, a .npz or a .h5)")
    if spec.test is not None and not Path(spec.test).exists():
        raise ParamError(f"{w('data', 'test')}: test '{spec.test}': no such file")
    spec = dataclasses.replace(spec, source=_resolve_path(spec.source, Path.cwd()),
                               test=_resolve_path(spec.test, Path.cwd()))
    default = {"train": 0.8, "val": 0.2} if spec.test else {"train": 0.7, "val": 0.15, "test": 0.15}
    if split is None:
        split = default
    split = _table(split, w("data", "split"), "split")
    unknown = set(split) - {"train", "val", "test"}
    if unknown:
        bad = sorted(unknown)[0]
        raise ParamError(f"{w('data', 'split')}: unknown split part '{bad}'{did_you_mean(bad, ['train', 'val', 'test'])}")
    try:
        fractions = check_fractions({k: split.get(k, 0.0) for k in ("train", "val", "test")})
    except AugkitError as exc:
        raise ParamError(f"{w('data', 'split')}: split: {exc}") from None
    if spec.test and fractions.get("test"):
        raise ParamError(f"{w('data', 'split')}: split has a test part but data.test gives a fixed test set; "
                         "drop one of them")
    return dataclasses.replace(spec, split={k: v for k, v in fractions.items() if v})


def _ref_fields(cls: type) -> dict[str, tuple[str, ...] | type]:
    """Parameters that take a saved augmenter: what each accepts (names, a base class, a test of the
    augmenter class, or () for any)."""
    return {f.name: (f.metadata[AUGMENTER_REF] if callable(f.metadata[AUGMENTER_REF])
                     else tuple(f.metadata[AUGMENTER_REF]))
            for f in dataclasses.fields(cls.Params) if AUGMENTER_REF in f.metadata}


def _class_test(accepted):
    return (lambda c: issubclass(c, accepted)) if isinstance(accepted, type) else accepted


def _accepts(accepted: tuple[str, ...] | type, name: str, registry) -> bool:
    if callable(accepted):
        return bool(_class_test(accepted)(registry.get(name).cls))
    return not accepted or name in accepted


def _describe_accepted(accepted: tuple[str, ...] | type, registry) -> str:
    if callable(accepted):
        names = [n for n in registry.names() if _class_test(accepted)(registry.get(n).cls)]
        return f"{getattr(accepted, 'described_as', accepted.__name__)} ({', '.join(names) or 'none installed'})"
    return " or ".join(repr(a) for a in accepted)


def run_ids(step_id: str, runs: int) -> list[str]:
    """The ids a step's runs go by (their folders, shards and stages): its own for one run,
    ``<id>-run<k>`` for several."""
    return [step_id] if runs == 1 else [f"{step_id}-run{k}" for k in range(runs)]


def _parse_steps(raw: Any, w: _Where, data_seed: int) -> tuple[StepSpec, ...]:
    from augkit.registry import get_registry

    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ParamError(f"{w.path}: 'augment' must be an array of tables ([[augment]]), got {type(raw).__name__}")
    registry = get_registry()
    steps: list[StepSpec] = []
    for i, entry in enumerate(raw):
        label = f"augment #{i + 1}"
        entry = dict(_table(entry, f"{w.path}: [[augment]] #{i + 1}", "each [[augment]]"))
        known = ("id", "name", "amount", "params", "seed", "filter", "runs")
        for key in entry:
            if key not in known:
                raise ParamError(f"{w(label, key)}: unknown key '{key}'{did_you_mean(key, known)} "
                                 f"(known: {', '.join(known)})")
        if "name" not in entry:
            raise ParamError(f"{w(label)}: missing 'name' (the augmenter, one of: {', '.join(registry.names())})")
        name = entry["name"]
        if not isinstance(name, str):
            raise ParamError(f"{w(label, 'name')}: name must be a string, got {name!r}")
        step_id = entry.get("id", name)
        if not isinstance(step_id, str) or not _STEP_ID.match(step_id):
            raise ParamError(f"{w(label, 'id')}: id must hold letters, digits, _ and - only, got {step_id!r}")
        label = f"augment {step_id}"
        if any(s.id == step_id for s in steps):
            raise ParamError(f"{w(label, 'id')}: two steps are called '{step_id}'; give one an id = \"...\"")
        if name not in registry.names():
            raise ParamError(f"{w(label, 'name')}: unknown augmenter '{name}'{did_you_mean(name, registry.names())} "
                             f"(installed: {', '.join(registry.names())}; see `augkit plugins`)")
        cls = registry.get(name).cls
        params = dict(_table(entry.get("params", {}), w(label, "params"), "params"))
        seed = entry.get("seed", data_seed)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ParamError(f"{w(label, 'seed')}: seed must be an integer >= 0, got {seed!r}")
        runs = entry.get("runs", 1)
        if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
            raise ParamError(f"{w(label, 'runs')}: runs must be an integer >= 1, got {runs!r}")
        amount = None
        if "amount" in entry:
            try:
                amount = Amount.parse(entry["amount"])
            except ParamError as exc:
                raise ParamError(f"{w(label, 'amount')}: {exc}") from None
            if not cls.conditional:
                raise ParamError(f"{w(label, 'amount')}: augmenter '{name}' cannot choose a class, so it cannot add "
                                 "images per class; drop 'amount' (a step that only trains, e.g. the base of acgan) "
                                 "or use a class-conditional augmenter")
        spec = None
        if "filter" in entry and entry["filter"] is not False:
            if amount is None:
                raise ParamError(f"{w(label, 'filter')}: a filter needs images to filter; this step has no 'amount'")
            raw_filter = {} if entry["filter"] is True else _table(entry["filter"], w(label, "filter"), "filter")
            spec = _checked(FilterSpec, raw_filter, w, label, "filter.")
            _check_model(spec.model, w, label, "model")
        steps.append(StepSpec(step_id, name, params, amount, seed, filter=spec, runs=runs))
    ids = [s.id for s in steps]
    for s in steps:
        clash = next((r for r in run_ids(s.id, s.runs) if r != s.id and r in ids), None)
        if clash:
            raise ParamError(f"{w(f'augment {s.id}', 'runs')}: its runs are called {s.id}-run<k>, and another step "
                             f"is called '{clash}'; rename that step")
    for i, s in enumerate(steps):  # parameters naming a saved augmenter: a step of this recipe, or a folder
        refs = {}
        for key in _ref_fields(registry.get(s.name).cls):
            value = s.params.get(key)
            if not isinstance(value, str):
                continue
            if value in ids:
                refs[key] = value
                continue
            folder = next((p for p in (w.base / value, Path(value)) if p.is_dir()), None)
            if folder is None:
                raise ParamError(f"{w(f'augment {s.id}', key)}: params.{key} = '{value}' is neither a step of this "
                                 f"recipe nor an existing folder{did_you_mean(value, ids)}")
            s.params[key] = str(folder.resolve())
        steps[i] = dataclasses.replace(s, refs=refs)
    _check_cycles(steps, w)
    for s in steps:
        accepted = _ref_fields(registry.get(s.name).cls)
        for key, target in s.refs.items():
            base = next(t for t in steps if t.id == target)
            kind = base.name
            if base.runs not in (1, s.runs):
                raise ParamError(f"{w(f'augment {s.id}', 'runs')}: params.{key} = '{target}' has {base.runs} runs "
                                 f"and this step {s.runs}; give both the same runs (run k on run k) or the base one")
            if not _accepts(accepted[key], kind, registry):
                raise ParamError(f"{w(f'augment {s.id}', key)}: params.{key} = '{target}' is a '{kind}' step; "
                                 f"expected {_describe_accepted(accepted[key], registry)}")
    for s in steps:  # parameters: checked by the augmenter's own dataclass (references stand in as paths)
        cls = registry.get(s.name).cls
        params = {k: ("<step>" if k in s.refs else v) for k, v in s.params.items()}
        _checked(cls.Params, params, w, f"augment {s.id}", "params.")
    return tuple(steps)


def _check_step_classes(steps: tuple[StepSpec, ...], data: DataSpec, w: _Where) -> None:
    """A step's ``amount.classes`` must name classes of the data: checked now, from the import's plan (the
    class names it will write), not when the step generates, perhaps hours of training later."""
    chosen = [s for s in steps if s.amount is not None and s.amount.classes is not None]
    if not chosen:
        return
    from augkit.data.importers import plan_import

    names = plan_import(data.source, data.image_size, n=data.demo_images, seed=data.seed).class_names
    for s in chosen:
        try:
            s.amount.counts([1] * len(names), names)
        except ParamError as exc:
            raise ParamError(f"{w(f'augment {s.id}', 'amount')}: {exc}") from None


def _check_cycles(steps: list[StepSpec], w: _Where) -> None:
    needs = {s.id: set(s.refs.values()) for s in steps}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 1:
            cycle = path[path.index(node):] + [node]
            raise ParamError(f"{w.path}: augment steps depend on each other in a cycle: {' -> '.join(cycle)}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in sorted(needs[node]):
            visit(dep, path + [node])
        state[node] = 2

    for s in steps:
        visit(s.id, [])


def _parse_evaluate(raw: Any, w: _Where, steps: tuple[StepSpec, ...]) -> EvaluateSpec:
    raw = dict(_table(raw, f"{w.path}: [evaluate]", "[evaluate]"))
    producing = [s.id for s in steps if s.amount is not None]
    arms = raw.pop("arms", [BASELINE] + producing)
    seeds = raw.pop("seeds", 1)
    bootstrap = raw.pop("bootstrap", 1000)
    if not isinstance(arms, list) or not all(isinstance(a, str) for a in arms) or not arms:
        raise ParamError(f"{w('evaluate', 'arms')}: arms must be a list of names like [\"baseline\", \"acgan\", "
                         f"\"classical+acgan\"], got {arms!r}")
    for arm in arms:
        if arm == BASELINE:
            continue
        for part in arm.split("+"):
            if part not in producing:
                why = ("is a step without 'amount' (it makes no images)" if part in [s.id for s in steps]
                       else f"is not a step of this recipe{did_you_mean(part, producing)}")
                raise ParamError(f"{w('evaluate', 'arms')}: arm '{arm}': '{part}' {why}; "
                                 f"steps that add images: {', '.join(producing) or 'none'}")
    if len(set(arms)) != len(arms):
        raise ParamError(f"{w('evaluate', 'arms')}: arms are listed twice: {arms}")
    fractions = raw.pop("train_fractions", [1.0])
    versus = raw.pop("versus", [])
    if (not isinstance(fractions, list) or not fractions
            or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1 for f in fractions)):
        raise ParamError(f"{w('evaluate', 'train_fractions')}: train_fractions must be a list of numbers in (0, 1], "
                         f"e.g. [0.1, 0.25, 1.0], got {fractions!r}")
    if len(set(fractions)) != len(fractions) or 1.0 not in fractions:
        raise ParamError(f"{w('evaluate', 'train_fractions')}: train_fractions must list each fraction once and "
                         f"include 1.0 (the whole training split, where the headline verdict comes from), "
                         f"got {fractions!r}")
    for key, value, minimum in (("seeds", seeds, 1), ("bootstrap", bootstrap, 100)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ParamError(f"{w('evaluate', key)}: {key} must be an integer >= {minimum}, got {value!r}")
    for step in steps:  # every step that draws images several times draws one set per evaluation seed
        if step.amount is not None and step.runs > 1 and step.runs != seeds:
            raise ParamError(f"{w(f'augment {step.id}', 'runs')}: runs = {step.runs}, one per evaluation seed (seed "
                             f"k trains on run k's images), but evaluate.seeds = {seeds}")
    config = _checked(TrainConfig, raw, w, "evaluate")
    _check_model(config.model, w, "evaluate", "model")
    if config.pretrained is not None and not Path(config.pretrained).exists():
        raise ParamError(f"{w('evaluate', 'pretrained')}: pretrained '{config.pretrained}': no such file "
                         "(a local checkpoint; weights are never downloaded)")
    if BASELINE not in arms:
        arms = [BASELINE] + arms
    if not isinstance(versus, list) or not all(isinstance(v, str) for v in versus):
        raise ParamError(f"{w('evaluate', 'versus')}: versus must be a list like [\"classical+acgan=classical\"], "
                         f"got {versus!r}")
    try:
        versus_pairs(versus, arms, where=f"{w('evaluate', 'versus')}: versus")
    except UserError as e:
        raise ParamError(str(e)) from None
    return EvaluateSpec(tuple(arms), seeds, bootstrap, config, tuple(sorted(float(f) for f in fractions)),
                        tuple(versus))


def _check_model(name: str, w: _Where, table: str, key: str) -> None:
    """A classifier name the run will need, checked now (an unknown one would fail after minutes of work)."""
    from augkit.errors import UserError
    from augkit.evaluate.models import check_model_name

    try:
        check_model_name(name)
    except UserError as exc:
        raise ParamError(f"{w(table, key)}: {key} = '{name}': {exc}") from None


def _parse_quality(raw: Any, w: _Where) -> tuple[QualitySpec, bool]:
    """The ``[quality]`` table: ``enabled`` (default true) and the keys of QualitySpec."""
    raw = dict(_table(raw, f"{w.path}: [quality]", "[quality]"))
    enabled = raw.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise ParamError(f"{w('quality', 'enabled')}: enabled must be true or false, got {enabled!r}")
    spec = _checked(QualitySpec, raw, w, "quality")
    features = Path(spec.features).expanduser()
    if "/" in spec.features or spec.features.startswith("."):  # a saved extractor folder
        if not features.is_dir() and not (w.base / features).is_dir():
            raise ParamError(f"{w('quality', 'features')}: features = '{spec.features}': no such extractor folder")
    else:  # a model to train
        _check_model(spec.features, w, "quality", "features")
    for key in ("cas_model", "two_sample_model"):
        _check_model(getattr(spec, key), w, "quality", key)
    return spec, enabled


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = (), out: str | Path | None = None) -> Recipe:
    """Read, override (``key=value`` strings) and check a recipe; raises ParamError before any work."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: no such recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ParamError(f"{path}, line {line}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); save the recipe "
                         "as UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParamError(f"{path}: not valid TOML: {exc}") from None
    w = _Where(path, text)
    for key in raw:
        if key not in SECTIONS:
            raise ParamError(f"{w(key)}: unknown table{did_you_mean(key, SECTIONS)} (tables: {', '.join(SECTIONS)})")
    base = path.parent.resolve()
    # paths written in the file are relative to the file; paths given with --set to the current folder
    data_raw = dict(_table(raw.get("data", {}), f"{path}: [data]", "[data]"))
    for key in ("source", "test"):
        if isinstance(data_raw.get(key), str):
            data_raw[key] = _resolve_path(data_raw[key], base)
    raw = copy.deepcopy({**raw, "data": data_raw})
    for assignment in overrides:
        apply_set(raw, assignment)
        w.set_by(assignment)
    meta = dict(_table(raw.get("recipe", {}), f"{path}: [recipe]", "[recipe]"))
    for key in meta:
        if key not in ("name", "description"):
            raise ParamError(f"{w('recipe', key)}: unknown key '{key}'{did_you_mean(key, ['name', 'description'])}")
    name = meta.get("name", path.stem)
    if not isinstance(name, str) or not _STEP_ID.match(name):
        raise ParamError(f"{w('recipe', 'name')}: name must hold letters, digits, _ and - only, got {name!r}")
    data = _parse_data(raw.get("data", {}), w)
    steps = _parse_steps(raw.get("augment"), w, data.seed)
    _check_step_classes(steps, data, w)
    evaluate = _parse_evaluate(raw["evaluate"], w, steps) if "evaluate" in raw else None
    quality, quality_on = _parse_quality(raw["quality"], w) if "quality" in raw else (None, False)
    output = dict(_table(raw.get("output", {}), f"{path}: [output]", "[output]"))
    for key in output:
        if key != "dir":
            raise ParamError(f"{w('output', key)}: unknown key '{key}'{did_you_mean(key, ['dir'])}")
    out_dir = Path(out) if out is not None else Path(output.get("dir", f"runs/{name}"))
    resolved = {
        "schema": RECIPE_SCHEMA, "name": name, "description": meta.get("description", ""),
        "data": _plain(data),
        # runs only when there are several: recipes written before the key keep their fingerprint
        "augment": [{"id": s.id, "name": s.name, "params": s.params, "seed": s.seed,
                     "amount": None if s.amount is None else s.amount.to_json(),
                     "filter": None if s.filter is None else _plain(s.filter),
                     **({"runs": s.runs} if s.runs > 1 else {})} for s in steps],
        "evaluate": None if evaluate is None else {"arms": list(evaluate.arms), "seeds": evaluate.seeds,
                                                   "bootstrap": evaluate.bootstrap,
                                                   "train_fractions": list(evaluate.train_fractions),
                                                   **_plain(evaluate.config)},
    }
    if quality is not None:  # only recipes with the table record it: older runs keep their fingerprint
        resolved["quality"] = {"enabled": quality_on, **_plain(quality)}
    return Recipe(path, name, data, steps, evaluate, out_dir, resolved, quality if quality_on else None)
