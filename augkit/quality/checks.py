"""Quality checks, registered: each gives its numbers and its rows of the report.

A check is a :class:`QualityCheck`: a name, a ``run(assessment)`` that adds its numbers to the
assessment's result (overall, per class, or a section of its own), and the report's rows for them
(``overall_rows``: rows of the overall table; ``class_columns``: columns of the per-class table). augkit's
own checks are registered here with :func:`register_check`; a plugin adds one by returning QualityCheck
objects from the ``augkit_quality_checks`` hook. The numbers themselves are computed in one module per
check (distances, manifold, diversity, memorisation, cas, two_sample), imported when the check runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from augkit.data.reader import ImageDataset

EXPERT_ACCURACY = 0.71  # the thesis's haematologist telling real from AC-GAN images


def number(value, digits: int | str = 3) -> str:
    """A number with ``digits`` decimals, or ``"3g"``-style significant digits (KID spans decades)."""
    if value is None:
        return "–"
    return f"{value:.{digits}}" if isinstance(digits, str) else f"{value:.{digits}f}"


@dataclass(frozen=True)
class QualityCheck:
    """One check. ``needs_features``: it reads the feature vectors (computed once for all checks).
    ``class_columns(result)``: (title, cell(row) -> text) pairs of the per-class table."""

    name: str
    run: Callable[["Assessment"], None]
    overall_rows: Callable[[dict], list[str]] = lambda result: []
    class_columns: Callable[[dict], list[tuple[str, Callable[[dict], str]]]] = lambda result: []
    needs_features: bool = False
    help: str = ""


_BUILTIN: dict[str, QualityCheck] = {}


def register_check(name: str, *, needs_features: bool = False, overall_rows=None, class_columns=None,
                   help: str = ""):  # noqa: A002 - the field's name in every parameter help
    """Decorator: register ``run(assessment)`` as augkit's check ``name``."""
    def decorate(run):
        _BUILTIN[name] = QualityCheck(name, run, overall_rows or (lambda result: []),
                                      class_columns or (lambda result: []), needs_features, help)
        return run
    return decorate


def all_checks() -> dict[str, QualityCheck]:
    """augkit's checks, then those of installed plugins, in that order (a plugin's check may not take
    the name of one of augkit's)."""
    from augkit.errors import PluginError
    from augkit.registry import get_registry

    plugins = get_registry().quality_checks()
    clash = [name for name in plugins if name in _BUILTIN]
    if clash:
        raise PluginError(f"a plugin registers quality check '{clash[0]}', which is augkit's own; rename it")
    return {**_BUILTIN, **plugins}


def labels_in(ds: ImageDataset, real_names: list[str]) -> np.ndarray:
    """``ds``'s labels as positions in ``real_names``, matched by class name (the classes it uses)."""
    labels = ds.labels
    lookup = np.full(len(ds.class_names), -1, np.int64)
    for k in np.unique(labels):
        lookup[k] = real_names.index(ds.class_names[k])
    return lookup[labels]


@dataclass
class Assessment:
    """What a check works on, and where it puts its numbers: ``result`` (overall numbers in
    ``result["overall"]``, a section of its own under its name) and ``classes`` (one row per real class)."""

    real: ImageDataset
    fake: ImageDataset
    extractor: object
    spec: object
    out_dir: Path
    device: str
    test: ImageDataset | None
    cas_real: ImageDataset | None
    cache_dir: Path | None
    overall_only: bool
    say: Callable[[str], None]
    real_names: list[str]
    fake_labels: np.ndarray
    real_pos: dict
    fake_pos: dict
    all_real: np.ndarray
    all_fake: np.ndarray
    result: dict
    classes: dict = field(default_factory=dict)
    real_f: np.ndarray | None = None
    fake_f: np.ndarray | None = None
    _whole: dict = field(default_factory=dict)

    def read_whole(self, view: ImageDataset) -> np.ndarray:
        """All of a view's images, read once (memorisation and CAS both need the real training set)."""
        if id(view) not in self._whole:
            self._whole[id(view)] = view.read(np.arange(len(view)))
        return self._whole[id(view)]

    def comparable_classes(self):
        """(label, row) of every class with enough images on both sides for per-class numbers."""
        for label, name in enumerate(self.real_names):
            row = self.classes.get(name)
            if row is not None and not row["note"]:
                yield label, row


# ---- augkit's checks ---------------------------------------------------------------------------------

def _distance_rows(result):
    o = result["overall"]
    if "fd" not in o:
        return []
    return [f"| Fréchet distance (features) | {number(o['fd'], 2)} | 0 = same mean and covariance; lower is better |",
            f"| KID (features) | {number(o['kid'], '3g')} ± {number(o['kid_std'], '2g')} | ≈ 0 for one distribution |"]


@register_check("distances", needs_features=True, overall_rows=_distance_rows,
                class_columns=lambda result: [("FD", lambda r: number(r.get("fd"), 2)),
                                              ("KID", lambda r: number(r.get("kid"), "3g"))],
                help="Fréchet distance and KID in the feature space")
def _distances(a: Assessment) -> None:
    from augkit.quality.distances import frechet_distance, kernel_distance

    def numbers(real_f, fake_f):
        kid, kid_std = kernel_distance(real_f, fake_f, seed=a.spec.seed)
        return {"fd": frechet_distance(real_f, fake_f), "kid": kid, "kid_std": kid_std}

    a.result["overall"].update(numbers(a.real_f[a.all_real], a.fake_f[a.all_fake]))
    for label, row in a.comparable_classes():
        row.update(numbers(a.real_f[a.real_pos[label]], a.fake_f[a.fake_pos[label]]))


_MANIFOLD = ("precision", "recall", "density", "coverage")


def _manifold_rows(result):
    o = result["overall"]
    if "precision" not in o:
        return []
    return [f"| precision | {number(o['precision'])} | generated images inside the real manifold (fidelity) |",
            f"| recall | {number(o['recall'])} | real images inside the generated manifold (variety) |",
            f"| density | {number(o['density'])} | ≈ 1 when matched; > 1 crowded into dense real regions |",
            f"| coverage | {number(o['coverage'])} | real neighbourhoods holding a generated image |"]


@register_check("manifold", needs_features=True, overall_rows=_manifold_rows,
                class_columns=lambda result: [(k, lambda r, k=k: number(r.get(k))) for k in _MANIFOLD],
                help="precision, recall, density and coverage (k-NN manifolds in the feature space)")
def _manifold(a: Assessment) -> None:
    from augkit.quality.manifold import manifold_scores

    def numbers(real_f, fake_f):
        scores = manifold_scores(real_f, fake_f, seed=a.spec.seed)
        return {k: scores[k] for k in _MANIFOLD}

    a.result["overall"].update(numbers(a.real_f[a.all_real], a.fake_f[a.all_fake]))
    for label, row in a.comparable_classes():
        row.update(numbers(a.real_f[a.real_pos[label]], a.fake_f[a.fake_pos[label]]))


def _diversity_rows(result):
    o = result["overall"]
    if "fake_ms_ssim" not in o:
        return []
    flag = "**collapsed**" if o["collapsed"] else "ok"
    return [f"| mean pairwise MS-SSIM, real / generated | {number(o['real_ms_ssim'])} / {number(o['fake_ms_ssim'])} "
            f"| higher = less diverse; {flag} |"]


@register_check("diversity", overall_rows=_diversity_rows,
                class_columns=lambda result: [("MS-SSIM real / gen.",
                                               lambda r: f"{number(r.get('real_ms_ssim'))} / {number(r.get('fake_ms_ssim'))}")],
                help="mean pairwise MS-SSIM of real and generated images (mode collapse)")
def _diversity(a: Assessment) -> None:
    from augkit.quality.diversity import class_diversity, is_collapsed, pairwise_ms_ssim

    a.say("quality: diversity (pairwise MS-SSIM)")
    n, seed = a.spec.diversity_images, a.spec.seed
    rng = np.random.default_rng([seed, 2])
    real_s = a.real.read(np.sort(rng.choice(len(a.real), min(len(a.real), n * 2), replace=False)))
    fake_s = a.fake.read(np.sort(rng.choice(len(a.fake), min(len(a.fake), n * 2), replace=False)))
    real_ms, fake_ms = pairwise_ms_ssim(real_s, seed=seed), pairwise_ms_ssim(fake_s, seed=seed)
    a.result["overall"].update({"real_ms_ssim": real_ms, "fake_ms_ssim": fake_ms,
                                "collapsed": is_collapsed(real_ms, fake_ms)})
    if not a.overall_only:
        for d in class_diversity(a.real, a.fake, n=n, seed=seed):
            if d["class"] in a.classes:
                a.classes[d["class"]].update({"real_ms_ssim": d["real_ms_ssim"], "fake_ms_ssim": d["fake_ms_ssim"],
                                              "collapsed": bool(d["collapsed"])})


def _memorisation_rows(result):
    o = result["overall"]
    if "copies" not in o:
        return []
    m = result["memorisation"]
    held = m.get("held_out_real_copy_rate")
    return [f"| near copies of training images | {m['copies']} of {m['checked']} ({o['copy_rate']:.1%}) | "
            f"pixel RMS < {m['thresholds']['pixel']:.4f} and feature distance < "
            f"{m['thresholds']['feature']:.3g} (each the {m['thresholds']['percentile']:g} % quantile of "
            "real-to-nearest-other-real distances)"
            + (f"; held-out real images: {held:.1%}" if held is not None else "") + " |"]


@register_check("memorisation", needs_features=True, overall_rows=_memorisation_rows,
                class_columns=lambda result: [("copies", lambda r: "–" if "copies" not in r else str(r["copies"]))],
                help="generated images that are near copies of a training image (pixels and features)")
def _memorisation(a: Assessment) -> None:
    from augkit.quality.memorisation import memorisation, save_closest_pairs

    a.say("quality: nearest real training image of each generated one")
    real_images = a.read_whole(a.real)
    fake_images = a.fake.read(a.all_fake)
    mem = memorisation(fake_images, real_images, a.fake_f[a.all_fake], a.real_f, seed=a.spec.seed)
    closest = save_closest_pairs(fake_images, real_images, mem, a.out_dir / "closest_pairs.png")
    held_out_rate = None
    if a.test is not None and len(a.test):  # the same test on real images that are certainly not copies
        pick = np.sort(np.random.default_rng([a.spec.seed, 4]).choice(len(a.test), min(len(a.test), len(a.all_fake)),
                                                                        replace=False))
        held_images = a.test.read(pick)
        held = memorisation(held_images, real_images, a.extractor.features(held_images), a.real_f,
                            thresholds=mem["thresholds"])
        held_out_rate = float(held["copy"].mean())
    a.result["memorisation"] = {
        "thresholds": mem["thresholds"], "checked": int(len(a.all_fake)), "copies": int(mem["copy"].sum()),
        "copy_rate": float(mem["copy"].mean()), "held_out_real_copy_rate": held_out_rate,
        "pixel_close": int(mem["pixel_close"].sum()), "feature_close": int(mem["feature_close"].sum()),
        "median_pixel_distance": float(np.median(mem["pixel_distance"])),
        "median_feature_distance": float(np.median(mem["feature_distance"])),
        "closest": [{"fake_row": int(a.fake.rows[a.all_fake[i]]), "real_row": int(a.real.rows[mem["pixel_index"][i]]),
                     "pixel_distance": float(mem["pixel_distance"][i]),
                     "feature_distance": float(mem["feature_distance"][i]), "copy": bool(mem["copy"][i])}
                    for i in closest],
        "grid": "closest_pairs.png"}
    a.result["overall"].update({"copies": int(mem["copy"].sum()), "copy_rate": float(mem["copy"].mean())})
    if not a.overall_only:
        sampled_labels = a.fake_labels[a.all_fake]
        for label, name in enumerate(a.real_names):
            mask = sampled_labels == label
            if mask.any():
                a.classes[name].update({"copies": int(mem["copy"][mask].sum()),
                                        "copy_rate": float(mem["copy"][mask].mean())})


def _cas_rows(result):
    o = result["overall"]
    if "cas_accuracy" in o:
        from augkit.quality.cas import describe

        ref = o.get("reference_accuracy")
        reading = (f"{describe(result['cas'])} |" if result["cas"].get("uninformative")
                   else f"train on as many real images: {number(ref)} |" if ref is not None else "|")
        return [f"| train on generated, test on real (CAS) | {number(o['cas_accuracy'])} | {reading}"]
    if isinstance(result.get("cas"), dict) and result["cas"].get("skipped"):
        return [f"| train on generated, test on real (CAS) | – | {result['cas']['skipped']} |"]
    return []


def _cas_columns(result):
    if "cas_accuracy" not in result["overall"]:
        return []
    return [("CAS recall (real-trained)", lambda r: f"{number(r.get('cas_recall'))} ({number(r.get('reference_recall'))})")]


@register_check("cas", overall_rows=_cas_rows, class_columns=_cas_columns,
                help="classification accuracy score: train on generated, test on held-out real images")
def _cas(a: Assessment) -> None:
    if a.overall_only:
        a.result["cas"] = {"skipped": "the generated images have no classes (unconditional generator)"}
        return
    if a.test is None or len(a.test) == 0:
        a.result["cas"] = {"skipped": "no held-out real images to test on (give a split with a validation part)"}
        return
    from augkit.quality.cas import CASSpec, classification_accuracy_score

    a.say(f"quality: train on generated, test on {len(a.test)} held-out real images (CAS)")
    spec = CASSpec(model=a.spec.cas_model, seed=a.spec.seed)
    spec = replace(spec, epochs=a.spec.floored_epochs(a.spec.cas_epochs, len(a.fake), spec.batch_size))
    cas_real = a.real if a.cas_real is None else a.cas_real
    test_labels = labels_in(a.test, a.real_names)
    cas = classification_accuracy_score((a.read_whole(a.fake), a.fake_labels), (a.test.read(np.arange(len(a.test))),
                                        test_labels), len(a.real_names), spec, a.device,
                                        real=(a.read_whole(cas_real), cas_real.labels.astype(np.int64)),
                                        cache_dir=None if a.cache_dir is None else Path(a.cache_dir) / "cas")
    a.result["cas"] = cas
    a.result["overall"]["cas_accuracy"] = cas["cas"]["accuracy"]
    if cas["reference"] is not None:
        a.result["overall"]["reference_accuracy"] = cas["reference"]["accuracy"]
    for label, name in enumerate(a.real_names):
        a.classes[name]["cas_recall"] = cas["cas"]["per_class_recall"][label]
        if cas["reference"] is not None:
            a.classes[name]["reference_recall"] = cas["reference"]["per_class_recall"][label]


def _two_sample_rows(result):
    if "real_vs_fake_accuracy" not in result["overall"]:
        return []
    t = result["two_sample"]
    if t.get("inconclusive"):
        from augkit.quality.two_sample import describe

        return [f"| real-vs-fake classifier, held-out accuracy | – | {describe(t, EXPERT_ACCURACY)} |"]
    return [f"| real-vs-fake classifier, held-out accuracy | {number(t['accuracy'])} "
            f"[{number(t['ci_low'])}, {number(t['ci_high'])}] | 0.5 = indistinguishable; the thesis's expert: "
            f"{EXPERT_ACCURACY}; {t['test_images']} test images, p = {t['p_value']:.2g} |"]


@register_check("two_sample", overall_rows=_two_sample_rows,
                help="a classifier trained to tell real from generated images, its held-out accuracy")
def _two_sample(a: Assessment) -> None:
    from augkit.quality.two_sample import TwoSampleSpec, real_vs_fake

    a.say("quality: real-vs-fake two-sample classifier")
    s = a.spec
    rng = np.random.default_rng([s.seed, 3])
    k = min(len(a.real), len(a.fake), s.two_sample_images)
    # it trains on half of each side (a quarter each validates and tests): k images in all
    spec = TwoSampleSpec(model=s.two_sample_model, max_per_side=s.two_sample_images, seed=s.seed)
    spec = replace(spec, epochs=s.floored_epochs(s.two_sample_epochs, k, spec.batch_size))
    ts = real_vs_fake(a.real.read(np.sort(rng.choice(len(a.real), k, replace=False))),
                      a.fake.read(np.sort(rng.choice(len(a.fake), k, replace=False))), spec, a.device)
    a.result["two_sample"] = ts
    a.result["overall"]["real_vs_fake_accuracy"] = None if ts["inconclusive"] else ts["accuracy"]


BUILTIN_CHECKS = tuple(_BUILTIN)
