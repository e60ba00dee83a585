"""Progress bars for long work, shared by the library and the CLI.

Library code says ``with track("Importing", total) as advance: ... advance(k)``; the CLI's
``--quiet`` (or ``set_quiet(True)`` in a pipeline) silences every bar at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


@contextmanager
def track(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Show a bar for ``total`` units of work; yields ``advance(n)``."""
    if _quiet:
        yield lambda n=1: None
        return
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        _RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
