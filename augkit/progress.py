"""Progress bars for long work, shared by the library and the CLI.

Library code says ``with track("Importing", total) as advance: ... advance(k)``; the CLI's
``--quiet`` (or ``set_quiet(True)`` in a pipeline) silences every bar at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rich.text import Text

from augkit.distributed import env_rank

_quiet = False
console = Console(stderr=True)


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


class _RateColumn(ProgressColumn):
    """Items per second, blank until rich has measured it."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f}/s" if task.speed else "", style="cyan")


class Bar:
    """What ``track`` yields: call it to advance, ``note(text)`` to show live numbers (loss, F1)."""

    def __init__(self, progress: Progress | None = None, task=None):
        self._progress, self._task = progress, task

    def __call__(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, note=text)


@contextmanager
def track(description: str, total: int | None) -> Iterator[Bar]:
    """Show a bar for ``total`` units of work; yields a :class:`Bar`. Under torchrun only rank 0 shows bars."""
    if _quiet or env_rank() != 0:
        yield Bar()
        return
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        _RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        yield Bar(progress, progress.add_task(description, total=total, note=""))
