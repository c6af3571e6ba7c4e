"""Built-in asset packs (no download): textured shapes and scikit-image cut-outs,
texture backgrounds, and binary white-on-black stimuli. See ``builtin``."""

from .builtin import BUILTIN_SEED, binary_backgrounds, binary_objects, builtin_backgrounds, builtin_objects

__all__ = ["BUILTIN_SEED", "builtin_objects", "builtin_backgrounds", "binary_objects", "binary_backgrounds"]
