"""Per-image random generators.

Every image ``i`` of a dataset with root seed ``s`` draws all its random numbers from
``image_rng(s, i)``: a ``numpy.random.Generator`` seeded by
``SeedSequence(entropy=s, spawn_key=(i,))``. The image therefore depends only on
``(s, i)`` and the config, never on worker count, shard size or order of work
(the synthtiger / numpy recipe; never ``seed + worker_id``).

Options added after synthcount 0.1.0 draw from child streams of the image,
``image_rng(s, i, stream)`` with ``spawn_key=(i, stream)`` (``DISTRACTOR_STREAM``,
``EXEMPLAR_STREAM``), so that turning them on never moves a random number of the
main stream, and an image made without them keeps every pixel.
"""

import numpy as np

__all__ = ["image_rng", "uniform_from", "DISTRACTOR_STREAM", "EXEMPLAR_STREAM"]

DISTRACTOR_STREAM = 1  # distractors: their number, objects, transforms and positions
EXEMPLAR_STREAM = 2    # the choice of exemplar boxes among the targets


def image_rng(root_seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random generator of global image ``index`` under ``root_seed``.

    Parameters
    ----------
    root_seed : int
        Dataset seed, >= 0.
    index : int
        Global image index, >= 0.
    stream : int
        0: the image's main stream (``spawn_key=(index,)``); k > 0: its child stream
        k (``spawn_key=(index, k)``), independent of the main stream.
    """
    if root_seed < 0 or index < 0 or stream < 0:
        raise ValueError(f"root_seed, index and stream must be >= 0, got {root_seed}, {index}, {stream}")
    key = (int(index),) if stream == 0 else (int(index), int(stream))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=int(root_seed), spawn_key=key)))


def uniform_from(u, lo: float, hi: float):
    """``lo + (hi - lo) * u``: what ``Generator.uniform(lo, hi)`` makes of each double
    that ``Generator.random`` draws. Drawing ``random(k)`` once and scaling gives the
    numbers of k ``uniform`` calls in a row (and leaves the same stream behind), so a
    caller can batch its draws without moving a pixel.
    """
    return lo + (hi - lo) * u
