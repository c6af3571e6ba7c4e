"""Read a synthcount dataset: ``open_dataset(path) -> Dataset`` (numpy only).

The reader opens shard files lazily, one h5py handle per shard per process, and
notices a fork (the process id changed) to reopen its handles in the child, so a
``Dataset`` made in the parent is safe in forked DataLoader workers. It never loads a
whole shard's images: ``ds[i]`` reads one image chunk and one label-map chunk;
small per-image fields (count, areas, boxes, ...) are read per shard column-wise
and kept for a few recently used shards.

Shards of format 1 and 2 are read alike; format 2 adds ``object_names`` and
``background_names`` (exposed as :attr:`Dataset.object_names` /
:attr:`Dataset.background_names`, None for format 1) and attributes on the datasets.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import OrderedDict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ._io import NotRegularFile, check_regular
from .shards import NAME_DATASETS, READABLE_VERSIONS, check_schema, read_manifest

__all__ = ["Dataset", "ShardReadError", "open_dataset"]

_BIG = ("images", "label_maps")
_NOT_RECORDS = _BIG + NAME_DATASETS  # datasets that are not small per-image fields


class _Newer(Exception):
    """A shard of a newer format (its own message: upgrade synthcount)."""


class ShardReadError(OSError):
    """A shard file could not be read (truncated, corrupted); the message names it."""


class Dataset:
    """A synthcount dataset (a folder with ``manifest.json``, or one shard file).

    Parameters
    ----------
    path : str
        Dataset folder or a single ``shard-XXXXX.h5``.
    cache_shards : int
        How many shards' small per-image fields to keep in memory per process.
    max_open : int, optional
        How many shard files to keep open per process, the least recently used closed
        first. Default: a quarter of the process's file-descriptor limit, between 16
        and 1,024 (256 under Linux's usual limit of 1,024, 64 under macOS's 256): a
        million images in 1,000 shards would otherwise hold 1,000 files open.

    Attributes
    ----------
    files : list of str
        Shard files in dataset order.
    offsets : ndarray, int64, shape (num_shards + 1,)
        Position of each shard's first image in the dataset (cumulative counts).
    """

    def __init__(self, path: str, cache_shards: int = 8, max_open: Optional[int] = None) -> None:
        import h5py

        self.path = str(path)
        ref = None  # (image size, object columns) when the lone shard file was checked here
        if os.path.isdir(self.path):
            man = read_manifest(self.path)
            self.files = [os.path.join(self.path, e["file"]) for e in man["shards"]]
            sizes = [int(e["num_images"]) for e in man["shards"]]
        elif os.path.lexists(self.path):
            try:
                check_regular(self.path, "shard")
                with h5py.File(self.path, "r") as f:
                    if "format_version" in f.attrs:
                        try:
                            _check_version(f, self.path)
                        except ValueError as e:
                            raise _Newer(str(e)) from None
                    problems = check_schema(f, self.path)
                    if problems:
                        raise ValueError(problems[0])
                    sizes = [int(f["images"].shape[0])]
                    ref = (tuple(int(v) for v in f["images"].shape[1:3]), int(f["object_areas"].shape[1]))
            except _Newer as e:
                raise ValueError(str(e)) from None
            except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:
                raise ValueError(f"{self.path}: not a readable synthcount shard "
                                 f"({' '.join(str(e).split())[:300]}); run synthcount verify") from None
            self.files = [self.path]
        else:
            raise ValueError(f"dataset path must be a dataset folder or a shard file, got {self.path!r} (not found)")
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._cache_shards = max(1, int(cache_shards))
        self._max_open = max(1, int(max_open)) if max_open is not None else _default_max_open()
        self._pid = os.getpid()
        self._handles: "OrderedDict[int, object]" = OrderedDict()
        self._records: "OrderedDict[int, Dict[str, np.ndarray]]" = OrderedDict()
        self._labels: Optional[np.ndarray] = None
        self._meta: Optional[dict] = None
        self._sizes = [int(v) for v in sizes]
        # Shards that passed check_schema (once per shard, not per image), and the (image
        # size, object columns) of the first shard checked, which the others must share.
        self._checked: set = set() if ref is None else {0}
        self._ref: Optional[tuple] = ref

    # ------------------------------------------------------------------ handles
    def _file(self, k: int):
        """The h5py file of shard ``k`` for this process (reopened after a fork)."""
        import h5py

        if os.getpid() != self._pid:
            # Forked child: the parent's HDF5 handles must not be used here. Drop them
            # without closing (closing would touch state shared with the parent).
            self._handles = OrderedDict()
            self._records = OrderedDict()
            self._pid = os.getpid()
        f = self._handles.get(k)
        if f is None:
            while len(self._handles) >= self._max_open:
                _, old = self._handles.popitem(last=False)
                with contextlib.suppress(Exception):
                    old.close()
            try:
                check_regular(self.files[k], "shard")  # a FIFO would hang h5py, a device never end
            except NotRegularFile as e:
                raise ShardReadError(f"{e}; run synthcount verify") from None
            with self._naming(k):
                f = h5py.File(self.files[k], "r")
            try:
                _check_version(f, self.files[k])
                if k not in self._checked:
                    self._gate(f, k)
            except BaseException:
                with contextlib.suppress(Exception):
                    f.close()
                raise
            self._handles[k] = f
        else:
            self._handles.move_to_end(k)
        return f

    def _gate(self, f, k: int) -> None:
        """The readers' validation gate: shard ``k`` must pass :func:`~synthcount.shards.check_schema`
        (what ``verify`` checks of its structure, with the row count the manifest lists and
        the image size and object columns of the other shards) before anything reads it."""
        size, m = self._ref if self._ref is not None else (None, None)
        with self._naming(k):
            problems = check_schema(f, self.files[k], self._sizes[k], size, m)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ShardReadError(f"{problems[0]}{more}; run synthcount verify")
        if self._ref is None:
            self._ref = (tuple(int(v) for v in f["images"].shape[1:3]), int(f["object_areas"].shape[1]))
        self._checked.add(k)

    @contextlib.contextmanager
    def _naming(self, k: int):
        """Read errors of shard ``k`` (a truncated or corrupted file) as one OSError
        that names the file."""
        try:
            yield
        except ShardReadError:
            raise
        except (OSError, KeyError, RuntimeError, TypeError, AttributeError, IndexError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ShardReadError(f"{self.files[k]}: unreadable shard ({first}); run synthcount verify") from None

    def close(self) -> None:
        """Close this process's open shard files (the dataset can still be read later)."""
        if os.getpid() == self._pid:
            for f in self._handles.values():
                try:
                    f.close()
                except Exception:  # noqa: BLE001 - closing is best effort at shutdown
                    pass
        self._handles = OrderedDict()
        self._records = OrderedDict()

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # Pickled into spawned workers: handles and caches stay behind.
        st = dict(self.__dict__)
        st["_handles"], st["_records"] = OrderedDict(), OrderedDict()
        return st

    def __setstate__(self, st: dict) -> None:
        self.__dict__.update(st)
        self._pid = os.getpid()

    # ------------------------------------------------------------------ metadata
    def _first_meta(self) -> dict:
        if self._meta is None:
            if not self.files:
                raise ValueError(f"{self.path}: the dataset holds no finished shards yet")
            f = self._file(0)
            self._meta = {
                "config": json.loads(f.attrs["config"]),
                "image_size": tuple(int(v) for v in f["images"].shape[1:3]),
                "fields": _with_computed({k: (f[k].dtype, f[k].shape[1:]) for k in f.keys() if k not in NAME_DATASETS}),
                "stored": set(f.keys()),
                "names": {k: [str(v) for v in f[k].asstr()[()]] if k in f else None for k in NAME_DATASETS},
                "attrs": {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()},
            }
        return self._meta

    @property
    def config(self) -> dict:
        """The dataset's DatasetConfig as a plain dict (from the first shard's ``config``
        attribute); :attr:`dataset_config` gives the ``DatasetConfig`` itself."""
        return self._first_meta()["config"]

    @property
    def dataset_config(self):
        """The dataset's :class:`synthcount.config.DatasetConfig`."""
        from .config import DatasetConfig

        return DatasetConfig.from_dict(self.config)

    @property
    def image_size(self) -> Tuple[int, int]:
        """(height, width) of every image."""
        return self._first_meta()["image_size"]

    @property
    def fields(self) -> Dict[str, Tuple[np.dtype, tuple]]:
        """Every per-image dataset: name -> (dtype, per-image shape)."""
        return self._first_meta()["fields"]

    @property
    def object_names(self) -> Optional[List[str]]:
        """Names of the objects ``object_ids`` index (format 2 shards; None for format 1)."""
        return self._first_meta()["names"]["object_names"]

    @property
    def distractor_object_names(self) -> Optional[List[str]]:
        """Names of the objects the distractors' ``object_ids`` index: their own pack's
        when the dataset has one (``--distractor-objects``), else ``object_names``."""
        names = self._first_meta()["names"]
        return names.get("distractor_object_names") or names["object_names"]

    @property
    def background_names(self) -> Optional[List[str]]:
        """Names of the backgrounds ``background_id`` indexes (format 2 shards; None for format 1)."""
        return self._first_meta()["names"]["background_names"]

    @property
    def stimulus_sets(self) -> List[str]:
        """Names of the stimulus sets that ``stimulus_set`` indexes (the shard attribute
        ``stimulus_sets``; ``["standard"]`` for datasets made before it)."""
        text = self._first_meta()["attrs"].get("stimulus_sets")
        return [str(v) for v in json.loads(text)] if text else ["standard"]

    @property
    def num_shards(self) -> int:
        return len(self.files)

    def shard_attrs(self, k: int) -> dict:
        """Attributes of shard ``k`` (format_version, config, seed, shard_index, ...)."""
        f = self._file(k)
        return {a: (v.item() if hasattr(v, "item") else v) for a, v in f.attrs.items()}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    # ------------------------------------------------------------------ access
    def _locate(self, i) -> Tuple[int, int]:
        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an integer (ds[i] is one record), got {type(i).__name__}; for many "
                            f"images use ds.read_images(indices), ds.read_label_maps(indices), ds.labels[indices] "
                            f"or ds.column(name)[indices]")
        asked = i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {asked} out of range for a dataset of {n} images")
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return k, i - int(self.offsets[k])

    def _shard_records(self, k: int) -> Dict[str, np.ndarray]:
        rec = self._records.get(k)
        if rec is None:
            if os.getpid() != self._pid:
                self._file(k)  # resets caches after a fork
            f = self._file(k)
            with self._naming(k):
                rec = {key: f[key][()] for key in f.keys() if key not in _NOT_RECORDS}
                if any(key not in rec for key in _COMPUTED):
                    rec.update(_compute_missing(f, rec))
            self._records[k] = rec
            while len(self._records) > self._cache_shards:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(k)
        return rec

    def __getitem__(self, i) -> dict:
        """Record of image ``i`` (negative counts from the end).

        Returns
        -------
        dict
            ``"image"`` uint8 (H, W, 3), ``"label_map"`` uint8 (H, W), and every
            per-image field of the shard (``"count"``, ``"cumulative_area"``,
            ``"object_areas"``, ..., ``"index"`` = global image index) as numpy
            scalars or arrays.
        """
        k, j = self._locate(i)
        f = self._file(k)
        with self._naming(k):
            out = {"image": f["images"][j], "label_map": f["label_maps"][j]}
        for key, arr in self._shard_records(k).items():
            out[key] = arr[j]
        return out

    def __iter__(self) -> Iterator[dict]:
        return self.iter_records()

    def iter_records(self, start: int = 0, stop: Optional[int] = None) -> Iterator[dict]:
        """Records of images ``start .. stop-1`` in order (as ``ds[i]``), read 64 at a time.

        Parameters
        ----------
        start, stop : int
            Dataset positions, ``0 <= start <= stop <= len(ds)``; ``stop`` None is the end.
        """
        n_all = len(self)
        stop = n_all if stop is None else int(stop)
        if not 0 <= int(start) <= stop <= n_all:
            raise IndexError(f"iter_records needs 0 <= start <= stop <= {n_all}, got {start}, {stop}")
        for k in range(self.num_shards):
            a, b = int(self.offsets[k]), int(self.offsets[k + 1])
            lo, hi = max(a, int(start)) - a, min(b, stop) - a  # local range in shard k
            if lo >= hi:
                continue
            recs = self._shard_records(k)
            for s in range(lo, hi, 64):  # 64 images per read: fewer HDF5 calls than one by one
                e = min(s + 64, hi)
                f = self._file(k)  # again each time: the caller may have opened others in between
                with self._naming(k):
                    imgs, maps = f["images"][s:e], f["label_maps"][s:e]
                for j in range(len(imgs)):
                    out = {"image": imgs[j], "label_map": maps[j]}
                    out.update({key: arr[s + j] for key, arr in recs.items()})
                    yield out

    def _batch(self, name: str, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"indices must be in [-{n}, {n}), got min {idx.min()} max {idx.max()}")
        idx = np.where(idx < 0, idx + n, idx)
        h, w = self.image_size
        shape = (h, w, 3) if name == "images" else (h, w)
        out = np.empty((idx.size,) + shape, np.uint8)
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        for k in np.unique(shard):
            sel = np.nonzero(shard == k)[0]
            local = idx[sel] - self.offsets[k]
            uniq, inv = np.unique(local, return_inverse=True)
            buf = np.empty((uniq.size,) + shape, np.uint8)
            dset = self._file(int(k))[name]
            # Contiguous runs as slices: h5py's list indexing is ~20x slower than slicing.
            breaks = np.nonzero(np.diff(uniq) != 1)[0] + 1
            pos = 0
            with self._naming(int(k)):
                for run in np.split(uniq, breaks):
                    a, b = int(run[0]), int(run[-1]) + 1
                    buf[pos:pos + b - a] = dset[a:b]
                    pos += b - a
            out[sel] = buf[inv]
        return out

    def read_images(self, indices: Sequence[int]) -> np.ndarray:
        """Images at ``indices`` as uint8 (k, H, W, 3), read shard by shard in one call each."""
        return self._batch("images", indices)

    def read_label_maps(self, indices: Sequence[int]) -> np.ndarray:
        """Label maps at ``indices`` as uint8 (k, H, W)."""
        return self._batch("label_maps", indices)

    @property
    def labels(self) -> np.ndarray:
        """Every scalar per-image field of the whole dataset as a structured array.

        One row per image (dataset order), one column per scalar dataset of the shards
        (``index``, ``count``, ``cumulative_area``, ``field_area``, ...) plus
        ``shard`` (int32, position of the shard in the dataset). Read column-wise;
        images are never touched.
        """
        if self._labels is None:
            scalars = [k for k, (dt, shp) in self.fields.items() if shp == () and k not in _BIG]
            dtype = [(k, self.fields[k][0]) for k in scalars] + [("shard", np.int32)]
            out = np.empty(len(self), dtype=dtype)
            for k in range(self.num_shards):
                f = self._file(k)
                a, b = int(self.offsets[k]), int(self.offsets[k + 1])
                with self._naming(k):
                    for key in scalars:
                        out[key][a:b] = f[key][()] if key in f else self._shard_records(k)[key]
                out["shard"][a:b] = k
            self._labels = out
        return self._labels

    def column(self, name: str) -> np.ndarray:
        """One per-image field (any shape, e.g. ``object_areas`` (n, M)) over the whole dataset."""
        if name in _NOT_RECORDS or name not in self.fields:
            raise KeyError(f"column must be one of the small per-image fields {sorted(set(self.fields) - set(_BIG))}, "
                           f"got {name!r}")
        if name not in self._first_meta()["stored"]:  # computed on read (an older dataset)
            return np.concatenate([self._shard_records(k)[name] for k in range(self.num_shards)])
        return np.concatenate([self._file(k)[name][()] for k in range(self.num_shards)])

    def __repr__(self) -> str:
        return f"Dataset({self.path!r}, images={len(self)}, shards={self.num_shards})"


def _with_computed(fields: dict) -> dict:
    """The stored per-image fields plus those computed on read where a dataset made
    before them lacks them (``_COMPUTED``)."""
    out = dict(fields)
    for key, (dt, shape) in _COMPUTED.items():
        out.setdefault(key, (np.dtype(dt), shape))
    return out


def _compute_missing(f, rec: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The ``_COMPUTED`` fields a shard lacks, from its label maps and counts
    (``synthcount.properties``); ``stimulus_set`` 0 and ``design_target`` NaN."""
    from .properties import visual_properties

    count = rec["count"].astype(np.int64)
    n = count.size
    missing = [k for k in _COMPUTED if k not in rec]
    out = {k: np.full((n,) + _COMPUTED[k][1], np.nan if np.dtype(_COMPUTED[k][0]).kind == "f" else 0,
                      _COMPUTED[k][0]) for k in missing}
    if "stimulus_set" in out:
        out["stimulus_set"][:] = 0
    props = [k for k in missing if k not in ("stimulus_set", "design_target")]
    if props:
        lm = f["label_maps"]
        for s in range(0, n, 256):
            maps = lm[s:s + 256]
            for j in range(len(maps)):
                p = visual_properties(maps[j], int(count[s + j]))
                for key in props:
                    out[key][s + j] = p[key]
    return out


# Fields a dataset made before them gets on read: name -> (dtype, per-image shape).
_COMPUTED = {"total_surface_area": ("int64", ()), "item_surface_area": ("float32", ()), "field_area": ("float32", ()),
             "sparsity": ("float32", ()), "coverage": ("float32", ()), "total_perimeter": ("float32", ()),
             "log_size": ("float32", ()), "log_spacing": ("float32", ()), "stimulus_set": ("int32", ()),
             "design_target": ("float32", (3,))}


def _check_version(f, path: str) -> None:
    """Refuse a shard written in a format this code does not know (a newer synthcount)."""
    v = f.attrs.get("format_version")
    if v is not None and int(v) not in READABLE_VERSIONS:
        raise ValueError(f"{path}: shard format_version {int(v)}; this synthcount reads {READABLE_VERSIONS} "
                         f"(upgrade synthcount)")


def _default_max_open() -> int:
    """A quarter of this process's soft limit on open files, within [16, 1024]."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 64
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1024
    return int(min(1024, max(16, soft // 4)))


def open_dataset(path: str) -> Dataset:
    """Open a synthcount dataset folder (with ``manifest.json``) or a single shard file.

    Raises
    ------
    ValueError
        If ``path`` is neither.
    """
    return Dataset(path)
