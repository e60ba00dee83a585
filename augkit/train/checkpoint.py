"""Checkpoints for long training runs: written atomically, read without running code, resumed exactly.

* Atomic: the checkpoint is written to a temporary file beside ``path`` and moved over it with
  ``os.replace``, so a run killed while saving leaves the previous checkpoint, never half a file.
* Safe to load: files are read with ``torch.load(weights_only=True)``, which refuses pickles that
  would run code. So a checkpoint holds only tensors, containers and plain Python values; the RNG
  states that are not like that (numpy's) are stored as JSON strings.
* Exact resume: :func:`rng_state` captures every random number generator a run draws from.
* Marked: ``{"augkit_checkpoint": 1, "kind": ...}`` lets a trainer refuse another trainer's file.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augkit.atomic import fresh_partial
from augkit.errors import DataError

FORMAT_VERSION = 1
MARKER = "augkit_checkpoint"

# what torch.load(weights_only=True) rebuilds without an allowlist (exact types: subclasses such as
# numpy scalars, namedtuples or defaultdicts are refused by the loader)
_SCALARS = (str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device, torch.Size)
_TENSORS = (torch.Tensor, torch.nn.Parameter)
_CONTAINERS = (dict, OrderedDict, list, tuple, set)

# weights_only's messages for a pickle that needs code (as opposed to a corrupt file)
_NEEDS_CODE = re.compile(
    r"GLOBAL (\S+) was not an allowed global|unsupported GLOBAL (\S+)|call reduce for unrecognized function"
    r"|Can only create new object|Can only build"
)


# ---- RNG state ------------------------------------------------------------------------------------

def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in an RNG state")


def _json_hook(obj: dict) -> Any:
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    return obj


def _to_json(state: dict) -> str:
    # numpy states hold arrays and 128-bit ints: JSON keeps both exactly, weights_only loads strings
    return json.dumps(state, default=_json_default)


def _from_json(text: str) -> dict:
    return json.loads(text, object_hook=_json_hook)


def rng_state(
    np_rng: np.random.Generator | None = None,
    generators: dict[str, torch.Generator] | None = None,
) -> dict:
    """Every RNG state a run draws from: Python's, numpy's global and ``np_rng``, torch's CPU and CUDA
    ones and the named ``generators``; storable in a weights-only checkpoint."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _to_json(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if np_rng is not None:
        state["np_rng"] = _to_json(np_rng.bit_generator.state)
    return state


def restore_rng_state(
    state: dict,
    np_rng: np.random.Generator | None = None,
    generators: dict[str, torch.Generator] | None = None,
) -> None:
    """Put back what :func:`rng_state` captured; ``np_rng`` and ``generators`` are set in place.

    CUDA states are restored for the devices present (a CPU-only resume skips them).
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(_from_json(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
    if np_rng is not None:
        if "np_rng" not in state:
            raise DataError("the checkpoint holds no numpy Generator state to restore")
        saved = _from_json(state["np_rng"])
        expected = type(np_rng.bit_generator).__name__
        if saved.get("bit_generator") != expected:
            raise DataError(f"the checkpoint's numpy Generator is {saved.get('bit_generator')}, not {expected}")
        np_rng.bit_generator.state = saved
    saved_generators = state.get("generators", {})
    for name, generator in (generators or {}).items():
        if name not in saved_generators:
            raise DataError(f"the checkpoint holds no state for torch Generator '{name}'")
        generator.set_state(saved_generators[name])


# ---- saving and loading ---------------------------------------------------------------------------

def _check_storable(obj: Any, where: str) -> None:
    """Fail at save time, not hours later at resume time, on values weights_only cannot load."""
    kind = type(obj)
    if kind in _SCALARS or kind in _TENSORS:
        return
    if kind in _CONTAINERS:
        if isinstance(obj, dict):
            for key, value in obj.items():
                _check_storable(key, f"{where} key {key!r}")
                _check_storable(value, f"{where}[{key!r}]")
        else:
            for i, value in enumerate(obj):
                _check_storable(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint value {where} is a {kind.__module__}.{kind.__qualname__}; a weights-only checkpoint holds "
        "only tensors, dicts, lists, tuples, str, int, float, bool and None (convert it, e.g. .item() or json.dumps)"
    )


def save_checkpoint(path: str | Path, state: dict, *, kind: str | None = None) -> Path:
    """Write ``state`` atomically to ``path`` with the augkit marker; returns the path.

    ``kind`` names the trainer that can resume it (e.g. ``"acgan"``); give it here or as ``state["kind"]``.
    """
    path = Path(path)
    kind = kind if kind is not None else state.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError("save_checkpoint: give the checkpoint's kind (kind=... or state['kind'])")
    if state.get("kind", kind) != kind:
        raise ValueError(f"save_checkpoint: kind '{kind}' differs from state['kind'] '{state['kind']}'")
    payload = {MARKER: FORMAT_VERSION, **state, "kind": kind}
    _check_storable(payload, "state")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_partial(path)  # a leftover of a killed save is removed, not piled up
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, kind: str) -> dict:
    """Read a checkpoint that :func:`save_checkpoint` wrote for ``kind``; tensors land on the CPU.

    Returns the saved state, marker and kind included. Anything else (missing, corrupt, a pickle that
    needs code, another trainer's or a non-augkit checkpoint) is a DataError naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise DataError(f"{path}: is not a file, so not a checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _NEEDS_CODE.search(str(exc))
        if found:
            name = next((g for g in found.groups() if g), None)
            what = f" (it would call {name})" if name else ""
            raise DataError(f"{path}: refusing to load: not a weights-only checkpoint{what}; "
                            "loading it would run code from the file") from exc
        raise DataError(f"{path}: not a readable torch checkpoint (corrupt or not a torch file)") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read checkpoint: {exc.strerror or exc}") from exc
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ValueError... on bad bytes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable torch checkpoint (corrupt, truncated or not a torch file): "
                        f"{first}") from exc
    if not isinstance(obj, dict) or MARKER not in obj:
        raise DataError(f"{path}: foreign checkpoint (no augkit marker); expected an augkit '{kind}' checkpoint")
    if not isinstance(obj[MARKER], int) or obj[MARKER] > FORMAT_VERSION:
        raise DataError(f"{path}: checkpoint format {obj[MARKER]!r} is newer than this augkit reads "
                        f"({FORMAT_VERSION}); update augkit")
    if obj.get("kind") != kind:
        raise DataError(f"{path}: foreign checkpoint: it is a '{obj.get('kind')}' checkpoint, expected '{kind}'")
    return obj
