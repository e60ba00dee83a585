"""Where trained models are cached, and the one way augkit names a cached result.

A cache key is a short digest of everything the result depends on (settings, data fingerprints, seeds,
and for results computed from arrays, their bytes). Every cache in augkit names its entries with
:func:`cache_key`, so a key's length and its treatment of non-JSON values are the same everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

KEY_LENGTH = 20  # hex digits: 80 bits, no collision in any cache a team will fill
#: the model cache's folder of finished classifier runs, which recipes and `augkit evaluate` share
CLASSIFIER_RUNS = "classifier-runs"


def cache_root() -> Path:
    """Where trained augmenters are cached: $AUGKIT_CACHE_DIR, else $XDG_CACHE_HOME/augkit/models
    (~/.cache/augkit/models)."""
    env = os.environ.get("AUGKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "augkit" / "models"


def cache_key(record, *arrays: np.ndarray) -> str:
    """A digest of ``record`` (JSON with sorted keys; other values by ``str``) and of each array's shape,
    dtype and bytes."""
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:KEY_LENGTH]
