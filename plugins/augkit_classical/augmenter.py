"""Classical augmentation: each new image is a real training image rotated, zoomed and flipped.

The thesis found this adds little variety compared with generative augmenters; augkit keeps it as
the baseline every other augmenter must beat. Defaults keep the cell in view: blood-cell images are
rotation-invariant, so any angle is fair, but zoom stays within +/-15% so the cell is never cut off,
and borders are mirrored so no black corners appear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import albumentations as A
import cv2
import numpy as np

from augkit.augment import Augmenter, Context, Samples, require_fitted
from augkit.data.reader import ImageDataset
from augkit.errors import UserError

BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}


@dataclass(frozen=True)
class ClassicalParams:
    rotate: float = field(default=180.0, metadata={"min": 0, "max": 180, "help": "largest rotation, degrees (+/-)"})
    zoom: tuple[float, float] = field(default=(0.9, 1.15), metadata={"min": 0.5, "max": 2.0,
                                                                     "help": "scale range (1 = unchanged)"})
    translate: float = field(default=0.05, metadata={"min": 0, "max": 0.3,
                                                     "help": "largest shift, fraction of the image side"})
    hflip: bool = field(default=True, metadata={"help": "random horizontal flips"})
    vflip: bool = field(default=True, metadata={"help": "random vertical flips"})
    color_jitter: float = field(default=0.0, metadata={"min": 0, "max": 0.5,
                                                       "help": "brightness/contrast/saturation jitter; 0 = off"})
    hue_jitter: float = field(default=0.0, metadata={"min": 0, "max": 0.5, "help": "hue jitter; 0 = off"})
    border: Literal["reflect", "replicate", "constant"] = field(default="reflect",
                                                               metadata={"help": "how corners are filled"})

    def __post_init__(self) -> None:
        if self.zoom[0] > self.zoom[1]:
            raise ValueError(f"parameter 'zoom' must be (low, high) with low <= high, got {self.zoom}")


class ClassicalAugmenter(Augmenter):
    """Rotate / zoom / flip real training images of the requested class."""

    name = "classical"
    Params = ClassicalParams
    summary = "rotation, zoom, flips and optional colour jitter of real images (albumentations)"

    def __init__(self, params=None):
        super().__init__(params)
        self._train: ImageDataset | None = None
        self._by_class: list[np.ndarray] = []
        p = self.params
        transforms = [
            A.Affine(rotate=(-p.rotate, p.rotate), scale=p.zoom, translate_percent=(-p.translate, p.translate),
                     border_mode=BORDERS[p.border], fill=0, interpolation=cv2.INTER_LINEAR, p=1.0),
        ]
        if p.hflip:
            transforms.append(A.HorizontalFlip(p=0.5))
        if p.vflip:
            transforms.append(A.VerticalFlip(p=0.5))
        if p.color_jitter > 0 or p.hue_jitter > 0:
            j = p.color_jitter
            transforms.append(A.ColorJitter(brightness=(1 - j, 1 + j), contrast=(1 - j, 1 + j),
                                            saturation=(1 - j, 1 + j), hue=(-p.hue_jitter, p.hue_jitter), p=1.0))
        self._pipeline = A.Compose(transforms, seed=0)

    def fit(self, train: ImageDataset, ctx: Context) -> None:
        """Nothing to learn: remember the training images of each class (no pixels are read)."""
        self._train = train
        labels = train.labels
        self._by_class = [np.flatnonzero(labels == k) for k in range(train.num_classes)]

    def generate(self, label: int, n: int, ctx: Context) -> Samples:
        train = require_fitted(self, "_train")
        if not 0 <= label < len(self._by_class) or len(self._by_class[label]) == 0:
            raise UserError(f"augmenter 'classical': class {label} has no training images to transform")
        members = self._by_class[label]
        # walk through the class in a shuffled order so parents are spread evenly, repeating only
        # when more images are asked for than the class has
        rounds = -(-n // len(members))
        positions = np.concatenate([ctx.rng.permutation(members) for _ in range(rounds)])[:n]
        parents_images = train.read(positions)
        self._pipeline.set_random_seed(int(ctx.rng.integers(2**31 - 1)))
        images = np.stack([self._pipeline(image=img)["image"] for img in parents_images])
        return Samples(images=images, parents=train.rows[positions])
