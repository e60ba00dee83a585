"""The hooks a plugin may implement: the whole contract between augkit and its plugins.

A plugin is any importable module (or object) named by an entry point in the ``augkit`` group of
its distribution's metadata::

    [project.entry-points.augkit]
    mygan = "augkit_mygan"

and that module implements hooks below, marked with ``@augkit.hookimpl``. augkit's own augmenters
(plugins/) register exactly this way.
"""

from __future__ import annotations

import pluggy

PROJECT = "augkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def augkit_augmenters():  # -> list[type[Augmenter]] | dict[str, type[Augmenter]]
    """Return the Augmenter subclasses this plugin provides (a list, or a dict keyed by their name)."""
