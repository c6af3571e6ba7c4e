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

``ImageStreams(s, stream).at(i)`` returns a generator in the very state that
``image_rng(s, i, stream)`` starts in (one reused generator per stream, its starting
states computed for blocks of images at once): the compositor's hot path, where a
``SeedSequence`` per image costs more than some whole placement searches.
"""

from typing import Dict, List, Tuple

import numpy as np

__all__ = ["image_rng", "ImageStreams", "uniform_from", "DISTRACTOR_STREAM", "EXEMPLAR_STREAM"]

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


# SeedSequence's constants (O'Neill's seed_seq design as numpy implements it) and
# PCG64's 128-bit LCG multiplier: ImageStreams computes what
# PCG64(SeedSequence(entropy=s, spawn_key=(i, ...))) starts from, many indices at once.
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_M32, _M128 = 0xFFFFFFFF, (1 << 128) - 1
_PCG_MULT = (2549297995355413924 << 64) + 4865540595714422341
_POOL = 4
_BLOCK = 256  # indices whose starting states are computed together


def _words(n: int) -> List[int]:
    """``n`` >= 0 as 32-bit words, lowest first (0 is one word), as SeedSequence reads it."""
    out = [n & _M32]
    n >>= 32
    while n:
        out.append(n & _M32)
        n >>= 32
    return out


class _Hash:
    """SeedSequence's multiplicative hash; its constant advances with every use,
    the same for every lane, so it is a Python int beside uint32 arrays."""

    def __init__(self, init: int, mult: int):
        self.c, self.mult = init, mult

    def __call__(self, v: np.ndarray) -> np.ndarray:
        v = v ^ np.uint32(self.c)
        self.c = (self.c * self.mult) & _M32
        v = v * np.uint32(self.c)
        return v ^ (v >> np.uint32(16))


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
    return r ^ (r >> np.uint32(16))


def _pcg64_starts(root_seed: int, indices: np.ndarray, stream: int) -> List[Tuple[int, int]]:
    """(state, inc) of ``PCG64(SeedSequence(entropy=root_seed, spawn_key=key))`` for
    each index (< 2**32), key = (index,) or (index, stream): the pool mixing and
    ``generate_state(4, uint64)`` on uint32 lanes, then PCG64's seeding."""
    n = indices.size
    run = _words(root_seed)
    run += [0] * (_POOL - len(run))  # a spawn key pads the run entropy to the pool
    lanes = [np.full(n, w, np.uint32) for w in run] + [indices.astype(np.uint32)]
    if stream:
        lanes += [np.full(n, w, np.uint32) for w in _words(stream)]
    h = _Hash(_INIT_A, _MULT_A)
    pool = [h(lanes[i]) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = _mix(pool[dst], h(pool[src]))
    for src in range(_POOL, len(lanes)):
        for dst in range(_POOL):
            pool[dst] = _mix(pool[dst], h(lanes[src]))
    g = _Hash(_INIT_B, _MULT_B)
    out = [g(pool[i % _POOL]).astype(np.uint64) for i in range(2 * _POOL)]
    w = [(out[2 * j] | (out[2 * j + 1] << np.uint64(32))).tolist() for j in range(_POOL)]
    starts = []
    for w0, w1, w2, w3 in zip(*w):
        inc = ((((w2 << 64) | w3) << 1) | 1) & _M128
        state = (((inc + ((w0 << 64) | w1)) & _M128) * _PCG_MULT + inc) & _M128
        starts.append((state, inc))
    return starts


class ImageStreams:
    """The generators ``image_rng(root_seed, i, stream)`` for many images ``i``, without
    a ``SeedSequence`` per image (about 50 µs each inside a generation loop).

    One ``PCG64`` and its ``Generator`` are reused: ``at(i)`` sets them to the state
    that ``image_rng(root_seed, i, stream)`` starts from (the same numbers follow, to
    the bit) and returns the ``Generator``, which is valid until the next ``at``.
    Starting states are computed for blocks of indices at once; indices of 2**32 and
    above take ``image_rng`` itself.
    """

    def __init__(self, root_seed: int, stream: int = 0):
        if root_seed < 0 or stream < 0:
            raise ValueError(f"root_seed and stream must be >= 0, got {root_seed}, {stream}")
        self.root_seed, self.stream = int(root_seed), int(stream)
        self._bits = np.random.PCG64(0)
        self._gen = np.random.Generator(self._bits)
        self._blocks: Dict[int, List[Tuple[int, int]]] = {}

    def at(self, index: int) -> np.random.Generator:
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        if index > _M32:
            return image_rng(self.root_seed, index, self.stream)
        b = index // _BLOCK
        block = self._blocks.get(b)
        if block is None:
            if len(self._blocks) >= 8:
                self._blocks.clear()
            block = self._blocks[b] = _pcg64_starts(self.root_seed, np.arange(b * _BLOCK, (b + 1) * _BLOCK),
                                                     self.stream)
        state, inc = block[index - b * _BLOCK]
        self._bits.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc},
                            "has_uint32": 0, "uinteger": 0}
        return self._gen
