"""augkit's classical augmenter: rotation, zoom, flips and optional colour jitter (albumentations).

Registered through the ``augkit`` entry-point group in augkit's pyproject, the same way a
third-party plugin registers, so the built-ins get no special treatment.
"""

from augkit import hookimpl
from augkit_classical.augmenter import ClassicalAugmenter

__all__ = ["ClassicalAugmenter"]


@hookimpl
def augkit_augmenters():
    return [ClassicalAugmenter]
