"""Arms of an evaluation: the real training split plus, for augmented arms, synthetic rows from shards.

The only difference between arms is the synthetic rows added to training. Validation and test images
are real rows only (origin 0) and never change between arms; a synthetic row derived from a
validation or test image (its ``parent``) is refused, since it would leak that image into training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augkit.data.reader import H5Dataset, ImageDataset
from augkit.data.schema import REAL
from augkit.data.split import rows_fingerprint
from augkit.errors import DataError, UserError

BASELINE = "baseline"
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Arm:
    """An arm's name and the shard files whose synthetic rows it adds (none for the baseline).

    ``shards`` serve every seed. ``per_seed`` (optional) holds each training seed's whole list of shards
    instead, the k-th for the k-th seed: separate generator runs (or draws) of the same recipe, beside
    any shard all seeds share (then also in ``shards``). A seed then trains on its own synthetic images,
    so the seed-to-seed spread that the intervals resample holds the variation between generator runs
    too, not only training noise."""

    name: str
    shards: tuple[Path, ...] = field(default_factory=tuple)
    per_seed: tuple[tuple[Path, ...], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shards", tuple(Path(p) for p in self.shards))
        object.__setattr__(self, "per_seed", tuple(tuple(Path(p) for p in s) for s in self.per_seed))

    @classmethod
    def from_parts(cls, name: str, parts: list[list[Path]], where: str | None = None) -> "Arm":
        """An arm from its parts in the order given, each one shard for every seed or one per seed; a
        seed's shards keep that order, so its run is the run of an arm written with those shards.
        ``where`` opens an error (default: the arm's name)."""
        where = where or f"arm '{name}'"
        varying = {len(p) for p in parts if len(p) > 1}
        if len(varying) > 1:
            raise UserError(f"{where}: the per-seed parts name {' and '.join(map(str, sorted(varying)))} "
                            "shards; each needs one shard per seed")
        shared = tuple(p[0] for p in parts if len(p) == 1)
        if not varying:
            return cls(name, shared)
        n = varying.pop()
        return cls(name, shared, tuple(tuple(p[k] if len(p) > 1 else p[0] for p in parts) for k in range(n)))

    @classmethod
    def parse(cls, text: str) -> "Arm":
        """``baseline`` or ``name=a.h5[,b.h5...]`` (as on the command line); a part ``g0.h5|g1.h5|g2.h5``
        gives each seed its own shard, e.g. ``classical+cgan=classical.h5,g0.h5|g1.h5|g2.h5``."""
        text = text.strip()
        if text == BASELINE:
            return cls(BASELINE)
        if "=" not in text:
            raise UserError(f"--arm '{text}': expected 'baseline' or NAME=SHARD.h5[,SHARD2.h5]")
        name, files = text.split("=", 1)
        parts: list[list[Path]] = []
        for part in (p.strip() for p in files.split(",")):
            if not part:
                continue
            choices = [c.strip() for c in part.split("|")]
            if any(not c for c in choices):
                raise UserError(f"--arm '{text}': an empty shard name in '{part}' (one shard per seed: A.h5|B.h5|C.h5)")
            parts.append([Path(c) for c in choices])
        return cls.from_parts(name.strip(), parts, where=f"--arm '{text}'")

    def shards_of(self, position: int) -> tuple[Path, ...]:
        """The shards the seed at ``position`` (in the evaluation's seed list) trains on."""
        return self.per_seed[position] if self.per_seed else self.shards

    def check(self, seeds: int | None = None) -> None:
        """Refuse a bad name or shard list; with ``seeds``, also per-seed sets that do not match it."""
        if not _NAME.match(self.name):
            raise UserError(f"arm '{self.name}': names may hold letters, digits and _ . + - only")
        if self.name != BASELINE and not (self.shards or self.per_seed):
            raise UserError(f"arm '{self.name}': give at least one shard file (NAME=SHARD.h5)")
        if self.name == BASELINE and (self.shards or self.per_seed):
            raise UserError("arm 'baseline' is the real training split alone; give augmented arms another name")
        if seeds is not None and self.per_seed and len(self.per_seed) != seeds:
            raise UserError(f"arm '{self.name}': {len(self.per_seed)} shards separated by '|', one per seed, "
                            f"but {seeds} seed(s) train")


def versus_pairs(items, names: list[str], where: str = "--versus") -> list[tuple[str, str]]:
    """(arm, reference) of each ``ARM=REFERENCE`` in ``items``, checked against the evaluation's arm
    ``names`` before anything trains. The baseline is every arm's reference already, so a comparison
    names two augmented arms, e.g. classical+cgan=classical: what a generator adds to classical
    augmentation. ``where`` opens each error (the option, or a recipe's file, table and key)."""
    pairs: list[tuple[str, str]] = []
    for text in items:
        if text.count("=") != 1:
            raise UserError(f"{where} '{text}': expected ARM=REFERENCE, two arm names, e.g. classical+cgan=classical")
        arm, reference = (part.strip() for part in text.split("="))
        for name in (arm, reference):
            if name not in names:
                raise UserError(f"{where} '{text}': no arm named '{name}' (arms: {', '.join(names)})")
        if arm == reference:
            raise UserError(f"{where} '{text}': an arm compared with itself")
        if BASELINE in (arm, reference):
            raise UserError(f"{where} '{text}': every arm is compared with the baseline already; name two other arms")
        if (arm, reference) in pairs:
            raise UserError(f"{where} '{text}': given twice")
        pairs.append((arm, reference))
    return pairs


def versus_key(arm: str, reference: str) -> str:
    """The name of a comparison in metrics.json (arm names hold no spaces, so it splits back)."""
    return f"{arm} vs {reference}"


def class_mapping(source: tuple[str, ...], target: tuple[str, ...], what: str) -> np.ndarray:
    """Index map from ``source`` class names to ``target``'s, matched by name; any mismatch is an error."""
    missing = sorted(set(target) - set(source))
    extra = sorted(set(source) - set(target))
    if missing or extra:
        parts = ([f"lacks {missing}"] if missing else []) + ([f"has unknown {extra}"] if extra else [])
        raise DataError(f"{what}: class names differ from the training data ({'; '.join(parts)})")
    return np.array([target.index(name) for name in source], dtype=np.int64)


@dataclass
class SyntheticRows:
    """Synthetic rows of one arm: views into shard files and their labels in the base's class order."""

    views: list[ImageDataset]
    labels: list[np.ndarray]

    @property
    def count(self) -> int:
        return int(sum(len(v) for v in self.views))

    def read_all(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.views:
            return None, np.zeros(0, np.int64)
        images = np.concatenate([v.read(np.arange(len(v))) for v in self.views])
        return images, np.concatenate(self.labels)


def synthetic_rows(arm: Arm, base: H5Dataset, train_rows: np.ndarray, held_out_rows: np.ndarray,
                   subset: bool = False, position: int = 0) -> SyntheticRows:
    """Open the shards an arm's seed at ``position`` trains on and check them: sizes, class names,
    non-empty, and no leaked parents.

    ``subset``: ``train_rows`` is a share of the training split (the data-efficiency curve); a shard whose
    augmenter was given more real images than that is refused, since its images would carry them in."""
    arm.check()
    views, labels = [], []
    train_set = set(train_rows.tolist())
    held_out = set(held_out_rows.tolist())
    for path in arm.shards_of(position):
        shard = H5Dataset(path)
        what = f"arm '{arm.name}': {path}"
        if shard.image_size != base.image_size:
            raise DataError(f"{what}: images are {shard.image_size[0]}px, the data's are {base.image_size[0]}px")
        mapping = class_mapping(shard.class_names, base.class_names, what)
        synthetic = shard.subset(np.flatnonzero(shard.origin != shard.origins.index(REAL)))
        if len(synthetic) == 0:
            raise DataError(f"{what}: holds no synthetic rows (every row has origin 'real')")
        record = shard.provenance.get("augment", {})
        made_from_rows, made_from_hash = record.get("train_rows"), record.get("train_rows_sha256")
        if subset and isinstance(made_from_rows, int) and made_from_rows > len(train_rows):
            raise DataError(f"{what}: its augmenter was given {made_from_rows} real training images, more than the "
                            f"{len(train_rows)} this arm trains on; make the shard from the same training rows "
                            "(a generator must not see more real images than the classifier it is compared with)")
        if subset and made_from_hash and made_from_hash != rows_fingerprint(train_rows):
            raise DataError(f"{what}: its augmenter was given other real training images than the {len(train_rows)} "
                            "of this training fraction; make the shard from the fraction's rows")
        parents = np.concatenate([synthetic.parent, synthetic.parent2])
        derived = parents[parents >= 0]
        if len(derived):
            made_from = shard.provenance.get("base", {}).get("fingerprint") or shard.provenance.get(
                "augment", {}).get("source_fingerprint")
            if made_from and made_from != base.info.fingerprint:
                raise DataError(f"{what}: its images derive from another dataset (fingerprint {made_from[:12]}), "
                                f"not {base.path}")
            leaked = [int(p) for p in derived if int(p) in held_out]
            if leaked:
                raise DataError(
                    f"{what}: {len(leaked)} synthetic rows derive from validation/test images (e.g. row {leaked[0]}); "
                    "make the shard from the training split only (augkit augment --split SPLIT.json)")
            unknown = [int(p) for p in derived if int(p) not in train_set]
            if unknown:
                raise DataError(f"{what}: {len(unknown)} synthetic rows name parents that are not training rows "
                                f"of {base.path} (e.g. row {unknown[0]})")
        views.append(synthetic)
        labels.append(mapping[synthetic.labels])
    return SyntheticRows(views, labels)
