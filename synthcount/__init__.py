"""synthcount: synthetic counting datasets by cut-and-paste, written to HDF5 shards.

The generator never imports torch. Data flows one way::

    sources -> transforms / placement -> compose -> shards -> reader

Quick use::

    import synthcount
    ds = synthcount.open_dataset("OUT_DIR")
    rec = ds[0]          # dict with "image", "label_map", "count", ...
"""

__version__ = "0.1.0"

from .config import DatasetConfig, SceneConfig, SourceConfig, preset  # noqa: E402
from .pack import AssetPack, ObjectAsset, load_pack, save_pack  # noqa: E402


def open_dataset(path):
    """Open a synthcount dataset folder (or a single shard file) for reading.

    See :func:`synthcount.reader.open_dataset`.
    """
    from .reader import open_dataset as _open

    return _open(path)


__all__ = [
    "__version__",
    "AssetPack",
    "DatasetConfig",
    "ObjectAsset",
    "SceneConfig",
    "SourceConfig",
    "load_pack",
    "open_dataset",
    "preset",
    "save_pack",
]
