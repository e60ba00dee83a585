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

#: The modules a plugin may import (a package's submodules with it); the rest of augkit may change
#: without notice. docs/plugins.md describes each; tests/test_plugin_guide.py holds the built-in plugins
#: and the guide's example to them.
PUBLIC_MODULES = (
    "augkit",                       # hookimpl and the error classes
    "augkit.errors",                # UserError, DataError, ParamError, PluginError
    "augkit.augment",               # Augmenter, Context, Samples: the interface
    "augkit.generator",             # GenerativeAugmenter: the generator contract
    "augkit.params",                # AUGMENTER_REF and the metadata of parameter fields
    "augkit.registry",              # get_augmenter, load_augmenter: other augmenters, by name or folder
    "augkit.data",                  # ImageDataset / H5Dataset: what fit() receives
    "augkit.quality.checks",        # QualityCheck, Assessment: a plugin's own quality check
    "augkit.images",                # to_input, to_uint8, save_grid
    "augkit.loading",               # fits_in_memory, stream_batches: data larger than memory
    "augkit.distributed",           # rank, world_size, is_main, wrap: torchrun-aware plugins
    "augkit.train.loop",            # Task, Streams, Cadence, run_training: the training loop
    "augkit.train.snapshots",       # SnapshotSpec, SnapshotJudge, snapshots_for: keep the best-scored snapshot
    "augkit.train.checkpoint",      # save_checkpoint, load_checkpoint (weights-only, atomic)
    "augkit.train.ema",             # EMA of a network's weights
    "augkit.train.diffaugment",     # diff_augment: differentiable augmentation for a discriminator
    "augkit.train.losses",          # GAN objectives as terms with D and G phases
    "augkit.train.gan",             # GANConfig, GANTask, train_gan: a GAN plugin's shortcut
    "augkit.train.encoder",         # train_encoder: E with G(E(x)) ~ x, for latent-space augmenters
)
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def augkit_augmenters():  # -> list[type[Augmenter]] | dict[str, type[Augmenter]]
    """Return the Augmenter subclasses this plugin provides (a list, or a dict keyed by their name)."""


@hookspec
def augkit_quality_checks():  # -> list[augkit.quality.checks.QualityCheck]
    """Return quality checks this plugin adds to `augkit quality` and recipes' ``[quality]`` (by name in
    ``checks``): each computes its numbers into the assessment and gives its rows of the report."""
