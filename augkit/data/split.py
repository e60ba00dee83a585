"""Stratified, seeded train/val/test splits that can be saved and reproduced exactly.

A split is a small JSON file holding the row ids of each part, the seed and fractions that made it,
and the fingerprint of the dataset it belongs to, so it is never applied to another file by mistake.
Only real rows are split: synthetic rows belong in training and the evaluator adds them there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augkit import atomic
from augkit.data.reader import ImageDataset
from augkit.data.schema import SPLIT_NAMES
from augkit.errors import DataError

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` that sum exactly to ``total`` (Hamilton's method).

    Ties in the remainder go to the earlier entry, so the result is deterministic.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if total < 0 or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("largest_remainder needs total >= 0 and non-negative weights with a positive sum")
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    order = np.lexsort((np.arange(len(exact)), -(exact - counts)))
    counts[order[:short]] += 1
    return counts


def check_fractions(fractions: dict[str, float]) -> dict[str, float]:
    """Validate split fractions: names from SPLIT_NAMES, non-negative, train > 0, summing to 1."""
    unknown = sorted(set(fractions) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(f"split: unknown part(s) {unknown}; expected {list(SPLIT_NAMES)}")
    out = {name: float(fractions.get(name, 0.0)) for name in SPLIT_NAMES}
    if any(v < 0 for v in out.values()) or out["train"] <= 0:
        raise DataError(f"split: fractions must be >= 0 with train > 0, got {out}")
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise DataError(f"split: fractions must sum to 1, got {sum(out.values()):.4f} from {out}")
    return out


def stratified_indices(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Positions of each part, class by class, shuffled with ``seed``; sorted within a part."""
    fractions = check_fractions(fractions)
    labels = np.asarray(labels)
    wanted = [name for name in SPLIT_NAMES if fractions[name] > 0]
    weights = np.array([fractions[name] for name in wanted])
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < len(wanted):
            raise DataError(
                f"split: class {int(cls)} has {len(members)} image(s); splitting into {wanted} needs at least {len(wanted)}"
            )
        members = rng.permutation(members)
        # every wanted part gets at least one image of every class, the rest proportionally
        counts = 1 + largest_remainder(len(members) - len(wanted), weights)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for k, name in enumerate(wanted):
            parts[name].append(members[bounds[k]:bounds[k + 1]])
    return {name: np.sort(np.concatenate(chunks)) if chunks else np.array([], np.int64) for name, chunks in parts.items()}


def rows_fingerprint(rows: np.ndarray) -> str:
    """sha256 of a set of row indices: names "these training rows" in cache keys and provenance."""
    return hashlib.sha256(np.ascontiguousarray(np.sort(rows), dtype=np.int64).tobytes()).hexdigest()


def nested_subsets(rows: np.ndarray, labels: np.ndarray, fractions, seed: int) -> dict[float, np.ndarray]:
    """Nested, stratified subsets of ``rows`` (e.g. a split's training rows; ``labels`` in the same
    order): for each fraction, that share of every class (at least one image), sorted.

    Each class is shuffled once with ``seed`` and every fraction takes a prefix of that order, so a
    smaller fraction's rows are always inside a larger one's: the data-efficiency curve then adds
    images along one path instead of drawing unrelated sets."""
    rows, labels = np.asarray(rows), np.asarray(labels)
    for f in fractions:
        if not 0 < f <= 1:
            raise DataError(f"train fraction {f!r}: must be in (0, 1]")
    rng = np.random.default_rng(seed)
    order = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    return {f: np.sort(np.concatenate([rows[members[:max(1, round(f * len(members)))]]
                                       for members in order.values()])) for f in fractions}


@dataclass(frozen=True)
class Split:
    """Row ids of train/val/test of one dataset, with what made them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int | None
    fractions: dict[str, float] = field(default_factory=dict)
    method: str = "stratified"  # or "fixed": taken from the split folders the images came in
    fingerprint: str = ""

    def part(self, name: str) -> np.ndarray:
        if name not in SPLIT_NAMES:
            raise DataError(f"split: unknown part '{name}'; expected one of {list(SPLIT_NAMES)}")
        return getattr(self, name)

    def apply(self, ds: ImageDataset, name: str) -> ImageDataset:
        """The view of ``ds`` holding this part's rows."""
        rows = self.part(name)
        position = {int(r): p for p, r in enumerate(ds.rows)}
        missing = [int(r) for r in rows if int(r) not in position]
        if missing:
            raise DataError(f"split: {len(missing)} row(s) of part '{name}' are not in this dataset (e.g. row {missing[0]})")
        return ds.subset(np.array([position[int(r)] for r in rows], dtype=np.int64))

    @property
    def is_train_subset(self) -> bool:
        """Made by :meth:`with_train`: the training rows are a share of the split's."""
        return "training rows: nested" in self.method

    def with_train(self, rows: np.ndarray, fraction: float, seed: int) -> "Split":
        """This split with a nested subset of its training rows (validation and test unchanged)."""
        if not np.isin(rows, self.train).all():
            raise DataError("split: a training subset must hold training rows only")
        return dataclasses.replace(self, train=np.sort(np.asarray(rows, dtype=np.int64)),
                                   method=f"{self.method}; training rows: nested stratified {fraction:g} "
                                          f"(seed {seed})")

    def with_train_fractions(self, labels: np.ndarray, fractions, seed: int) -> dict[float, "Split"]:
        """This split for each training fraction: its nested stratified subset (:func:`nested_subsets`
        with ``seed``; ``labels`` of every row of the dataset), the split itself for 1.0. Recipes'
        ``train_fractions`` and ``augkit data split --train-fraction`` both come here, so they give
        the same rows."""
        labels = np.asarray(labels)
        subsets = nested_subsets(self.train, labels[self.train], fractions, seed)
        return {f: self if f == 1.0 else self.with_train(rows, f, seed) for f, rows in subsets.items()}

    def to_json(self) -> dict:
        return {
            "method": self.method, "seed": self.seed, "fractions": self.fractions, "fingerprint": self.fingerprint,
            **{name: self.part(name).tolist() for name in SPLIT_NAMES},
        }

    def save(self, path: str | Path) -> Path:
        return atomic.write_json(path, self.to_json(), indent=None)

    @classmethod
    def load(cls, path: str | Path, *, fingerprint: str | None = None) -> "Split":
        """Read a saved split; with ``fingerprint``, refuse one made for another dataset."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            split = cls(
                **{name: np.asarray(raw[name], dtype=np.int64) for name in SPLIT_NAMES},
                seed=raw["seed"], fractions=raw["fractions"], method=raw["method"], fingerprint=raw["fingerprint"],
            )
        except FileNotFoundError:
            raise DataError(f"{path}: no such split file") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not an augkit split file ({exc.__class__.__name__}: {exc})") from None
        if fingerprint is not None and split.fingerprint and split.fingerprint != fingerprint:
            raise DataError(f"{path}: this split was made for another dataset (fingerprints differ)")
        return split


def stratified_split(
    ds: ImageDataset,
    fractions: dict[str, float] | None = None,
    seed: int = 0,
    *,
    use_fixed: bool = True,
) -> Split:
    """Split the real rows of ``ds``: the source's own split folders when it has them, else stratified.

    With split folders, a part the folders lack (the common TRAIN/TEST layout has no validation folder)
    is carved from the train folder: stratified, seeded, its share of the train folder being its share
    in ``fractions`` relative to train's (70/15/15 by default: 15/85 of the train folder), and recorded
    in the split's ``method``."""
    real = ds.real()
    fingerprint = getattr(getattr(ds, "info", None), "fingerprint", "")
    if use_fixed and real.split is not None:
        codes = real.split
        if (codes < 0).any():
            raise DataError("split: some real rows have no fixed split; pass use_fixed=False to re-split")
        parts = {name: np.sort(real.rows[codes == k]) for k, name in enumerate(SPLIT_NAMES)}
        method = "fixed"
        missing = [name for name in ("val", "test") if len(parts[name]) == 0]
        if missing and len(parts["train"]):
            wanted = check_fractions(fractions or DEFAULT_FRACTIONS)
            share = {"train": wanted.get("train", 0.0), **{name: wanted.get(name, 0.0) for name in missing}}
            total_share = sum(share.values())
            carve = {name: v / total_share for name, v in share.items() if v > 0}
            in_train = np.flatnonzero(codes == SPLIT_NAMES.index("train"))
            positions = stratified_indices(real.labels[in_train], carve, seed)
            for name in carve:  # the train folder's rows, shared out; the folders' other parts stay
                parts[name] = np.sort(real.rows[in_train[positions[name]]])
            method = (f"fixed; {' and '.join(missing)} carved from the train folder "
                      f"(stratified, seed {seed}, {', '.join(f'{n} {carve[n]:.0%}' for n in missing if n in carve)})")
        sizes = {name: len(rows) for name, rows in parts.items()}
        total = sum(sizes.values())
        return Split(**parts, seed=seed if method != "fixed" else None,
                     fractions={k: v / total for k, v in sizes.items()}, method=method, fingerprint=fingerprint)
    fractions = check_fractions(fractions or DEFAULT_FRACTIONS)
    positions = stratified_indices(real.labels, fractions, seed)
    return Split(**{name: real.rows[pos] for name, pos in positions.items()}, seed=seed, fractions=fractions,
                 method="stratified", fingerprint=fingerprint)
