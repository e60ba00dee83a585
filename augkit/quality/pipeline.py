"""`augkit quality` from files: pick the real training rows, get the extractor, assess, write atomically.

Shared by the CLI and the recipe runner so both choose rows the same way: with a split, the real
images are its training rows (never test rows), the extractor is validated on its validation rows and
the classification accuracy score is measured on them; without one, all real rows are the reference
and a stratified 15 % of them (seed 0) is held out for validation and the score.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from augkit import atomic
from augkit.data.reader import H5Dataset, ImageDataset
from augkit.data.split import Split, stratified_split
from augkit.errors import DataError, UserError
from augkit.quality.assess import QualitySpec, assess, check_compatible
from augkit.quality.features import ExtractorSpec, extractor_for
from augkit.quality.report import write_quality_report

__all__ = ["quality_cache", "real_parts", "generated_rows", "extractor_of", "assess_to_folder"]


def quality_cache() -> Path:
    """Trained extractors and cached features live next to the model cache."""
    from augkit.cache import cache_root

    return cache_root() / "quality"


def real_parts(base: H5Dataset, split: Split | None) -> tuple[ImageDataset, ImageDataset, ImageDataset, str]:
    """(reference real images, real images the extractor and the CAS reference train on, held-out real
    images for their validation and for CAS, a phrase saying which rows are the reference)."""
    if split is not None:
        train = split.apply(base, "train")
        return train, train, split.apply(base, "val"), "the split's training rows"
    real = base.real()
    if len(real) == 0:
        raise DataError(f"{base.path}: holds no real images")
    held = stratified_split(real, {"train": 0.85, "val": 0.15}, seed=0, use_fixed=False)
    return real, held.apply(base, "train"), held.apply(base, "val"), "all real rows (no --split)"


def generated_rows(fake: H5Dataset) -> ImageDataset:
    """The synthetic rows of a shard or of a merged augmented file (its real rows are left out)."""
    rows = fake.subset(np.flatnonzero(fake.origin != 0)) if len(fake.origins) > 1 else fake
    if len(rows) == 0:
        raise DataError(f"{fake.path}: holds no generated images (only real rows)")
    return rows


def extractor_of(spec: QualitySpec, fit: ImageDataset, held: ImageDataset, device: str, say=lambda line: None):
    """The feature extractor ``spec`` asks for: trained on ``fit`` (epoch chosen on ``held``), cached on disk."""
    base = ExtractorSpec(seed=spec.seed)
    epochs = spec.floored_epochs(spec.epochs, len(fit), base.batch_size)
    return extractor_for(spec.features, fit, held, dataclasses.replace(base, epochs=epochs),
                         quality_cache() / "extractors", device, say)


def assess_to_folder(real_path: Path, fake_path: Path, out_dir: Path, spec: QualitySpec, *,
                     split: Split | None = None, device: str = "cpu", overall_only: bool = False,
                     title: str | None = None, extractor=None, say=lambda line: None) -> dict:
    """Assess ``fake_path`` against ``real_path`` and write ``out_dir`` (quality.json, quality.md, grids)
    atomically: an error or Ctrl-C leaves nothing at ``out_dir``. Returns the result."""
    base, fake = H5Dataset(real_path), H5Dataset(fake_path)
    real, fit, held, which = real_parts(base, split)
    generated = generated_rows(fake)
    check_compatible(real, generated, str(real_path), str(fake_path), overall_only)
    if len(held) == 0:
        raise UserError(f"{real_path}: no held-out real images (the split's validation part is empty)")
    cache = quality_cache()
    if extractor is None:
        extractor = extractor_of(spec, fit, held, device, say)
    say(f"quality: {len(generated)} generated images of {fake_path} against {len(real)} real images ({which})")
    with atomic.folder(out_dir) as tmp:
        tmp.mkdir(parents=True)
        result = assess(real, generated, extractor, spec, tmp, device=device, test=held, cas_real=fit,
                        cache_dir=cache, overall_only=overall_only, say=say)
        result["real"] = {"path": str(real_path), "fingerprint": base.info.fingerprint, "rows": which}
        result["fake"] = {"path": str(fake_path), "fingerprint": fake.info.fingerprint}
        write_quality_report(result, tmp, title or f"Generative quality of {Path(fake_path).name}")
    return result
