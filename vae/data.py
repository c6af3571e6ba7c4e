"""Torch datasets over synthcount shards and natural images, augmentation, curriculum.

Data flows one way: shards -> ``synthcount.open_dataset`` (lazy per-process file
handles, safe in forked DataLoader workers) -> :class:`ShardImages` -> training.

Augmentation (train mode only; paper section 4.2): resize to ``scale`` x the
model's size (about 1.14x, as the authors' 256 -> 225 crop) and random crop back,
horizontal flip with p = 0.5, per-channel additive colour shift. Its random numbers
are drawn per sample from a seed the training loop sets every epoch
(:meth:`ShardImages.reseed`) and the sample's index, so the augmentation of an image
depends on neither the number of DataLoader workers nor which one reads it, and a
run resumed with another worker count matches an uninterrupted one. A dataset that
was never reseeded draws from torch's per-worker seed (``get_worker_info().seed``).

Curriculum (:func:`natural_share`, :func:`epoch_indices`): synthetic images only
for ``warmup`` epochs, then a rising share of the natural training images (linear
by default); each epoch a fraction of the most frequent natural class is dropped
at random (class balancing, paper: 10%).

Batched reads: the datasets implement ``__getitems__``, which torch's DataLoader
calls with a whole batch of indices, so one HDF5 call per shard reads a batch.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from . import seeds
from .seeds import derive_seed  # noqa: F401 (re-exported: vae.data.derive_seed)

__all__ = [
    "split_indices",
    "derive_seed",
    "augment",
    "resize_to",
    "ShardImages",
    "NaturalImages",
    "EpochView",
    "natural_share",
    "balance_drop",
    "epoch_indices",
]



def split_indices(n: int, test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Deterministic held-out split of ``n`` images.

    Parameters
    ----------
    n : int, >= 2
    test_fraction : float in (0, 1)
    seed : int, >= 0

    Returns
    -------
    train_idx, test_idx : ndarray of int64, sorted, disjoint, covering 0..n-1
        ``len(test_idx) = max(1, round(n * test_fraction))``, at most n - 1.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = seeds.stream(seed, "split")
    n_test = min(int(n) - 1, max(1, int(round(n * float(test_fraction)))))
    perm = rng.permutation(int(n))
    return np.sort(perm[n_test:]).astype(np.int64), np.sort(perm[:n_test]).astype(np.int64)


def resize_to(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """uint8 (h, w, 3) -> uint8 (H, W, 3); area interpolation when shrinking."""
    H, W = size
    h, w = img.shape[:2]
    if (h, w) == (H, W):
        return img
    interp = cv2.INTER_AREA if H * W < h * w else cv2.INTER_LINEAR
    return cv2.resize(img, (W, H), interpolation=interp)


def augment(img: np.ndarray, size: Tuple[int, int], rng: np.random.Generator, scale: float = 1.14,
            color_shift: float = 0.05) -> np.ndarray:
    """Train-time augmentation of one image.

    Parameters
    ----------
    img : ndarray, uint8, (h, w, 3)
    size : (H, W)
        Output size.
    rng : numpy.random.Generator
    scale : float >= 1
        Resize to round(scale * H) x round(scale * W), then crop H x W at random.
    color_shift : float >= 0
        Per-channel additive shift drawn from U(-color_shift, color_shift).

    Returns
    -------
    ndarray, float32, (3, H, W), values in [0, 1]
    """
    H, W = size
    bh, bw = max(H, int(round(H * scale))), max(W, int(round(W * scale)))
    big = resize_to(img, (bh, bw))
    # Always draw every number, in the same order, so streams stay aligned.
    top = int(rng.integers(0, bh - H + 1))
    left = int(rng.integers(0, bw - W + 1))
    flip = rng.random() < 0.5
    shift = rng.uniform(-color_shift, color_shift, size=3).astype(np.float32)
    out = big[top:top + H, left:left + W]
    if flip:
        out = out[:, ::-1]
    x = out.astype(np.float32) * np.float32(1.0 / 255.0)
    if color_shift > 0:
        x += shift
        np.clip(x, 0.0, 1.0, out=x)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _to_chw(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    x = resize_to(img, size).astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class _Augmented(Dataset):
    """Shared machinery: per-process augmentation RNG and the transform."""

    _stream = 0

    def _init_aug(self, train: bool, scale: float, color_shift: float, seed: Optional[int]) -> None:
        if not 1.0 <= float(scale) <= 2.0:
            raise ValueError(f"scale must be in [1, 2], got {scale!r}")
        if not 0.0 <= float(color_shift) <= 0.5:
            raise ValueError(f"color_shift must be in [0, 0.5], got {color_shift!r}")
        self.train = bool(train)
        self.scale, self.color_shift = float(scale), float(color_shift)
        self._seed = seed
        self._rng: Optional[np.random.Generator] = None
        self._rng_key: Optional[int] = None

    def reseed(self, seed: int) -> None:
        """Seed the augmentation of the next epoch (the training loop calls it every epoch).

        With a seed set, sample ``i`` is augmented from ``vae.seeds.stream(seed,
        "augment", stream, i)`` alone, so the result does not depend on how many DataLoader
        workers there are or which one reads it: a resumed run may use another
        worker count and still match an uninterrupted one.
        """
        self._seed, self._rng, self._rng_key = int(seed), None, None

    def _aug_rng(self, i: int) -> np.random.Generator:
        if self._seed is not None:
            return seeds.stream(self._seed, "augment", self._stream, i)
        # Not reseeded (a Dataset used on its own): one stream per process, seeded from
        # torch's per-worker seed, never seed + worker_id arithmetic.
        info = get_worker_info()
        key = info.seed if info is not None else torch.initial_seed()
        if self._rng is None or self._rng_key != key:
            self._rng = seeds.stream(key, "augment", self._stream)
            self._rng_key = key
        return self._rng

    def _transform(self, img: np.ndarray, i: int) -> torch.Tensor:
        """``img`` as a float tensor, augmented (from sample ``i``'s stream) in train mode."""
        if self.train:
            return torch.from_numpy(augment(img, self.image_size, self._aug_rng(i), self.scale, self.color_shift))
        return torch.from_numpy(_to_chw(img, self.image_size))

    def __getstate__(self) -> dict:
        st = dict(self.__dict__)
        st["_rng"], st["_rng_key"] = None, None
        return st


class ShardImages(_Augmented):
    """Images of a synthcount dataset as float tensors, with their labels.

    Parameters
    ----------
    path : str or synthcount.reader.Dataset
        Dataset folder (``manifest.json``) or one shard ``.h5``, or a dataset already
        opened with ``synthcount.open_dataset`` (shared, not reopened).
    indices : sequence of int or None
        Global image indices to expose (e.g. one side of :func:`split_indices`);
        None = all.
    train : bool
        Apply augmentation (only for training).
    image_size : (int, int) or None
        Output (H, W); None = the dataset's. Other sizes are resized to.
    scale, color_shift : float
        Augmentation strength (see :func:`augment`).
    seed : int or None
        Main-process augmentation seed (see :meth:`reseed`); None = torch's seed.

    ``ds[i]`` returns ``(x, labels)``: x float32 (3, H, W) in [0, 1]; labels a dict of
    ints ``{"count", "cumulative_area", "index"}`` (index = global image index).
    """

    _stream = 1

    def __init__(self, path: str, indices: Optional[Sequence[int]] = None, train: bool = False,
                 image_size: Optional[Tuple[int, int]] = None, *, scale: float = 1.14,
                 color_shift: float = 0.05, seed: Optional[int] = None):
        import synthcount
        from synthcount.reader import Dataset as _Opened

        if isinstance(path, _Opened):  # already open: share its handles and labels
            self.path, self.ds = path.path, path
        else:
            self.path = str(path)
            self.ds = synthcount.open_dataset(self.path)
        n = len(self.ds)
        if indices is None:
            idx = np.arange(n, dtype=np.int64)
        else:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"indices must be in [0, {n}) for {self.path}, got min {idx.min()} max {idx.max()}")
        self.indices = idx
        self.image_size = tuple(int(v) for v in (image_size or self.ds.image_size))
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"image_size must be (H, W) with sides >= 8, got {image_size!r}")
        lab = self.ds.labels
        self.count = np.asarray(lab["count"], dtype=np.int64)
        self.cumulative_area = np.asarray(lab["cumulative_area"], dtype=np.int64)
        self._init_aug(train, scale, color_shift, seed)

    def __len__(self) -> int:
        return int(self.indices.size)

    def _labels(self, g: int) -> Dict[str, int]:
        return {"count": int(self.count[g]), "cumulative_area": int(self.cumulative_area[g]), "index": int(g)}

    def __getitem__(self, i: int):
        g = int(self.indices[i])
        img = self.ds.read_images([g])[0]
        return self._transform(img, g), self._labels(g)

    def __getitems__(self, items: Sequence[int]) -> List[tuple]:
        g = self.indices[np.asarray(items, dtype=np.int64)]
        imgs = self.ds.read_images(g)                                  # (k, h, w, 3) uint8, one read per shard
        return [(self._transform(img, int(gi)), self._labels(int(gi))) for img, gi in zip(imgs, g)]


class NaturalImages(_Augmented):
    """Natural images from files with count labels (SOS or a labelled folder).

    Parameters
    ----------
    items : sequence of (str, int)
        (image file, count label); label 4 means "4 or more" for SOS.
    train, image_size, scale, color_shift, seed
        As :class:`ShardImages`; ``image_size`` is required. Images of any size are
        resized to it (the authors resized SOS to a square before cropping).

    Returns the same ``(x, labels)`` as ShardImages, with ``cumulative_area = -1``
    (unknown) and ``index`` = position in ``items``.
    """

    _stream = 2

    def __init__(self, items: Sequence[Tuple[str, int]], train: bool = False,
                 image_size: Tuple[int, int] = (161, 161), *, scale: float = 1.14,
                 color_shift: float = 0.05, seed: Optional[int] = None):
        self.files = [str(p) for p, _ in items]
        self.labels = np.asarray([int(lab) for _, lab in items], dtype=np.int64)
        for p in self.files:
            if not os.path.isfile(p):
                raise ValueError(f"natural image file not found: {p}")
        self.image_size = tuple(int(v) for v in image_size)
        self._init_aug(train, scale, color_shift, seed)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path = self.files[i]
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"natural image could not be decoded: {path}")
        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return self._transform(img, i), {"count": int(self.labels[i]), "cumulative_area": -1, "index": int(i)}


class EpochView(Dataset):
    """One epoch's list of (part, index) over several datasets, read in batches.

    Parameters
    ----------
    parts : sequence of Dataset
        E.g. ``[ShardImages(train), NaturalImages(train)]``.
    index : ndarray, int64, (n, 2)
        Rows (part, position in that part).
    """

    def __init__(self, parts: Sequence[Dataset], index: np.ndarray):
        self.parts = list(parts)
        self.index = np.asarray(index, dtype=np.int64).reshape(-1, 2)

    def reseed(self, seed: int) -> None:
        for k, p in enumerate(self.parts):
            if hasattr(p, "reseed"):
                p.reseed(seeds.torch_seed(seed, "part", k))

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, i: int):
        part, j = self.index[i]
        return self.parts[int(part)][int(j)]

    def __getitems__(self, items: Sequence[int]) -> List[tuple]:
        rows = self.index[np.asarray(items, dtype=np.int64)]
        out: List[Optional[tuple]] = [None] * len(rows)
        for part in np.unique(rows[:, 0]):
            sel = np.nonzero(rows[:, 0] == part)[0]
            ds = self.parts[int(part)]
            pos = rows[sel, 1].tolist()
            got = ds.__getitems__(pos) if hasattr(ds, "__getitems__") else [ds[j] for j in pos]
            for s, g in zip(sel, got):
                out[s] = g
        return out


def natural_share(epoch: int, warmup: int, ramp: int, schedule: str = "linear") -> float:
    """Share in [0, 1] of the natural training images used in ``epoch`` (0-based).

    0 for the first ``warmup`` epochs; then ``linear`` rises by 1/ramp per epoch to
    1, ``step`` jumps to 1.
    """
    if schedule not in ("linear", "step"):
        raise ValueError(f"schedule must be 'linear' or 'step', got {schedule!r}")
    if ramp < 1:
        raise ValueError(f"ramp must be >= 1, got {ramp!r}")
    if epoch < warmup:
        return 0.0
    if schedule == "step":
        return 1.0
    return min(1.0, (epoch - warmup + 1) / float(ramp))


def balance_drop(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Positions kept after dropping ``fraction`` of the most frequent class at random.

    Parameters
    ----------
    labels : ndarray of int, (n,)
    fraction : float in [0, 1)
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int64, sorted positions into ``labels``.
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    labels = np.asarray(labels)
    keep = np.ones(labels.size, dtype=bool)
    if labels.size and fraction > 0:
        values, counts = np.unique(labels, return_counts=True)
        top = values[np.argmax(counts)]
        members = np.nonzero(labels == top)[0]
        n_drop = int(round(members.size * float(fraction)))
        keep[rng.choice(members, size=n_drop, replace=False)] = False
    return np.nonzero(keep)[0].astype(np.int64)


def epoch_indices(epoch: int, n_synthetic: int, natural_labels: Optional[np.ndarray], seed: int, *,
                  warmup: int = 20, ramp: int = 20, schedule: str = "linear",
                  drop_fraction: float = 0.1) -> np.ndarray:
    """The (part, position) rows of one training epoch.

    Part 0 = every synthetic training image; part 1 = a random subset of the natural
    training images after class balancing, of size share x the balanced set
    (:func:`natural_share`). Deterministic in (seed, epoch); order is left to the
    sampler.
    """
    rows = [np.stack([np.zeros(n_synthetic, np.int64), np.arange(n_synthetic, dtype=np.int64)], 1)]
    if natural_labels is not None and len(natural_labels):
        share = natural_share(epoch, warmup, ramp, schedule)
        if share > 0:
            rng = seeds.stream(seed, "curriculum", epoch)
            kept = balance_drop(natural_labels, drop_fraction, rng)
            k = int(round(share * kept.size))
            chosen = np.sort(rng.choice(kept, size=k, replace=False)) if k < kept.size else kept
            rows.append(np.stack([np.ones(chosen.size, np.int64), chosen], 1))
    return np.concatenate(rows, 0)
