"""The ``augkit`` command group and its error boundary.

User mistakes end with one line on stderr and exit code 2; a misbehaving plugin with exit code 1
and the plugin's name; ``--traceback`` shows the full story for bug reports.
"""

from __future__ import annotations

import click
from rich.markup import escape

from augkit import __version__, distributed
from augkit.cli.common import err
from augkit.errors import AugkitError, Paused
from augkit.progress import set_quiet


class AugkitGroup(click.Group):
    """Turns augkit's own errors into one-line messages with the right exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Paused as exc:
            # not a failure: the budget ran out with a checkpoint; the message says how to continue
            err.print(f"[yellow]paused[/]: {escape(str(exc))}", highlight=False, soft_wrap=True)
            ctx.exit(exc.exit_code)
        except AugkitError as exc:
            if ctx.obj and ctx.obj.get("traceback"):
                raise
            self._fail(ctx, str(exc), exc.exit_code, exc)
        except click.UsageError as exc:
            # a mistyped option or a value out of its range: one line that names it, as every user error
            command = exc.ctx.command_path if exc.ctx is not None else "augkit"
            self._fail(ctx, f"{exc.format_message()} (see `{command} --help`)", 2, exc)
        except OSError as exc:
            # the file system refused (permission, missing folder, disk full): the user's to fix, so one
            # line with the path and exit 2, not a traceback
            if ctx.obj and ctx.obj.get("traceback"):
                raise
            where = exc.filename if exc.filename is not None else "a file"
            self._fail(ctx, f"{where}: {exc.strerror or exc}", 2, exc)
        except KeyboardInterrupt as exc:
            # training loops say where they stopped and how to continue; writers leave nothing behind
            err.print(f"[yellow]interrupted[/]: {escape(str(exc) or 'nothing was written at the output path')}",
                      highlight=False)
            ctx.exit(130)

    @staticmethod
    def _fail(ctx: click.Context, message: str, code: int, exc: BaseException):
        if distributed.should_report(exc):  # under torchrun: once, by the rank that failed
            where = f"rank {distributed.rank()}: " if distributed.rank() else ""
            err.print(f"[bold red]error:[/] {escape(where + message)}", highlight=False, soft_wrap=True)
        ctx.exit(code)


@click.group(cls=AugkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="augkit")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--traceback", is_flag=True, envvar="AUGKIT_TRACEBACK", help="Show full tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, traceback: bool) -> None:
    """augkit: augment white-blood-cell image datasets and measure whether it helped."""
    ctx.obj = {"traceback": traceback}
    set_quiet(quiet)
