"""Exceptions that the CLI turns into one-line messages instead of tracebacks.

Anything derived from UserError is the user's to fix (a path, a value, a file's contents): the CLI
prints it and exits with code 2. A PluginError means installed code misbehaved: it names the
plugin and its distribution so the user knows whom to ask, and exits with code 1.
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
