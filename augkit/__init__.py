"""augkit: augment white-blood-cell image datasets and prove, with a classifier, whether it helped.

The public surface is small on purpose; import from the submodules for the rest:

    from augkit.data import DatasetWriter, H5Dataset, import_source, stratified_split
    from augkit.augment import Augmenter, Context, Samples
    from augkit.registry import get_augmenter, list_plugins
"""

__version__ = "0.1.0"

from augkit.errors import AugkitError, DataError, ParamError, PluginError, UserError  # noqa: E402
from augkit.hookspecs import hookimpl  # noqa: E402

__all__ = [
    "__version__",
    "AugkitError",
    "DataError",
    "ParamError",
    "PluginError",
    "UserError",
    "hookimpl",
]
