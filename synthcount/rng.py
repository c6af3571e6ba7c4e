"""Per-image random generators.

Every image ``i`` of a dataset with root seed ``s`` draws all its random numbers from
``image_rng(s, i)``: a ``numpy.random.Generator`` seeded by
``SeedSequence(entropy=s, spawn_key=(i,))``. The image therefore depends only on
``(s, i)`` and the config, never on worker count, shard size or order of work
(the synthtiger / numpy recipe; never ``seed + worker_id``).
"""

import numpy as np

__all__ = ["image_rng"]


def image_rng(root_seed: int, index: int) -> np.random.Generator:
    """The random generator of global image ``index`` under ``root_seed``.

    Parameters
    ----------
    root_seed : int
        Dataset seed, >= 0.
    index : int
        Global image index, >= 0.
    """
    if root_seed < 0 or index < 0:
        raise ValueError(f"root_seed and index must be >= 0, got {root_seed}, {index}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=int(root_seed), spawn_key=(int(index),))))
