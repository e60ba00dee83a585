"""Exceptions that the CLI turns into one-line messages instead of tracebacks.

Anything derived from UserError is the user's to fix (a path, a value, a file's contents): the CLI
prints it and exits with code 2. A PluginError means installed code misbehaved: it names the
plugin and its distribution so the user knows whom to ask, and exits with code 1. Paused is no error:
a training budget ran out with a checkpoint saved, and the same command with --resume continues
(exit code 3, so a script can tell "not finished yet" from "done" and from "failed").
"""


class AugkitError(Exception):
    """Base of every error augkit raises on purpose."""

    exit_code = 1


class UserError(AugkitError):
    """Bad input: the message names the file, field or value and what was expected."""

    exit_code = 2


class DataError(UserError):
    """A dataset or image source that cannot be used as it is."""


class ParamError(UserError):
    """An augmenter parameter (or other typed option) with a wrong name, type or value."""


class PluginError(AugkitError):
    """An installed plugin failed to load, returned something unusable, or raised while working."""


class Paused(AugkitError):
    """Training stopped at its wall-time budget, with a checkpoint to continue from; nothing that needs
    the finished run (the saved augmenter, the cache, images) was written."""

    exit_code = 3
