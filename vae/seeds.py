"""Named random streams for vae: the counterpart of :mod:`synthcount.rng`.

Every random number of a training run derives from the run seed ``cfg.seed`` and
a stream *name* (plus integer keys such as the epoch), through numpy's
``SeedSequence([seed, *key(name), *keys])``. Streams with different names are
independent; the same (seed, name, keys) always gives the same numbers, in any
process and on any worker count.

A name's integer key is fixed: the streams vae used before this module existed
keep the integers they had (:data:`LEGACY_KEYS`), so held-out splits, shuffles,
augmentation and therefore every logged loss are what they were. Any other name
maps to ``zlib.crc32(name)`` (stable across processes and Python versions, unlike
``hash()``).

    >>> stream(0, "split").permutation(5)          # numpy Generator
    >>> torch_seed(0, "shuffle", 3)                # int for torch.Generator().manual_seed
"""

from __future__ import annotations

import zlib
from typing import Tuple

import numpy as np

__all__ = ["LEGACY_KEYS", "key", "sequence", "stream", "torch_seed", "derive_seed"]

# name -> the integers it has always been mixed in as (do not change: they fix results).
LEGACY_KEYS = {
    "split": (0x5EED5,),           # vae.data.split_indices: the held-out shard images
    "augment": (0xA06,),           # per-sample augmentation (with the dataset part and sample index)
    "curriculum": (0xA06, 7),      # which natural images enter an epoch (vae.data.epoch_indices)
    "ddp-shuffle": (1,),           # DistributedSampler's seed
    "shuffle": (2,),               # RandomSampler, per epoch
    "loader": (3,),                # DataLoader worker base seed, per (epoch, rank)
    "epoch-augment": (4,),         # the augmentation seed of an epoch (EpochView.reseed)
    "eval-loader": (5,),           # evaluation DataLoader, per epoch
    "eval-natural-loader": (6,),   # the same for the natural test images
    "part": (),                    # one dataset part of an EpochView: SeedSequence([seed, k])
}


def key(name: str) -> Tuple[int, ...]:
    """The integers stream ``name`` mixes into the seed."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a stream name must be a non-empty string, got {name!r}")
    return LEGACY_KEYS.get(name, (zlib.crc32(name.encode("utf-8")),))


def sequence(seed: int, name: str, *keys: int) -> np.random.SeedSequence:
    """``SeedSequence([seed, *key(name), *keys])``."""
    if int(seed) < 0 or any(int(k) < 0 for k in keys):
        raise ValueError(f"seed and keys must be >= 0, got {seed}, {keys}")
    return np.random.SeedSequence([int(seed), *key(name), *(int(k) for k in keys)])


def stream(seed: int, name: str, *keys: int) -> np.random.Generator:
    """A numpy Generator for stream ``name`` (and ``keys``) of ``seed``."""
    return np.random.default_rng(sequence(seed, name, *keys))


def _to_int(ss: np.random.SeedSequence) -> int:
    state = ss.generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def torch_seed(seed: int, name: str, *keys: int) -> int:
    """An int in [0, 2**63) for ``torch.Generator().manual_seed`` from stream ``name``."""
    return _to_int(sequence(seed, name, *keys))


def derive_seed(seed: int, *keys: int) -> int:
    """An int in [0, 2**63) from ``SeedSequence([seed, *keys])`` (unnamed integer keys)."""
    return _to_int(np.random.SeedSequence([int(seed), *(int(k) for k in keys)]))
