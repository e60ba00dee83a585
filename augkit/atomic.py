"""Writing files and folders so that a crash or kill never leaves a half-written one at the target.

Everything is written next to the target under a hidden ``.<name>.partial`` name and renamed into
place once complete; a rename within one folder is atomic on POSIX file systems.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: one fixed name per target, so a
    partial file left by a killed process is found (and replaced) by the next write there."""
    return path.with_name(f".{path.name}.partial")


def fresh_partial(path: Path) -> Path:
    """:func:`partial_path`, after removing what a killed writer left there (also the randomly named
    ``.<name>.<random>.partial`` files of augkit 0.1's writers)."""
    path = Path(path)
    for leftover in path.parent.glob(f".{glob_escape(path.name)}.*partial"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return partial_path(path)


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    tmp = partial_path(path)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_binary(path: str | Path, fill: Callable[[Any], None]) -> Path:
    """A binary file that ``fill(file)`` writes (e.g. ``lambda f: np.save(f, array)``)."""
    path = Path(path)
    tmp = partial_path(path)
    with open(tmp, "wb") as fh:
        fill(fh)
    tmp.replace(path)
    return path


def write_json(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    """``obj`` as JSON; values JSON cannot hold (paths, numpy scalars) are written as strings."""
    return write_text(path, json.dumps(obj, indent=indent, default=str))


@contextmanager
def folder(path: str | Path) -> Iterator[Path]:
    """Yields a fresh temporary folder to fill; on success it replaces ``path`` (an old folder there
    is removed), on an error it is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = partial_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    tmp.replace(path)
