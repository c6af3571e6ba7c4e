"""synthcount: synthetic counting datasets by cut-and-paste, written to HDF5 shards.

The generator never imports torch. Data flows one way::

    sources -> transforms / placement -> compose -> shards -> reader

Quick use::

    import synthcount
    synthcount.generate_dataset("OUT_DIR", synthcount.DatasetConfig(num_images=1000))
    ds = synthcount.open_dataset("OUT_DIR")
    rec = ds[0]          # dict with "image", "label_map", "count", ...
    synthcount.export_dataset("OUT_DIR", "OUT_COCO", "coco")

Library messages go to ``logging.getLogger("synthcount")`` (silent unless the
application configures logging); progress bars are off in the Python API and on in
the command line. The torch datasets over shards (``CountingDataset``) are in ``vae.counting``.
"""

import logging as _logging

__version__ = "0.2.0"

from .config import DatasetConfig, SceneConfig, SourceConfig, preset  # noqa: E402
from .pack import AssetPack, ObjectAsset, load_pack, save_pack  # noqa: E402

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

# Imported on first use (PEP 562): ``import synthcount`` stays light (no OpenCV, no h5py).
_LAZY = {"generate_dataset": ".generate", "GenerateResult": ".generate", "export_dataset": ".export",
         "visual_properties": ".properties"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'synthcount' has no attribute {name!r}")


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
    "GenerateResult",
    "ObjectAsset",
    "SceneConfig",
    "SourceConfig",
    "export_dataset",
    "generate_dataset",
    "load_pack",
    "open_dataset",
    "preset",
    "save_pack",
    "visual_properties",
]
