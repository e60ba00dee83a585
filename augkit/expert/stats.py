"""Numbers of an expert test: confusion matrix, sensitivity, specificity and accuracy with CIs.

Convention (as in the thesis's table 2): "fake" (a generated image) is the positive class. So
sensitivity is the share of generated images the expert caught as fake, specificity the share of real
images the expert accepted as real. A generator that fools the expert shows a LOW sensitivity; a
guessing expert sits near 0.5 on both. Intervals are Wilson score intervals (scipy), which stay
inside [0, 1] and behave at the small counts of a 100-image test.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scipy import stats as _scipy_stats

REAL, FAKE = "real", "fake"
ANSWERS = (REAL, FAKE)
POSITIVE = FAKE
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Rate:
    """k of n with its Wilson interval; value and bounds are None when n is 0."""

    k: int
    n: int
    value: float | None
    ci_low: float | None
    ci_high: float | None

    @classmethod
    def of(cls, k: int, n: int, confidence: float = CONFIDENCE) -> "Rate":
        if n == 0:
            return cls(k, n, None, None, None)
        ci = _scipy_stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        return cls(k, n, k / n, float(ci.low), float(ci.high))

    def to_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "k": self.k, "n": self.n}

    def describe(self) -> str:
        if self.value is None:
            return "—"
        return f"{self.value:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}]"


@dataclass(frozen=True)
class Confusion:
    """Counts of (truth, answer): tp = fake called fake, fn = fake called real, tn = real called real,
    fp = real called fake."""

    tp: int = 0
    fn: int = 0
    tn: int = 0
    fp: int = 0

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> "Confusion":
        """From (truth, answer) pairs, each "real" or "fake"."""
        counts = {(FAKE, FAKE): 0, (FAKE, REAL): 0, (REAL, REAL): 0, (REAL, FAKE): 0}
        for truth, answer in pairs:
            if (truth, answer) not in counts:
                raise ValueError(f"expected 'real'/'fake' truth and answer, got {truth!r}, {answer!r}")
            counts[truth, answer] += 1
        return cls(counts[FAKE, FAKE], counts[FAKE, REAL], counts[REAL, REAL], counts[REAL, FAKE])

    def __add__(self, other: "Confusion") -> "Confusion":
        return Confusion(self.tp + other.tp, self.fn + other.fn, self.tn + other.tn, self.fp + other.fp)

    @property
    def n(self) -> int:
        return self.tp + self.fn + self.tn + self.fp

    @property
    def sensitivity(self) -> Rate:
        return Rate.of(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> Rate:
        return Rate.of(self.tn, self.tn + self.fp)

    @property
    def accuracy(self) -> Rate:
        return Rate.of(self.tp + self.tn, self.n)

    def matrix(self) -> list[list[int]]:
        """Rows: truth real, fake; columns: answer real, fake."""
        return [[self.tn, self.fp], [self.fn, self.tp]]

    def to_dict(self) -> dict:
        return {
            "n": self.n, "matrix": self.matrix(), "tp": self.tp, "fn": self.fn, "tn": self.tn, "fp": self.fp,
            "sensitivity": self.sensitivity.to_dict(), "specificity": self.specificity.to_dict(),
            "accuracy": self.accuracy.to_dict(),
        }


@dataclass(frozen=True)
class Judgement:
    """One answered image: what it was, what the expert said, and its class."""

    truth: str
    answer: str
    class_name: str


def breakdown(judgements: Iterable[Judgement]) -> tuple[Confusion, dict[str, Confusion]]:
    """The overall confusion and one per class (classes in order of first appearance, sorted)."""
    judgements = list(judgements)
    overall = Confusion.of((j.truth, j.answer) for j in judgements)
    per_class = {c: Confusion.of((j.truth, j.answer) for j in judgements if j.class_name == c)
                 for c in sorted({j.class_name for j in judgements})}
    return overall, per_class
