"""vae.seeds: named streams, stable keys, and the old derivations kept bit for bit."""

import zlib

import numpy as np
import pytest

from vae import seeds


def test_legacy_names_reproduce_the_old_integer_derivations():
    # vae.data.split_indices drew from SeedSequence([seed, 0x5EED5]) before vae.seeds existed.
    old = np.random.default_rng(np.random.SeedSequence([3, 0x5EED5])).permutation(50)
    assert np.array_equal(seeds.stream(3, "split").permutation(50), old)
    old = np.random.default_rng(np.random.SeedSequence([3, 0xA06, 7, 4])).random(4)
    assert np.array_equal(seeds.stream(3, "curriculum", 4).random(4), old)
    # The training loop's torch seeds were derive_seed(seed, k, ...) with k = 1..6.
    for name, k in (("ddp-shuffle", 1), ("shuffle", 2), ("loader", 3), ("epoch-augment", 4), ("eval-loader", 5),
                    ("eval-natural-loader", 6)):
        assert seeds.torch_seed(9, name, 2) == seeds.derive_seed(9, k, 2), name
    assert seeds.torch_seed(9, "part", 1) == seeds.derive_seed(9, 1)


def test_new_names_are_stable_independent_and_in_range():
    assert seeds.key("probe-init") == (zlib.crc32(b"probe-init"),)
    a = seeds.stream(0, "alpha").random(8)
    assert np.array_equal(a, seeds.stream(0, "alpha").random(8))
    assert not np.array_equal(a, seeds.stream(0, "beta").random(8))
    assert not np.array_equal(a, seeds.stream(1, "alpha").random(8))
    s = seeds.torch_seed(0, "alpha", 5)
    assert 0 <= s < 2 ** 63 and s == seeds.torch_seed(0, "alpha", 5)
    with pytest.raises(ValueError):
        seeds.stream(-1, "alpha")
    with pytest.raises(ValueError):
        seeds.key("")
