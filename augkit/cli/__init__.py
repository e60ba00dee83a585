"""The ``augkit`` command line: run recipes; import, inspect, export, augment and evaluate datasets.

One module per command group (data, augmenters, evaluate, quality, expert, run), the options they share
in :mod:`augkit.cli.common`, and the error boundary in :mod:`augkit.cli.app`. The commands parse and
print; what they do lives in the library.
"""

from __future__ import annotations

import signal

from augkit import distributed, interrupt
from augkit.cli.app import cli
from augkit.cli.augmenters import augment_cmd, interpolate_cmd, plugins_cmd, train_cmd
from augkit.cli.data import data
from augkit.cli.evaluate import evaluate_cmd
from augkit.cli.expert import expert_test_cmd
from augkit.cli.quality import quality_cmd
from augkit.cli.run import run_cmd

for command in (data, plugins_cmd, train_cmd, augment_cmd, interpolate_cmd, evaluate_cmd, quality_cmd,
                expert_test_cmd, run_cmd):
    cli.add_command(command)

__all__ = ["cli", "main"]


def main() -> None:
    # `kill` becomes an exception, so writers remove their temporary files on the way out
    signal.signal(signal.SIGTERM, interrupt.on_sigterm)
    try:
        cli(prog_name="augkit")
        code: int | str | None = 0
    except SystemExit as exc:  # click ends every command this way
        code = exc.code
    except BaseException:
        distributed.cleanup()
        raise
    distributed.end_process(code)  # under torchrun: without interpreter teardown (see there)


if __name__ == "__main__":
    main()
