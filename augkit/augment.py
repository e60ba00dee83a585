"""The Augmenter interface every augmenter implements, built-in or third-party.

An augmenter learns from the real training images (``fit``), then makes ``n`` new images of a class
(``generate``). It never writes files itself: augkit's driver (:mod:`augkit.generate`) decides how
many images each class gets, calls ``generate`` in batches, checks what comes back and streams it into
an HDF5 dataset. So a plugin author writes two methods and a parameter dataclass, nothing else.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from augkit.data.reader import ImageDataset
from augkit.distributed import default_device
from augkit.errors import DataError, ParamError, UserError
from augkit.params import did_you_mean, parse_params


@dataclass
class Context:
    """What an augmenter gets from its caller: a seed, a device, a folder for its own files (run folders,
    checkpoints) and whether to resume the training found there.

    ``rng`` is a numpy Generator derived from ``seed``; ``child(*keys)`` gives an independent,
    reproducible Context for a sub-task (a class, a batch), so results do not depend on call order.
    """

    seed: int = 0
    device: str = field(default_factory=default_device)
    workdir: Path | None = None
    resume: bool = False
    keys: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng([self.seed, *self.keys])

    def child(self, *keys: int) -> "Context":
        return dataclasses.replace(self, keys=(*self.keys, *keys))

    def torch_generator(self):
        """A torch.Generator seeded from this context (on the CPU: safe to use anywhere)."""
        import torch

        return torch.Generator().manual_seed(int(self.rng.integers(2**63 - 1)))


@dataclass
class Samples:
    """What ``generate`` returns: images and, for each, the row of the real image it came from.

    ``parents`` holds ``ImageDataset.rows`` values of the training set given to ``fit``, or -1 for
    images made from noise (GAN samples). ``None`` means all -1. Augmenters that declare
    ``two_parents = True`` (an image between two real ones) may give shape (n, 2): both are recorded.
    """

    images: np.ndarray
    parents: np.ndarray | None = None

    def parent_columns(self) -> tuple[np.ndarray, np.ndarray | int]:
        """The writer's ``parent`` and ``parent2`` columns (``parent2`` is -1 for one-parent images);
        call on checked samples, whose parents are integers."""
        parents = np.asarray(self.parents)
        if parents.ndim == 1:
            return parents, -1
        return parents[:, 0], (parents[:, 1] if parents.shape[1] == 2 else -1)


@dataclass(frozen=True)
class NoParams:
    """For augmenters without parameters."""


class Augmenter(abc.ABC):
    """Base class of every augmenter. Subclasses set ``name``, ``Params`` and implement ``generate``."""

    #: registry key, used in recipes and on the command line
    name: ClassVar[str] = ""
    #: frozen dataclass of typed parameters (see augkit.params)
    Params: ClassVar[type] = NoParams
    #: False for augmenters that cannot choose a class (an unconditional GAN)
    conditional: ClassVar[bool] = True
    #: one line for `augkit plugins`
    summary: ClassVar[str] = ""
    #: True when fit() is real training whose result save() keeps (GANs): a loaded one is not refitted
    trains: ClassVar[bool] = False
    #: True when generate() may name two parents per image (Samples.parents of shape (n, 2))
    two_parents: ClassVar[bool] = False

    def __init__(self, params: Any = None):
        self.params = parse_params(self.Params, params, where=f"augmenter '{self.name}'")

    # -- the interface ---------------------------------------------------------------------
    def fit(self, train: ImageDataset, ctx: Context) -> None:  # noqa: B027 - optional by design
        """Learn from the real training images. Classical augmenters just keep a reference."""

    def prepare(self, train: ImageDataset, ctx: Context) -> None:  # noqa: B027 - optional by design
        """Called instead of ``fit`` when a trained augmenter was loaded: hand it the training images it
        draws parents from (latent augmenters). Nothing is learnt here."""

    @abc.abstractmethod
    def generate(self, label: int, n: int, ctx: Context) -> Samples | np.ndarray:
        """``n`` new images of class ``label``: (n, H, W, 3) uint8, deterministic given ``ctx``."""

    def interpolate(self, steps: int, ctx: Context, images: np.ndarray | None = None,
                    label: int | None = None) -> np.ndarray:
        """``steps`` images between two points of a latent space (`augkit interpolate`): generators
        (augkit.generator) and the latent augmenters have one; others say so."""
        raise UserError(f"augmenter '{self.name}' cannot interpolate: it has no latent space; use a generator "
                        "(augkit.generator) or latent_interp/latent_perturb")

    def save(self, path: str | Path) -> Path:
        """Save what ``load`` needs into a folder: parameters here; subclasses add their weights."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"augmenter": self.name, "params": dataclasses.asdict(self.params)}
        (path / "augmenter.json").write_text(json.dumps(meta, indent=2))
        return path

    @staticmethod
    def saved_meta(path: str | Path) -> dict:
        """The augmenter.json of a saved augmenter folder: its name and parameters."""
        meta_path = Path(path) / "augmenter.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise DataError(f"{meta_path}: no saved augmenter here") from None
        except ValueError as exc:
            raise DataError(f"{meta_path}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("augmenter"), str):
            raise DataError(f"{meta_path}: names no augmenter; not a saved augmenter folder")
        return meta

    @classmethod
    def load(cls, path: str | Path) -> "Augmenter":
        """Rebuild a saved augmenter (subclasses with weights extend this)."""
        meta_path = Path(path) / "augmenter.json"
        meta = cls.saved_meta(path)
        if meta.get("augmenter") != cls.name:
            raise DataError(f"{meta_path}: holds augmenter '{meta.get('augmenter')}', not '{cls.name}'")
        return cls(meta.get("params", {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


# -- how many images per class -----------------------------------------------------------------
@dataclass(frozen=True)
class Amount:
    """How many synthetic images each class gets.

    Exactly one of: ``fraction`` (0.5 = +50% of each class, the total rounded once and shared by
    largest remainder so it is exact), ``per_class`` (the same count for every class), or
    ``balance_to`` ("max" or a number: top every class up to that size, rare classes get most).
    ``classes``: only these classes (by name) get images, e.g. the rare ones, or those whose synthetic
    images a measurement says carry their class; a fraction is then of those classes' images.
    """

    fraction: float | None = None
    per_class: int | None = None
    balance_to: int | str | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("fraction", "per_class", "balance_to") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ParamError(f"amount: give exactly one of fraction, per_class, balance_to (got {given or 'none'})")
        if self.fraction is not None and not (isinstance(self.fraction, (int, float)) and self.fraction > 0):
            raise ParamError(f"amount: fraction must be a number > 0, got {self.fraction!r}")
        if self.per_class is not None and not (isinstance(self.per_class, int) and self.per_class > 0):
            raise ParamError(f"amount: per_class must be an integer > 0, got {self.per_class!r}")
        b = self.balance_to
        if b is not None and b != "max" and not (isinstance(b, int) and not isinstance(b, bool) and b > 0):
            raise ParamError(f"amount: balance_to must be \"max\" or an integer > 0, got {b!r}")
        if self.classes is not None:
            c = self.classes
            if (isinstance(c, str) or not isinstance(c, (list, tuple)) or not c
                    or not all(isinstance(name, str) and name for name in c)):
                raise ParamError(f"amount: classes must be a non-empty list of class names, got {c!r}")
            if len(set(c)) != len(c):
                raise ParamError(f"amount: classes names a class twice: {list(c)}")
            object.__setattr__(self, "classes", tuple(c))  # a list from TOML: hashable and one form

    @classmethod
    def parse(cls, value: Any) -> "Amount":
        """From a recipe or CLI value: ``0.5``, ``{per_class = 500}``, ``{balance_to = "max"}``."""
        if isinstance(value, Amount):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(fraction=float(value))
        if isinstance(value, dict):
            unknown = set(value) - {"fraction", "per_class", "balance_to", "classes"}
            if unknown:
                raise ParamError(f"amount: unknown key(s) {sorted(unknown)}; expected fraction, per_class or "
                                 "balance_to, and optionally classes")
            return cls(**value)
        raise ParamError(f"amount: expected a fraction like 0.5, {{per_class = N}} or {{balance_to = \"max\"}}, got {value!r}")

    def counts(self, class_counts: np.ndarray, class_names: Sequence[str] | None = None) -> np.ndarray:
        """Synthetic images per class, given the real images per class (and, with ``classes``, the
        dataset's class names, which must hold every name asked for)."""
        from augkit.data.split import largest_remainder

        class_counts = np.asarray(class_counts, dtype=np.int64)
        chosen = np.ones(len(class_counts), bool)
        if self.classes is not None:
            if class_names is None:
                raise TypeError("Amount.counts: classes need the dataset's class names")
            for name in self.classes:
                if name not in class_names:
                    raise ParamError(f"amount: the data has no class '{name}'{did_you_mean(name, class_names)} "
                                     f"(its classes: {', '.join(class_names)})")
            chosen = np.isin(np.asarray(class_names), self.classes)
        # "balance to max" means the largest class of all, chosen or not
        target = int(class_counts.max()) if self.balance_to == "max" else self.balance_to
        class_counts = np.where(chosen, class_counts, 0)
        if self.fraction is not None:
            total = int(np.floor(self.fraction * class_counts.sum() + 0.5))
            return largest_remainder(total, class_counts)
        if self.per_class is not None:
            return np.where(class_counts > 0, self.per_class, 0).astype(np.int64)
        return np.where(class_counts > 0, np.maximum(int(target) - class_counts, 0), 0).astype(np.int64)

    def describe(self) -> str:
        if self.fraction is not None:
            how = f"+{self.fraction:.0%} per class"
        elif self.per_class is not None:
            how = f"{self.per_class} per class"
        else:
            how = f"balance to {self.balance_to}"
        return how if self.classes is None else f"{how}, only in {', '.join(self.classes)}"

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def require_fitted(augmenter: Augmenter, attr: str) -> Any:
    """The fitted attribute, or a clear error saying fit() must come first."""
    value = getattr(augmenter, attr, None)
    if value is None:
        raise UserError(f"augmenter '{augmenter.name}': call fit() before generate()")
    return value
