"""What every command shares: the consoles, the options that recur, and small argument helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from augkit import distributed
from augkit.errors import UserError

# piped output (grep, files, tests) gets wide lines instead of tables cut at 80 columns
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DEVICE = click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present).")
SYNC_BN = click.option("--sync-bn", is_flag=True,
                       help="Under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm).")
PARAMS = click.option("--param", "params", multiple=True, help="Augmenter parameter key=value (repeatable).")


def force(what: str = "OUT"):
    """--force: replace an existing output (``what`` names it in the help)."""
    return click.option("--force", is_flag=True, help=f"Replace {what} if it exists.")


def seed(help: str | None = None):  # noqa: A002 - click's own keyword
    return click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help=help)


def out_path(path: Path, force: bool) -> Path:
    """An output file that may be written: it does not exist (or ``force``) and its folder does."""
    if path.exists() and not force:
        raise UserError(f"{path}: already exists; pass --force to replace it")
    if not path.parent.exists():
        raise UserError(f"{path.parent}: output folder does not exist")
    return path


def parse_param(text: str, option: str = "--param") -> tuple[str, object]:
    """``key=value`` with a TOML value (numbers, true/false, [lists], "strings"); bare words are strings."""
    from augkit.recipe import parse_value

    if "=" not in text:
        raise UserError(f"{option} '{text}': expected key=value")
    key, raw = text.split("=", 1)
    return key.strip(), parse_value(raw.strip())


def context(seed: int, device: str | None, workdir: Path | None, resume: bool = False, sync_bn: bool = False):
    """The augmenter's context; under torchrun this also starts the process group (see augkit.distributed)."""
    from augkit.augment import Context

    return Context(seed=seed, device=distributed.setup(device, sync_batchnorm=sync_bn), workdir=workdir,
                   resume=resume)


def say(*args, **kwargs) -> None:
    """Print a result line (rank 0 only under torchrun)."""
    if distributed.is_main():
        out.print(*args, **kwargs)
