"""Progress bars for long work, shared by the library and the CLI.

Library code says ``with track("Importing", total) as advance: ... advance(k)``; the CLI's
``--quiet`` (or ``set_quiet(True)`` in a pipeline) silences every bar at once. On a terminal a bar
redraws in place; when stderr is a file or a pipe (a log, `nohup`, CI), work that lasts more than a few
seconds writes a line every ``LOG_EVERY_S`` seconds or tenth of the work instead: stage, done/total,
rate, elapsed time, ETA and the live note.
"""

from __future__ import annotations

import time
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

from augkit import interrupt
from augkit.distributed import env_rank

_quiet = False
console = Console(stderr=True)
LOG_FIRST_S = 5.0  # a log line only for work that lasts longer than this
LOG_EVERY_S = 10.0
_sinks: list = []  # extra places progress lines go (a run's run.log), see also_log


@contextmanager
def also_log(write) -> Iterator[None]:
    """While inside, every bar also writes its log lines to ``write(line)`` (e.g. a run's log file),
    whether or not stderr is a terminal."""
    _sinks.append(write)
    try:
        yield
    finally:
        _sinks.remove(write)


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def format_rate(rate: float | None) -> str:
    """Items per second with a precision that suits it: 1,234/s, 12.3/s, 1.23/s, 4.5/min."""
    if not rate:
        return ""
    if rate >= 100:
        return f"{rate:,.0f}/s"
    if rate >= 10:
        return f"{rate:.1f}/s"
    if rate >= 1:
        return f"{rate:.2f}/s"
    return f"{60 * rate:.2g}/min" if rate * 60 >= 1 else f"{3600 * rate:.2g}/h"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class _RateColumn(ProgressColumn):
    """Items per second, blank until rich has measured it."""

    def render(self, task) -> Text:
        return Text(format_rate(task.speed), style="cyan")


class Bar:
    """What ``track`` yields: call it to advance, ``note(text)`` to show live numbers (loss, F1)."""

    def __init__(self, progress: Progress | None = None, task=None):
        self._progress, self._task = progress, task

    def __call__(self, n: int = 1) -> None:
        interrupt.check()  # a safe point: a SIGTERM swallowed elsewhere stops the work here
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, note=text)


class LogBar(Bar):
    """A bar for output that is not a terminal: a line now and then instead of a redrawn bar."""

    def __init__(self, description: str, total: int | None, clock=time.monotonic, write=None, done: int = 0):
        super().__init__()
        self.description, self.total, self._clock = description, total, clock
        self._write = write or (lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
        self.done, self._before, self._note = done, done, ""
        self.start = self._last = clock()
        self._last_fraction, self.lines = 0.0, 0

    def __call__(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now - self.start < LOG_FIRST_S:
            return
        fraction = (self.done - self._before) / self.total if self.total else 0.0
        if now - self._last >= LOG_EVERY_S or fraction - self._last_fraction >= 0.1 or self.lines == 0:
            self._line(now)

    def note(self, text: str) -> None:
        self._note = text

    def close(self) -> None:
        """The last line, for work that wrote any (short work stays silent)."""
        if self.lines:
            self._line(self._clock(), final=True)

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.start
        rate = (self.done - self._before) / elapsed if elapsed > 0 else None
        left = (self.total - self.done) / rate if rate and self.total else None
        of = f"{self.done}/{self.total}" + (f" ({self.done / self.total:.0%})" if self.total else "")
        parts = [f"{self.description}: {of}", format_rate(rate), f"elapsed {format_duration(elapsed)}",
                 "done" if final else f"ETA {format_duration(left)}", self._note]
        self._write("  ".join(p for p in parts if p))
        self._last, self.lines = now, self.lines + 1
        self._last_fraction = (self.done - self._before) / self.total if self.total else 0.0


class _Both(Bar):
    """Advances and notes go to every bar it holds."""

    def __init__(self, bars: list[Bar]):
        super().__init__()
        self.bars = bars

    def __call__(self, n: int = 1) -> None:
        interrupt.check()
        for bar in self.bars:
            bar(n)

    def note(self, text: str) -> None:
        for bar in self.bars:
            bar.note(text)


@contextmanager
def track(description: str, total: int | None, done: int = 0) -> Iterator[Bar]:
    """Show a bar for ``total`` units of work; yields a :class:`Bar`. Under torchrun only rank 0 shows bars.
    ``--quiet`` silences the terminal, not a run's log (:func:`also_log`). ``done`` units were done
    before (a resumed run): they fill the bar but are not counted in its rate and ETA."""
    if env_rank() != 0:
        yield Bar()
        return
    logs = [LogBar(description, total, write=lambda line: [sink(line) for sink in list(_sinks)], done=done)] \
        if _sinks else []
    try:
        if _quiet:
            yield _Both(logs)
        elif not console.is_terminal:
            logs.append(LogBar(description, total, done=done))
            yield _Both(logs)
        else:
            columns = [
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                _RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
            ]
            with Progress(*columns, console=console, transient=False) as progress:
                yield _Both([Bar(progress, progress.add_task(description, total=total, completed=done, note="")), *logs])
    finally:
        for bar in logs:
            bar.close()
