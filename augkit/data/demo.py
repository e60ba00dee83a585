"""Built-in demo dataset: procedurally drawn images that look like white-blood-cell smears.

Why it exists: the README's main command and the test-suite need a labelled, imbalanced
white-blood-cell dataset that is available offline, in seconds, at any image size and with
no licence questions. This module draws one from a seed. The images imitate peripheral-blood
images such as PBC / CellaVision ones: a pale pinkish-beige background with pink red cells, and
in the middle one stained white cell (a purple nucleus inside its cytoplasm), or a clump of
platelets.

The eight classes and their relative frequencies follow the PBC dataset. They differ the way
real classes do: nucleus size, shape (round, indented, lobed, irregular), darkness and
texture, and the amount, colour and granules of the cytoplasm. Every one of these overlaps
between neighbouring classes, and each image gets its own position, size, rotation, stain,
focus and noise. A classifier can learn the classes, but not perfectly, so data augmentation
has room to help.

It is not a substitute for real data. Accuracy measured on it says nothing about accuracy on
real blood smears. It only shows that a pipeline runs end to end and behaves sensibly.

Images are drawn as optical densities (Beer-Lambert): every stained structure adds an
absorbance field, and the image is ``white * exp(-total)``. That is how stains overlap under
a bright-field microscope, so overlapping cells darken naturally. It also lets us change the
stain of the whole image (stain strength, hue) without touching the shapes. Shapes are
smooth signed-distance fields on the pixel grid, measured in units of the image width,
so every size shows the same picture. They get soft edges, never a hard threshold.
"""

from __future__ import annotations

import math
import operator
from functools import lru_cache
from typing import Iterator, NamedTuple

import numpy as np

__all__ = ["DEMO_CLASSES", "DEMO_WEIGHTS", "demo_counts", "render_cell", "iter_demo", "make_demo"]

DEMO_CLASSES: tuple[str, ...] = (
    "neutrophil",
    "eosinophil",
    "basophil",
    "lymphocyte",
    "monocyte",
    "ig",  # immature granulocytes: promyelocytes, myelocytes, metamyelocytes
    "erythroblast",
    "platelet",
)

# Proportional to the PBC dataset's class sizes (3329, 3117, 1218, 1214, 1420, 2895, 1551, 2348),
# so the demo data is imbalanced like the real data: the commonest class is ~2.7x the rarest.
DEMO_WEIGHTS: tuple[float, ...] = (0.195, 0.182, 0.071, 0.071, 0.083, 0.169, 0.091, 0.138)

_MIN_SIZE, _MAX_SIZE = 16, 512
_SHUFFLE_KEY = 0xDE30  # separates the class-order stream from the per-image streams [seed, i]

# Optical densities (absorbance per RGB channel, -ln(transmitted)) of the stained structures.
# Each is roughly -ln(the colour it shows on a white background).
_OD = {
    "bg": (0.03, 0.12, 0.20),  # plasma / glass: pale peach-beige
    "rbc": (0.17, 0.40, 0.33),  # red cells: mauve pink-red
    "nucleus": (1.00, 1.55, 0.60),  # azure-stained chromatin: purple
    "neutro_cyto": (0.09, 0.20, 0.14),  # pale pink-lilac
    "neutro_gran": (0.22, 0.42, 0.20),  # fine lilac granules
    "eos_cyto": (0.06, 0.20, 0.24),  # pale pink-orange
    "eos_gran": (0.10, 0.68, 0.85),  # orange-red granules
    "baso_cyto": (0.30, 0.45, 0.18),  # lilac-purple
    "baso_gran": (1.00, 1.75, 0.75),  # dark purple granules
    "lympho_cyto": (0.34, 0.22, 0.07),  # pale sky blue
    "mono_cyto": (0.27, 0.28, 0.14),  # grey-blue
    "ig_cyto": (0.22, 0.28, 0.14),  # greyish lilac
    "ig_gran": (0.30, 0.55, 0.22),  # purple-pink granules
    "ery_blue": (0.34, 0.34, 0.16),  # polychromatic cytoplasm, bluish end
    "ery_pink": (0.09, 0.40, 0.36),  # ... and haemoglobin-pink end
    "platelet": (0.45, 0.75, 0.30),  # lilac platelet body
}
_OD = {key: np.array(val) for key, val in _OD.items()}
_PINK = {"bg", "rbc", "neutro_cyto", "eos_cyto", "eos_gran", "ery_pink"}  # eosin-dominated

_GREY_AXIS = np.full(3, 1.0 / math.sqrt(3.0))
_CROSS = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3.0)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def demo_counts(n: int) -> np.ndarray:
    """Per-class row counts for an ``n``-row demo set, summing exactly to ``n``.

    Largest-remainder rounding of ``n * DEMO_WEIGHTS``, so the imbalance is as close to the
    weights as integers allow. When ``n`` is at least the number of classes, every class is
    given at least one row, taken from the largest class, so stratified splits and per-class
    metrics never meet an empty class. Deterministic: ties go to the lower class index.
    """
    n = _check_int("n", n, minimum=1)
    w = np.asarray(DEMO_WEIGHTS, dtype=np.float64)
    raw = n * w / w.sum()
    counts = np.floor(raw).astype(np.int64)
    short = n - int(counts.sum())
    if short:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:short]] += 1
    if n >= len(counts):
        for k in np.flatnonzero(counts == 0):
            counts[int(np.argmax(counts))] -= 1
            counts[k] += 1
    return counts


def render_cell(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one ``(size, size, 3)`` uint8 image of class ``label`` using only ``rng``.

    Every random choice comes from ``rng``, so the same generator state gives the same image.
    """
    label = _check_int("label", label, minimum=0)
    if label >= len(DEMO_CLASSES):
        raise ValueError(f"label must be < {len(DEMO_CLASSES)} (number of demo classes), got {label}")
    size = _check_size(size)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return _render(label, size, rng)


def iter_demo(
    n: int, size: int = 64, seed: int = 0, batch: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over the demo set in batches ``(images uint8 (b,size,size,3), labels int64 (b,))``.

    Streaming keeps memory flat for large ``n``. Arguments are checked at the call, not at the
    first ``next()``. Row ``i`` is drawn from its own generator
    ``default_rng([seed, i])``. The class order is one seeded shuffle of ``demo_counts(n)``.
    So the rows are the same whatever ``batch`` is: the batch size changes memory use,
    never the data.
    """
    n = _check_int("n", n, minimum=1)
    size = _check_size(size)
    seed = _check_int("seed", seed, minimum=0)
    batch = _check_int("batch", batch, minimum=1)
    return _batches(n, size, seed, batch)


def _batches(n: int, size: int, seed: int, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    labels = _demo_labels(n, seed)
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        images = np.empty((stop - start, size, size, 3), dtype=np.uint8)
        for row, i in enumerate(range(start, stop)):
            images[row] = _render(int(labels[i]), size, np.random.default_rng([seed, i]))
        yield images, labels[start:stop].copy()


def make_demo(n: int = 2000, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The whole demo set in memory: ``(images (n,size,size,3) uint8, labels (n,) int64, class names)``.

    Gives the same rows as concatenating :func:`iter_demo`. Use that for sets too large for memory.
    """
    n = _check_int("n", n, minimum=1)
    size = _check_size(size)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    start = 0
    for img, lab in iter_demo(n, size=size, seed=seed):
        images[start : start + len(lab)] = img
        labels[start : start + len(lab)] = lab
        start += len(lab)
    return images, labels, list(DEMO_CLASSES)


# --------------------------------------------------------------------------------------------
# validation and bookkeeping
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int) -> int:
    """Accept Python/NumPy integers only (not bools or floats), so typos fail loudly."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_size(size) -> int:
    size = _check_int("size", size, minimum=_MIN_SIZE)
    if size > _MAX_SIZE:
        raise ValueError(f"size must be between {_MIN_SIZE} and {_MAX_SIZE} pixels, got {size}")
    return size


def _demo_labels(n: int, seed: int) -> np.ndarray:
    """Class of every row: the counts of :func:`demo_counts`, shuffled by a seeded generator."""
    labels = np.repeat(np.arange(len(DEMO_CLASSES), dtype=np.int64), demo_counts(n))
    np.random.default_rng([seed, n, _SHUFFLE_KEY]).shuffle(labels)
    return labels


# --------------------------------------------------------------------------------------------
# drawing helpers (all vectorised over the pixel grid)
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _lattice(size: int, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """How pixel centres sit in a g x g value-noise lattice.

    Returns the left and right lattice nodes of each pixel, their weights, and the same
    weights as a ``(size, g + 1)`` interpolation matrix.
    """
    t = (np.arange(size, dtype=np.float64) + 0.5) * (g / size)
    i0 = np.minimum(t.astype(np.intp), g - 1)
    f = t - i0
    f = f * f * (3.0 - 2.0 * f)  # smoothstep: no visible creases along the lattice lines
    w0, w1 = (1.0 - f).astype(np.float32), f.astype(np.float32)
    mat = np.zeros((size, g + 1), dtype=np.float32)
    mat[np.arange(size), i0] = w0
    mat[np.arange(size), i0 + 1] = w1
    return i0, i0 + 1, w0, w1, mat


def _noise(rng: np.random.Generator, size: int, g: int, channels: int) -> np.ndarray:
    """Smooth value noise in [0, 1], ``(channels, size, size)``, with features ~1/g image wide.

    Interpolating a coarse random lattice is far cheaper than filtering white noise, and the
    feature size stays fixed in image units, so every size gets the same texture.
    """
    lat = rng.random((channels, g + 1, g + 1), dtype=np.float32)
    i0, i1, w0, w1, mat = _lattice(size, g)
    if size * size * (g + 1) <= 1 << 16:
        # Small: two tiny matrix products are the cheapest way, and BLAS runs them on one thread.
        return mat @ lat @ mat.T
    # Large: gathers. A large BLAS product would go multi-threaded, and on a busy machine its
    # threads can turn a sub-millisecond product into tens of milliseconds.
    rows = lat[:, i0, :] * w0[:, None] + lat[:, i1, :] * w1[:, None]
    out = np.take(rows, i0, axis=2)
    out *= w0
    out += np.take(rows, i1, axis=2) * w1
    return out


def _granules(rng, g: float, fill: float, radius: float, edge: float, u: np.ndarray, v: np.ndarray):
    """Coverage of round granules on a jittered grid of pitch 1/g, in cell-local coordinates u, v.

    Each grid cell holds at most one dot (with probability ``fill``), of radius ``radius``
    pitches (give or take 30 %), placed at random inside its cell. The grid turns with the
    cell, so it is never aligned with the pixels. Discrete soft dots look like granules at
    any image size. Thresholded smooth noise would turn into blotches on large images.
    """
    n = int(g) + 2  # the lattice spans u, v in [-0.5, 0.5] image widths: more than any cell
    gu, gv = u * g + 0.5 * n, v * g + 0.5 * n
    iu = np.minimum(np.maximum(gu.astype(np.intp), 0), n - 1)
    iv = np.minimum(np.maximum(gv.astype(np.intp), 0), n - 1)
    p = rng.random((4, n, n), dtype=np.float32)[:, iv, iu]  # jitter v, jitter u, radius, presence
    r = radius * (0.7 + 0.6 * p[2])
    dist = np.hypot((gv - iv) - (r + (1.0 - 2.0 * r) * p[0]), (gu - iu) - (r + (1.0 - 2.0 * r) * p[1])) - r
    return _alpha(dist * (1.0 / g), edge) * (p[3] < fill)


def _clip01(a: np.ndarray) -> np.ndarray:
    """``np.clip(a, 0, 1)`` without its Python-level overhead (called thousands of times)."""
    return np.minimum(np.maximum(a, 0.0), 1.0)


def _alpha(dist: np.ndarray, edge: float) -> np.ndarray:
    """Soft coverage from a signed distance (negative inside): a linear ramp ``edge`` wide."""
    return _clip01(0.5 - dist * (1.0 / edge))


def _window(cx: float, cy: float, half: float, size: int) -> tuple[slice, slice]:
    """Pixel rows/cols covering the square of half-width ``half`` around (cx, cy): draw only there."""
    r0 = max(0, int((cy - half) * size))
    r1 = min(size, int(math.ceil((cy + half) * size)) + 1)
    c0 = max(0, int((cx - half) * size))
    c1 = min(size, int(math.ceil((cx + half) * size)) + 1)
    return slice(r0, r1), slice(c0, c1)


def _rotation_about_grey(angle: float) -> np.ndarray:
    """Rotation of OD colour vectors about the grey axis: a hue shift that keeps overall density."""
    c, s = math.cos(angle), math.sin(angle)
    return c * np.eye(3) + s * _CROSS + (1.0 - c) * np.outer(_GREY_AXIS, _GREY_AXIS)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One uniform draw in [lo, hi): the designs below read as plain parameter ranges."""
    return lo + (hi - lo) * float(rng.random())


# --------------------------------------------------------------------------------------------
# class-specific cell designs
# --------------------------------------------------------------------------------------------
# A design is a plain dict of geometry (in units of the image width, before magnification)
# and stain amounts. The renderer below is shared, so classes differ only in these numbers,
# and the ranges deliberately overlap between look-alike classes.


def _chain(rng, n_lobes: int, r_lobe: float, gap: float, strand: float, fit: float):
    """Nucleus lobes strung along a random arc, joined by strands (band and segmented nuclei)."""
    step = 2.0 * r_lobe * gap
    arc_r = _u(rng, 0.055, 0.13)
    dpsi = step / arc_r
    lobes = []
    for j in range(n_lobes):
        psi = (j - (n_lobes - 1) / 2.0) * dpsi + _u(rng, -0.25, 0.25) * dpsi
        r = r_lobe * _u(rng, 0.8, 1.15)
        lobes.append([arc_r * math.sin(psi), arc_r * (1.0 - math.cos(psi)), r * _u(rng, 0.85, 1.1), r])
    xs = np.array([lb[0] for lb in lobes])
    ys = np.array([lb[1] for lb in lobes])
    xs -= xs.mean()
    ys -= ys.mean()
    extent = float(np.max(np.hypot(xs, ys) + r_lobe))
    shrink = min(1.0, fit / extent) if extent > 0 else 1.0
    for j, lb in enumerate(lobes):
        lb[0], lb[1] = xs[j] * shrink, ys[j] * shrink
    strands = [(j, j + 1, strand * _u(rng, 0.8, 1.2)) for j in range(n_lobes - 1)]
    return lobes, strands


def _round_nucleus(rng, rc: float, frac: tuple[float, float], eccentric: float):
    """One oval nucleus taking ``frac`` of the cell radius, pushed off-centre by up to ``eccentric``."""
    rn = rc * _u(rng, *frac)
    e = _u(rng, 0.0, 0.12)
    off = (rc - rn) * _u(rng, 0.0, eccentric)
    phi = _u(rng, 0.0, 2.0 * math.pi)
    return [[off * math.cos(phi), off * math.sin(phi), rn * (1.0 + e), rn * (1.0 - e)]], rn


def _bite(rng, lobe, depth: tuple[float, float], width: tuple[float, float]):
    """A disc cut out of one side of a nucleus: the indentation of kidney-shaped nuclei."""
    x, y, rx, ry = lobe
    rn = 0.5 * (rx + ry)
    rb = rn * _u(rng, *width)
    phi = _u(rng, 0.0, 2.0 * math.pi)
    dist = rn + rb - rn * _u(rng, *depth)
    return (x + dist * math.cos(phi), y + dist * math.sin(phi), rb)


def _mix(a: str, b: str, t: float) -> np.ndarray:
    """An OD colour part-way between two named ones: look-alike classes share colours."""
    return (1.0 - t) * _OD[a] + t * _OD[b]


class _Granules(NamedTuple):
    pitch: float  # granules per image width (grid cells)
    fill: float  # fraction of grid cells holding a granule
    radius: float  # granule radius, in grid cells
    density: float  # stain amount of one granule
    od: np.ndarray  # colour
    pink: bool = False  # stained by the pink dye (follows its per-image strength)
    over_nucleus: bool = False  # granules also cover the nucleus (basophils)


def _design(label: int, rng: np.random.Generator) -> dict:
    """Random geometry and stain amounts of one cell of class ``label``."""
    name = DEMO_CLASSES[label]
    d = {
        "bite": None,
        "strands": [],
        "nuc_wobble": _u(rng, 0.008, 0.02),
        "gran": None,  # a _Granules, if any
        "vacuoles": 0.0,
        "cyto_density": _u(rng, 0.8, 1.2),
        "cyto_wobble": _u(rng, 0.05, 0.15),  # irregularity of the cell outline
    }
    if name == "neutrophil":
        rc = _u(rng, 0.16, 0.205)
        band = rng.random() < 0.3
        n_lobes = int(rng.choice([3, 4])) if band else int(rng.choice([2, 3, 3, 3, 4, 4, 5]))
        rl = _u(rng, 0.048, 0.064)
        strand = rl * (_u(rng, 0.6, 0.9) if band else _u(rng, 0.2, 0.45))
        gap = _u(rng, 0.8, 1.0) if band else _u(rng, 0.9, 1.25)
        d["lobes"], d["strands"] = _chain(rng, n_lobes, rl, gap, strand, fit=rc * 0.85)
        d["dark"], d["chromatin"] = _u(rng, 0.8, 1.05), _u(rng, 0.15, 0.35)
        d["cyto"], d["cyto_pink"] = _mix("neutro_cyto", "ig_cyto", _u(rng, 0.0, 0.4)), True
        d["gran"] = _Granules(_u(rng, 44, 54), _u(rng, 0.5, 0.8), _u(rng, 0.22, 0.32), _u(rng, 0.3, 0.7),
                              _OD["neutro_gran"])
    elif name == "eosinophil":
        rc = _u(rng, 0.165, 0.21)
        n_lobes = 2 if rng.random() < 0.75 else 3
        rl = _u(rng, 0.046, 0.064)
        gap, strand = _u(rng, 0.95, 1.3), _u(rng, 0.006, 0.016)
        d["lobes"], d["strands"] = _chain(rng, n_lobes, rl, gap, strand, fit=rc * 0.8)
        d["dark"], d["chromatin"] = _u(rng, 0.7, 0.95), _u(rng, 0.15, 0.3)
        d["cyto"], d["cyto_pink"] = _OD["eos_cyto"], True
        gran_od = _mix("eos_gran", "neutro_gran", _u(rng, 0.0, 0.45))
        d["gran"] = _Granules(_u(rng, 24, 30), _u(rng, 0.8, 0.95), _u(rng, 0.3, 0.38), _u(rng, 0.8, 1.2), gran_od,
                              pink=True)
    elif name == "basophil":
        rc = _u(rng, 0.145, 0.19)
        if rng.random() < 0.3:
            d["lobes"], _ = _round_nucleus(rng, rc, (0.5, 0.7), 0.3)
        else:
            rl = _u(rng, 0.05, 0.068)
            d["lobes"], d["strands"] = _chain(
                rng, int(rng.choice([2, 3])), rl, _u(rng, 0.75, 1.1), rl * _u(rng, 0.5, 1.0), fit=rc * 0.8
            )
        d["dark"], d["chromatin"] = _u(rng, 0.55, 0.8), _u(rng, 0.1, 0.25)
        d["cyto"] = _OD["baso_cyto"]
        d["gran"] = _Granules(_u(rng, 15, 20), _u(rng, 0.6, 0.95), _u(rng, 0.26, 0.36), _u(rng, 0.6, 1.0),
                              _OD["baso_gran"], over_nucleus=True)
    elif name == "lymphocyte":
        rc = _u(rng, 0.11, 0.165) if rng.random() < 0.8 else _u(rng, 0.165, 0.2)
        d["lobes"], _ = _round_nucleus(rng, rc, (0.7, 0.9), 0.8)
        if rng.random() < 0.25:
            d["bite"] = _bite(rng, d["lobes"][0], (0.1, 0.25), (0.4, 0.7))
        d["dark"], d["chromatin"] = _u(rng, 0.9, 1.15), _u(rng, 0.2, 0.4)
        d["cyto"] = _mix("lympho_cyto", "mono_cyto", _u(rng, 0.0, 0.4))
        if rng.random() < 0.2:  # a few azurophilic granules (large granular lymphocytes)
            d["gran"] = _Granules(_u(rng, 22, 28), _u(rng, 0.05, 0.15), _u(rng, 0.25, 0.35), _u(rng, 0.4, 0.8),
                                  _OD["ig_gran"])
    elif name == "monocyte":
        rc = _u(rng, 0.185, 0.25)
        if rng.random() < 0.3:  # folded, irregular nucleus
            rl = _u(rng, 0.06, 0.08)
            d["lobes"], d["strands"] = _chain(
                rng, int(rng.choice([2, 3])), rl, _u(rng, 0.7, 1.0), rl * _u(rng, 0.6, 0.95), fit=rc * 0.8
            )
        else:  # kidney-shaped
            d["lobes"], _ = _round_nucleus(rng, rc, (0.5, 0.68), 0.6)
            d["bite"] = _bite(rng, d["lobes"][0], (0.2, 0.45), (0.5, 0.8))
        d["nuc_wobble"] = _u(rng, 0.015, 0.035)
        d["dark"], d["chromatin"] = _u(rng, 0.55, 0.8), _u(rng, 0.25, 0.45)
        d["cyto"] = _mix("mono_cyto", "lympho_cyto", _u(rng, 0.0, 0.3))
        d["vacuoles"] = _u(rng, 0.0, 0.8) if rng.random() < 0.6 else 0.0
        d["cyto_wobble"] = _u(rng, 0.1, 0.4)  # pseudopods, irregular outline
        if rng.random() < 0.5:  # fine azurophilic dust
            d["gran"] = _Granules(_u(rng, 44, 54), _u(rng, 0.2, 0.4), _u(rng, 0.2, 0.3), _u(rng, 0.2, 0.4),
                                  _OD["neutro_gran"])
    elif name == "ig":
        rc = _u(rng, 0.165, 0.225)
        kind = rng.random()
        if kind < 0.4:  # metamyelocyte: kidney / thick horseshoe
            d["lobes"], _ = _round_nucleus(rng, rc, (0.5, 0.65), 0.5)
            d["bite"] = _bite(rng, d["lobes"][0], (0.25, 0.5), (0.5, 0.8))
        elif kind < 0.8:  # myelocyte: eccentric oval nucleus
            d["lobes"], _ = _round_nucleus(rng, rc, (0.5, 0.68), 0.7)
        else:  # promyelocyte: large round nucleus
            d["lobes"], _ = _round_nucleus(rng, rc, (0.62, 0.78), 0.4)
        d["dark"], d["chromatin"] = _u(rng, 0.6, 0.9), _u(rng, 0.15, 0.35)
        d["cyto"] = _mix("ig_cyto", "neutro_cyto" if rng.random() < 0.5 else "mono_cyto", _u(rng, 0.0, 0.5))
        d["gran"] = _Granules(_u(rng, 28, 36), _u(rng, 0.4, 0.7), _u(rng, 0.24, 0.34), _u(rng, 0.4, 0.8),
                              _OD["ig_gran"])
    elif name == "erythroblast":
        rc = _u(rng, 0.095, 0.15)
        d["lobes"], _ = _round_nucleus(rng, rc, (0.5, 0.72), 0.35)
        d["nuc_wobble"] = _u(rng, 0.004, 0.012)
        d["dark"], d["chromatin"] = _u(rng, 1.0, 1.3), _u(rng, 0.05, 0.2)
        d["cyto"] = _mix("ery_blue", "ery_pink", _u(rng, 0.0, 1.0))
        d["cyto_density"] = _u(rng, 1.0, 1.5)
    else:  # platelet: no white cell, a small clump of platelets instead
        return {"platelets": int(rng.choice([1, 1, 2, 3, 4, 5, 6, 8])), "rc": _u(rng, 0.06, 0.1)}
    d["rc"] = rc
    d["ecc"] = _u(rng, 0.0, 0.1)
    return d


# --------------------------------------------------------------------------------------------
# the renderer
# --------------------------------------------------------------------------------------------


def _render(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    design = _design(label, rng)
    px = 1.0 / size
    mag = _u(rng, 0.9, 1.1)  # magnification / cell-size jitter, shared by all objects
    edge = 0.8 * px + 0.009 * _u(rng, 0.0, 1.0)  # anti-aliasing plus slight defocus, in image units

    # Per-image stain: strength of the pink (eosin-like) and purple (azure-like) dyes, a hue
    # rotation and slight channel gains. Shared by all classes, so colour alone can't give
    # the class away.
    k_pink, k_purple = _u(rng, 0.75, 1.25), _u(rng, 0.75, 1.3)
    stain_mat = _rotation_about_grey(_u(rng, -0.2, 0.2)) * (1.0 + rng.uniform(-0.08, 0.08, 3))[:, None]

    def od(key_or_vec, pink: bool | None = None) -> np.ndarray:
        if isinstance(key_or_vec, str):
            vec, pink = _OD[key_or_vec], key_or_vec in _PINK
        else:
            vec = key_or_vec
        return ((stain_mat * vec).sum(axis=1) * (k_pink if pink else k_purple)).astype(np.float32)

    low = _noise(rng, size, 5, 3)  # background mottle, cytoplasm outline, nucleus outline
    mid = _noise(rng, size, 14, 2)  # chromatin clumping, vacuoles

    x = ((np.arange(size, dtype=np.float32) + 0.5) * px)[None, :]
    y = x.reshape(size, 1)

    total = (0.75 + 0.5 * low[0, :, :, None]) * (od("bg") * _u(rng, 0.6, 1.4))

    # the cell (or platelet clump) sits near the centre
    cx, cy = (0.5 + 0.045 * float(np.clip(rng.normal(), -2.5, 2.5)) for _ in range(2))
    rc = design["rc"] * mag

    rbc = _red_cells(rng, size, cx, cy, rc, mag, edge)
    total += rbc[:, :, None] * od("rbc")

    # stray platelets in the background of any class, so "small purple dots" is not a giveaway
    n_stray = int(rng.random() < 0.25) + int(rng.random() < 0.1)
    for _ in range(n_stray):
        ang, dist, r = _u(rng, 0, 2 * math.pi), _u(rng, rc + 0.06, 0.55), _u(rng, 0.014, 0.03) * mag
        px_, py_ = cx + dist * math.cos(ang), cy + dist * math.sin(ang)
        _draw_platelet(total, px_, py_, r, edge, x, y, size, rng, od)

    if "platelets" in design:
        for _ in range(design["platelets"]):
            ang, dist, r = _u(rng, 0, 2 * math.pi), rc * math.sqrt(_u(rng, 0.0, 1.0)), _u(rng, 0.026, 0.052) * mag
            px_, py_ = cx + dist * math.cos(ang), cy + dist * math.sin(ang)
            _draw_platelet(total, px_, py_, r, edge, x, y, size, rng, od)
    else:
        _draw_wbc(total, design, cx, cy, rc, mag, edge, x, y, size, rng, od, low, mid)

    white = (1.0 + _u(rng, -0.06, 0.02)) * (1.0 + rng.uniform(-0.02, 0.02, 3)).astype(np.float32)
    img = np.exp(-total) * white
    # sensor noise; uniform rather than Gaussian because it is several times cheaper to draw
    img += (rng.random(img.shape, dtype=np.float32) - 0.5) * (math.sqrt(12.0) * _u(rng, 0.006, 0.02))
    return (_clip01(img) * 255.0 + 0.5).astype(np.uint8)


def _red_cells(rng, size: int, cx: float, cy: float, rc: float, mag: float, edge: float) -> np.ndarray:
    """Thickness map of 8-16 red cells, pushed out of the white cell's way (they may still touch it).

    All the discs are drawn at once, each in its own equal-sized window, stacked into one
    array. A dozen array operations for all cells cost much less than a dozen per cell.
    """
    p = rng.random((int(rng.integers(8, 17)), 6))  # radius, x, y, clearance, thickness, pallor
    r = 0.1 * mag * (0.88 + 0.24 * p[:, 0])
    bx, by = p[:, 1] * 1.1 - 0.05, p[:, 2] * 1.1 - 0.05
    clear = rc + r * (0.5 + 0.6 * p[:, 3])
    dist = np.hypot(bx - cx, by - cy)
    ang = np.where(dist > 1e-6, np.arctan2(by - cy, bx - cx), 2.0 * math.pi * p[:, 3])
    push = dist < clear
    bx = np.where(push, cx + clear * np.cos(ang), bx)
    by = np.where(push, cy + clear * np.sin(ang), by)

    half = int(math.ceil((r.max() + edge) * size)) + 1  # window half-width, pixels
    ci, ri = np.floor(bx * size).astype(np.int64), np.floor(by * size).astype(np.int64)
    steps = np.arange(-half, half + 1)
    wx = ((ci[:, None] + steps + 0.5) / size - bx[:, None]).astype(np.float32)[:, None, :]
    wy = ((ri[:, None] + steps + 0.5) / size - by[:, None]).astype(np.float32)[:, :, None]
    rho2 = wx * wx + wy * wy
    r3 = r.astype(np.float32)[:, None, None]
    # biconcave disc: thick rim, paler centre ("central pallor")
    pallor = np.maximum(1.0 - rho2 * (1.0 / (0.65 * r3) ** 2), 0.0)
    thick = (0.8 + 0.3 * p[:, 4, None, None]) - (0.4 + 0.4 * p[:, 5, None, None]) * pallor
    discs = _clip01((0.5 + r3 * (1.0 / edge)) - np.sqrt(rho2) * (1.0 / edge)) * thick.astype(np.float32)

    pad = half + size // 8 + 2  # centres lie within [-0.05, 1.05] image widths
    canvas = np.zeros((size + 2 * pad, size + 2 * pad), dtype=np.float32)
    for k in range(len(r)):
        r0, c0 = ri[k] - half + pad, ci[k] - half + pad
        canvas[r0 : r0 + 2 * half + 1, c0 : c0 + 2 * half + 1] += discs[k]
    return canvas[pad : pad + size, pad : pad + size]


def _draw_platelet(total, px_, py_, r, edge, x, y, size, rng, od) -> None:
    """A small, irregular lilac disc with a darker granular centre."""
    rows, cols = _window(px_, py_, r * 1.3 + edge, size)
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return
    e = _u(rng, 0.0, 0.3)
    rho = np.hypot((x[:, cols] - px_) * (1.0 + e), y[rows] - py_)
    a = _alpha(rho - r, edge)
    core = np.maximum(1.0 - rho * (1.0 / (0.7 * r)), 0.0)
    total[rows, cols] += (a * _u(rng, 0.5, 0.9) + core * _u(rng, 0.3, 0.8))[:, :, None] * od("platelet")


def _draw_wbc(total, d, cx, cy, rc, mag, edge, x, y, size, rng, od, low, mid) -> None:
    """Cytoplasm, granules and nucleus of one white cell, drawn in a window around it."""
    rows, cols = _window(cx, cy, rc * 1.2 + edge, size)
    theta = _u(rng, 0.0, 2.0 * math.pi)
    ct, st = math.cos(theta), math.sin(theta)
    dx, dy = x[:, cols] - cx, y[rows] - cy
    u = ct * dx + st * dy  # cell-local coordinates: the design is drawn rotated by theta
    v = ct * dy - st * dx

    lw, mw = low[:, rows, cols], mid[:, rows, cols]
    a_ax, b_ax = rc * (1.0 + d["ecc"]), rc * (1.0 - d["ecc"])
    d_cyto = (np.hypot(u * (1.0 / a_ax), v * (1.0 / b_ax)) - 1.0) * rc
    d_cyto += (d["cyto_wobble"] * rc) * (lw[1] - 0.5)  # a slightly irregular outline
    a_cyto = _alpha(d_cyto, edge)

    # nucleus: union of oval lobes and strands, minus an optional bite, with a wobbly outline
    d_nuc = None
    lobes = [(lx * mag, ly * mag, rx * mag, ry * mag) for lx, ly, rx, ry in d["lobes"]]
    for lx, ly, rx, ry in lobes:
        dist = (np.hypot((u - lx) * (1.0 / rx), (v - ly) * (1.0 / ry)) - 1.0) * min(rx, ry)
        d_nuc = dist if d_nuc is None else np.minimum(d_nuc, dist)
    for j, k, t in d["strands"]:
        ax, ay = lobes[j][0], lobes[j][1]
        sx, sy = lobes[k][0] - ax, lobes[k][1] - ay
        ss = sx * sx + sy * sy
        if ss < 1e-12:
            continue
        pu, pv = u - ax, v - ay
        h = _clip01((pu * sx + pv * sy) * (1.0 / ss))
        d_nuc = np.minimum(d_nuc, np.hypot(pu - sx * h, pv - sy * h) - t * mag)
    if d["bite"] is not None:
        bx, by, br = (c * mag for c in d["bite"])
        d_nuc = np.maximum(d_nuc, br - np.hypot(u - bx, v - by))
    d_nuc = d_nuc + d["nuc_wobble"] * mag * (lw[2] - 0.5) * 2.0
    a_nuc = np.minimum(_alpha(d_nuc, edge), a_cyto)
    chrom = d["dark"] * (1.0 + d["chromatin"] * 2.0 * (mw[0] - 0.5))

    cyto = a_cyto * d["cyto_density"]
    if d["vacuoles"] > 0:
        cyto = cyto * (1.0 - d["vacuoles"] * _clip01((mw[1] - 0.72) * 8.0))

    win = total[rows, cols]
    win += cyto[:, :, None] * od(d["cyto"], pink=d.get("cyto_pink", False))
    win += (a_nuc * chrom)[:, :, None] * od("nucleus")
    gr = d["gran"]
    if gr is not None:
        gran = _granules(rng, gr.pitch / mag, gr.fill, gr.radius, edge, u, v) * a_cyto
        if not gr.over_nucleus:
            gran = gran * (1.0 - 0.7 * a_nuc)
        win += (gran * gr.density)[:, :, None] * od(gr.od, pink=gr.pink)
