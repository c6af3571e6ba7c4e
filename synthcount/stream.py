"""Sources larger than memory: assets read per image through a bounded cache.

``LazyAssets`` is a read-only sequence that loads item ``i`` when asked (from an
asset pack file, or by decoding the source file again) and keeps the most recently
used items up to a byte budget. An ``AssetPack`` whose ``objects`` or
``backgrounds`` is a ``LazyAssets`` is *streamed*: it carries the names, shapes,
object footprints and the fingerprint up front, so nothing needs every pixel in
memory at once. The items are the very arrays the in-memory path holds (same
decoder, same pack bytes), so a dataset is the same byte for byte in either mode.

``PackWriter`` writes asset packs (format 2) incrementally, so that ``prepare`` of
a large tree runs in bounded memory and can resume after an interruption.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .pack import PACK_FORMAT_VERSION, AssetPack, ObjectAsset, _name_bytes

__all__ = ["LazyAssets", "PackReader", "PackWriter", "open_pack_stream", "is_streamed", "STREAM_CACHE_BYTES",
           "FINGERPRINT_SEPARATOR"]

# Bytes each streamed sequence may keep decoded, per process (prescaled backgrounds
# and object pyramids in the compositor, raw items in a pack reader).
STREAM_CACHE_BYTES = 192 << 20
FINGERPRINT_SEPARATOR = b"--backgrounds--"  # as AssetPack.fingerprint
# HDF5 chunk of the flat pixel arrays, stored uncompressed: decoded photos do not
# shrink under lzf, and reading one background from an lzf pack took 3.7 ms against
# 0.15 ms uncompressed (measured on 341x256 backgrounds).
_CHUNK = 1 << 18
_SLACK = 1 << 20  # room reserved for HDF5's own metadata on each write


def _nbytes(item) -> int:
    if isinstance(item, np.ndarray):
        return item.nbytes
    if isinstance(item, ObjectAsset):
        return item.rgb.nbytes + item.alpha.nbytes
    arrays = getattr(item, "rgba", []) + getattr(item, "alpha", [])  # a MipAsset
    return sum(a.nbytes for a in arrays) or 1


class LazyAssets(Sequence):
    """Items loaded on demand, the most recently used kept up to ``cache_bytes``.

    Parameters
    ----------
    n : int
        Number of items.
    load : callable
        ``load(i)`` -> the item (picklable: it travels to Dask workers).
    names : list of str
        Name of each item.
    meta : dict
        What is known without loading: ``shapes`` (n, 3) int64 array, and for
        objects ``footprints`` (n,) int64 (alpha >= 128 pixels).
    cache_bytes : int
        Budget of the cache (per process; never below one item).
    """

    def __init__(self, n: int, load: Callable[[int], object], *, names: Sequence[str], meta: dict,
                 cache_bytes: int = STREAM_CACHE_BYTES):
        self._n, self.load, self.names, self.meta = int(n), load, list(names), dict(meta)
        self.cache_bytes = int(cache_bytes)
        self._init_cache()

    def _init_cache(self) -> None:
        self._cache: "OrderedDict[int, object]" = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self.loads = 0  # cache misses, for tests and benchmarks

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"asset {i} out of range (0..{self._n - 1})")
        with self._lock:
            item = self._cache.get(i)
            if item is not None:
                self._cache.move_to_end(i)
                return item
        item = self.load(i)  # outside the lock: other threads keep reading meanwhile
        with self._lock:
            self.loads += 1
            if i not in self._cache:
                self._cache[i] = item
                self._held += _nbytes(item)
                while self._held > self.cache_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._held -= _nbytes(old)
        return item

    def __iter__(self) -> Iterator:
        """Every item in order, loaded without filling the cache (a scan)."""
        for i in range(self._n):
            with self._lock:
                item = self._cache.get(i)
            yield item if item is not None else self.load(i)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for k in ("_cache", "_held", "_lock", "loads"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_cache()


def is_streamed(seq) -> bool:
    """Whether a pack's ``objects`` / ``backgrounds`` is read on demand."""
    return isinstance(seq, LazyAssets)


def object_dims(pack: AssetPack) -> List[Tuple[str, int, int, int]]:
    """(name, height, width, footprint pixels) of each object, without loading a
    streamed pack's pixels."""
    from .transforms import ALPHA_THRESHOLD_U8

    objs = pack.objects
    if is_streamed(objs):
        sh, fp = objs.meta["shapes"], objs.meta["footprints"]
        return [(objs.names[i], int(sh[i, 0]), int(sh[i, 1]), int(fp[i])) for i in range(len(objs))]
    return [(o.name, *o.alpha.shape, int(np.count_nonzero(o.alpha >= ALPHA_THRESHOLD_U8))) for o in objs]


def object_names(objects) -> List[str]:
    """Names of a pack's objects, streamed or not."""
    return list(objects.names) if is_streamed(objects) else [o.name for o in objects]


# --------------------------------------------------------------------------- pack files

def _h5():
    import h5py

    return h5py


def _read_names(g) -> List[str]:
    if "names" in g.attrs:  # format 1
        return json.loads(g.attrs["names"])
    if "names" in g:
        return list(g["names"].asstr(errors="surrogateescape")[()])
    return []


def _read_json(f, key: str, default):
    if key in f.attrs:
        return json.loads(f.attrs[key])
    if key in f:
        return json.loads(bytes(f[key][()]).decode("utf-8"))
    return default


class PackReader:
    """An asset pack file read item by item (one HDF5 handle per process).

    Attributes
    ----------
    path : str
    object_shapes, background_shapes : ndarray, int64, (n, 3)
    object_names, background_names : list of str
    footprints : ndarray, int64, (n,) or None
        Alpha >= 128 pixels of each object (format 2; None for format 1 packs).
    stored_fingerprint : str or None
    skipped : list of (str, str)
    source : str
    """

    def __init__(self, path: str):
        h5py = _h5()
        self.path = os.path.abspath(path)
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise ValueError(f"{path}: not a readable HDF5 asset pack ({e})") from None
        with f:
            if "pack_format_version" not in f.attrs:
                raise ValueError(f"{path}: not a synthcount asset pack (no pack_format_version attribute)")
            version = int(f.attrs["pack_format_version"])
            if version > PACK_FORMAT_VERSION:
                raise ValueError(f"{path}: pack format {version} is newer than this synthcount "
                                 f"({PACK_FORMAT_VERSION})")
            if "state" in f and "fingerprint" not in f.attrs:
                raise ValueError(f"{path}: an unfinished pack (prepare was interrupted; run it again)")
            go, gb = f["objects"], f["backgrounds"]
            self.object_shapes = go["rgb_shapes"][()].reshape(-1, 3).astype(np.int64)
            self.background_shapes = gb["rgb_shapes"][()].reshape(-1, 3).astype(np.int64)
            self.object_names, self.background_names = _read_names(go), _read_names(gb)
            self.footprints = go["footprints"][()].astype(np.int64) if "footprints" in go else None
            self.stored_fingerprint = str(f.attrs["fingerprint"]) if "fingerprint" in f.attrs else None
            self.skipped = [tuple(s) for s in _read_json(f, "skipped", [])]
            self.source = str(f.attrs.get("source", path))
        px = self.object_shapes[:, 0] * self.object_shapes[:, 1]
        self._obj_off = np.concatenate([[0], np.cumsum(px)]).astype(np.int64)
        self._bg_off = np.concatenate([[0], np.cumsum(np.prod(self.background_shapes, axis=1))]).astype(np.int64)
        self._f, self._pid = None, None

    def _file(self):
        if self._pid != os.getpid():  # a handle is never shared across fork
            self._f, self._pid = _h5().File(self.path, "r"), os.getpid()
        return self._f

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_f"] = state["_pid"] = None
        return state

    def background(self, i: int) -> np.ndarray:
        a, b = self._bg_off[i], self._bg_off[i + 1]
        return self._file()["backgrounds/rgb"][a:b].reshape(tuple(self.background_shapes[i]))

    def object(self, i: int) -> ObjectAsset:
        a, b = self._obj_off[i], self._obj_off[i + 1]
        h, w, _ = (int(v) for v in self.object_shapes[i])
        f = self._file()
        return ObjectAsset(f["objects/rgb"][3 * a:3 * b].reshape(h, w, 3), f["objects/alpha"][a:b].reshape(h, w),
                           self.object_names[i])

    def fingerprint(self) -> str:
        """The pack's fingerprint: stored by ``prepare``, else hashed item by item."""
        if self.stored_fingerprint is None:
            h = hashlib.sha256()
            for i in range(len(self.object_names)):
                _hash_object(h, self.object(i))
            h.update(FINGERPRINT_SEPARATOR)
            for i in range(len(self.background_names)):
                _hash_background(h, self.background(i), self.background_names[i])
            self.stored_fingerprint = h.hexdigest()
        return self.stored_fingerprint


def _hash_object(h, o: ObjectAsset) -> None:
    h.update(_name_bytes(o.name) + b"\0" + np.asarray(o.rgb.shape, np.int64).tobytes())
    h.update(o.rgb.tobytes())
    h.update(o.alpha.tobytes())


def _hash_background(h, b: np.ndarray, name: str) -> None:
    h.update(_name_bytes(name) + b"\0" + np.asarray(b.shape, np.int64).tobytes())
    h.update(b.tobytes())


class _ReadObject:
    def __init__(self, reader: PackReader):
        self.reader = reader

    def __call__(self, i: int) -> ObjectAsset:
        return self.reader.object(i)


class _ReadBackground(_ReadObject):
    def __call__(self, i: int) -> np.ndarray:
        return self.reader.background(i)


def footprints_of(objects) -> np.ndarray:
    """Alpha >= 128 pixels of each object (one pass; for packs that do not store them)."""
    from .transforms import ALPHA_THRESHOLD_U8

    return np.array([np.count_nonzero(o.alpha >= ALPHA_THRESHOLD_U8) for o in objects], np.int64)


def open_pack_stream(path: str, cache_bytes: int = 32 << 20) -> AssetPack:
    """An asset pack file as a streamed ``AssetPack`` (nothing but metadata read).

    The reader's own cache is small: the compositor keeps what it derives from the
    items (prescaled backgrounds, object pyramids) in caches of its own.
    """
    r = PackReader(path)
    objects: Sequence = []
    backgrounds: Sequence = []
    if len(r.object_names):
        objects = LazyAssets(len(r.object_names), _ReadObject(r), names=r.object_names,
                             meta={"shapes": r.object_shapes, "footprints": None}, cache_bytes=cache_bytes)
        fp = r.footprints
        objects.meta["footprints"] = fp if fp is not None else footprints_of(objects)
    if len(r.background_names):
        backgrounds = LazyAssets(len(r.background_names), _ReadBackground(r), names=r.background_names,
                                 meta={"shapes": r.background_shapes}, cache_bytes=cache_bytes)
    pack = AssetPack(objects=objects, backgrounds=backgrounds,
                     background_names=list(r.background_names) if len(r.background_names) else [],
                     skipped=r.skipped, source=r.source)
    pack._fingerprint = r.fingerprint()
    return pack


class PackWriter:
    """Write an asset pack (format 2) item by item, in bounded memory.

    Objects must all come before backgrounds (the fingerprint's order). Call
    :meth:`checkpoint` now and then to make what is written resumable
    (:meth:`resume`), and :meth:`finish` at the end.

    Layout: as format 1 (flat ``rgb`` / ``alpha`` arrays, ``rgb_shapes``) in
    resizable chunked datasets, with names as string datasets, the objects'
    ``footprints``, ``skipped`` as a JSON dataset and the ``fingerprint`` attribute.
    A ``state`` dataset marks an unfinished file.
    """

    def __init__(self, path: str, ident: dict, compression: Optional[str] = None, _resume: bool = False):
        h5py = _h5()
        self.path, self.ident = path, ident
        self._hash = hashlib.sha256()
        self._separated = False
        self.tasks_done, self.skipped = 0, []
        self._buf: dict = {k: [] for k in ("orgb", "oalpha", "oshape", "ofp", "oname", "brgb", "bshape", "bname")}
        self._buffered = 0
        self._fd: Optional[int] = None
        if _resume:
            self.f = h5py.File(path, "r+")
            self._fd = os.open(path, os.O_RDWR)
            return
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            self._reserve(fd, _SLACK)  # HDF5 may crash on a full disk: it never meets one here
        finally:
            os.close(fd)
        self.f = f = h5py.File(path, "w")
        self._fd = os.open(path, os.O_RDWR)
        f.attrs["pack_format_version"] = PACK_FORMAT_VERSION
        f.attrs["ident"] = json.dumps(ident, sort_keys=True)
        comp = None if compression in (None, "none") else compression
        sdt = h5py.string_dtype("utf-8")
        for g, flats in (("objects", ("rgb", "alpha")), ("backgrounds", ("rgb",))):
            grp = f.create_group(g)
            for name in flats:
                grp.create_dataset(name, (0,), np.uint8, maxshape=(None,), chunks=(_CHUNK,), compression=comp)
            grp.create_dataset("rgb_shapes", (0, 3), np.int64, maxshape=(None, 3), chunks=(4096, 3))
            grp.create_dataset("names", (0,), sdt, maxshape=(None,), chunks=(4096,))
        f["objects"].create_dataset("footprints", (0,), np.int64, maxshape=(None,), chunks=(4096,))
        f.create_dataset("state", (0,), np.uint8, maxshape=(None,), chunks=(4096,))
        self.checkpoint(0, [])

    @classmethod
    def resume(cls, path: str, ident: dict) -> Optional["PackWriter"]:
        """Reopen an unfinished pack written for the same ``ident``; None when the file
        is another pack's, finished, or damaged (then start again)."""
        try:
            w = cls(path, ident, _resume=True)
        except (OSError, ValueError):
            return None
        try:
            f = w.f
            if "state" not in f or f.attrs.get("ident") != json.dumps(ident, sort_keys=True):
                raise ValueError("another pack")
            st = json.loads(bytes(f["state"][()]).decode("utf-8"))
            # Data past the last checkpoint may be half written: cut back to it.
            for key, ds in (("orgb", "objects/rgb"), ("oalpha", "objects/alpha"), ("brgb", "backgrounds/rgb"),
                            ("on", "objects/rgb_shapes"), ("on", "objects/names"), ("on", "objects/footprints"),
                            ("bn", "backgrounds/rgb_shapes"), ("bn", "backgrounds/names")):
                if f[ds].shape[0] < st[key]:
                    raise ValueError("shorter than its checkpoint")
                f[ds].resize(st[key], axis=0)
            w.tasks_done, w.skipped = int(st["tasks_done"]), [tuple(s) for s in st["skipped"]]
            w._rehash()
            return w
        except (OSError, ValueError, KeyError, TypeError):
            w.close()
            return None

    def _rehash(self) -> None:
        """The fingerprint's hash state over what is already in the file (read back)."""
        f = self.f
        r_shapes = f["objects/rgb_shapes"][()]
        names = list(f["objects/names"].asstr(errors="surrogateescape")[()])
        pos = 0
        for (h, w, _), name in zip(r_shapes, names):
            n = int(h) * int(w)
            _hash_object(self._hash, ObjectAsset(f["objects/rgb"][3 * pos:3 * (pos + n)].reshape(h, w, 3),
                                                 f["objects/alpha"][pos:pos + n].reshape(h, w), name))
            pos += n
        b_shapes = f["backgrounds/rgb_shapes"][()]
        if len(b_shapes):
            self._separate()
        names = list(f["backgrounds/names"].asstr(errors="surrogateescape")[()])
        pos = 0
        for shape, name in zip(b_shapes, names):
            n = int(np.prod(shape))
            _hash_background(self._hash, f["backgrounds/rgb"][pos:pos + n].reshape(tuple(shape)), name)
            pos += n

    def _separate(self) -> None:
        if not self._separated:
            self._hash.update(FINGERPRINT_SEPARATOR)
            self._separated = True

    def add_object(self, o: ObjectAsset) -> None:
        from .transforms import ALPHA_THRESHOLD_U8

        if self._separated:
            raise ValueError("objects must be written before backgrounds")
        _hash_object(self._hash, o)
        b = self._buf
        b["orgb"].append(o.rgb.reshape(-1))
        b["oalpha"].append(o.alpha.reshape(-1))
        b["oshape"].append(o.rgb.shape)
        b["ofp"].append(int(np.count_nonzero(o.alpha >= ALPHA_THRESHOLD_U8)))
        b["oname"].append(_name_bytes(o.name))
        self._buffered += o.rgb.nbytes + o.alpha.nbytes

    def add_background(self, rgb: np.ndarray, name: str) -> None:
        self._separate()
        _hash_background(self._hash, rgb, name)
        b = self._buf
        b["brgb"].append(np.ascontiguousarray(rgb).reshape(-1))
        b["bshape"].append(rgb.shape)
        b["bname"].append(_name_bytes(name))
        self._buffered += rgb.nbytes

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def _reserve(self, fd: int, extra: int) -> None:
        """Allocate room for ``extra`` more bytes before HDF5 writes them (HDF5 itself
        can crash when a write finds the disk full; see ``shards.reserve_space``).
        HDF5 cuts the file back to its data when it flushes."""
        from .shards import hdf5_eoa, reserve_space

        try:
            end = hdf5_eoa(self.path)  # what HDF5 uses (as of its last flush): not the last reservation
        except OSError:
            end = os.fstat(fd).st_size
        reserve_space(fd, end + int(extra), self.path)

    def _append(self, ds: str, parts: list, dtype) -> None:
        if not parts:
            return
        d = self.f[ds]
        data = np.concatenate(parts) if dtype is np.uint8 else np.asarray(parts, dtype=dtype)
        n0 = d.shape[0]
        d.resize(n0 + len(data), axis=0)
        d[n0:] = data

    def _flush(self) -> None:
        b = self._buf
        # Pixels stored raw at worst (lzf keeps a chunk that does not shrink as it is).
        self._reserve(self._fd, self._buffered + self._buffered // 16 + 64 * len(b["oname"] + b["bname"]) + _SLACK)
        self._append("objects/rgb", b["orgb"], np.uint8)
        self._append("objects/alpha", b["oalpha"], np.uint8)
        self._append("objects/rgb_shapes", b["oshape"], np.int64)
        self._append("objects/footprints", b["ofp"], np.int64)
        self._append("objects/names", b["oname"], object)
        self._append("backgrounds/rgb", b["brgb"], np.uint8)
        self._append("backgrounds/rgb_shapes", b["bshape"], np.int64)
        self._append("backgrounds/names", b["bname"], object)
        for v in b.values():
            v.clear()
        self._buffered = 0

    def checkpoint(self, tasks_done: int, skipped: list) -> None:
        """Write what is buffered and record that the first ``tasks_done`` source files
        (``skipped`` among them) are in the file."""
        self._flush()
        f = self.f
        st = {"tasks_done": int(tasks_done), "skipped": [list(s) for s in skipped],
              "orgb": f["objects/rgb"].shape[0], "oalpha": f["objects/alpha"].shape[0],
              "brgb": f["backgrounds/rgb"].shape[0], "on": f["objects/rgb_shapes"].shape[0],
              "bn": f["backgrounds/rgb_shapes"].shape[0]}
        data = np.frombuffer(json.dumps(st).encode("utf-8"), np.uint8)
        f["state"].resize(len(data), axis=0)
        f["state"][:] = data
        f.flush()
        self.tasks_done, self.skipped = int(tasks_done), list(skipped)

    def finish(self, skipped: list, source: str) -> str:
        """Write the rest, ``skipped`` and ``source``; close. Returns the fingerprint."""
        self._flush()
        self._separate()
        f = self.f
        self._reserve(self._fd, 2 * len(json.dumps(skipped)) + _SLACK)
        del f["state"]
        f.create_dataset("skipped", data=np.frombuffer(json.dumps([list(s) for s in skipped]).encode("utf-8"),
                                                         np.uint8))
        f.attrs["source"] = source
        fp = self._hash.hexdigest()
        f.attrs["fingerprint"] = fp
        self.close()
        from .shards import truncate_to_eoa

        truncate_to_eoa(self.path)  # what is left of the last reservation
        return fp

    def close(self) -> None:
        try:
            self.f.close()
        except Exception:  # noqa: BLE001 - already closed, or the file is gone
            pass
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------- staging

class _Staged:
    """Loader of items staged to files: the arrays of item ``i`` read back with one
    ``preadv`` each (picklable; file handles are opened per process)."""

    def __init__(self, paths: List[str], index: list, decode: Callable[[List[np.ndarray]], object]):
        self.paths, self.index, self.decode = paths, index, decode
        self._fds: dict = {}
        self._pid = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fds"], state["_pid"] = {}, None
        return state

    def _fd(self, k: int) -> int:
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()  # never a descriptor inherited across fork
        fd = self._fds.get(k)
        if fd is None:
            fd = self._fds[k] = os.open(self.paths[k], os.O_RDONLY)
        return fd

    def __call__(self, i: int):
        arrays = []
        for k, off, shape in self.index[i]:
            a = np.empty(shape, np.uint8)
            if os.preadv(self._fd(k), [a], off) != a.nbytes:
                raise OSError(f"{self.paths[k]}: staged file cut short")
            arrays.append(a)
        return self.decode(arrays)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}


def _one_array(arrays: List[np.ndarray]) -> np.ndarray:
    return arrays[0]


def _stage_part(task) -> list:
    """Pool task: compute items lo..hi-1 with ``load`` and append their arrays to one file."""
    path, load, encode, lo, hi = task
    index = []
    with open(path, "wb") as f:
        for i in range(lo, hi):
            entry = []
            for a in encode(load(i)):
                a = np.ascontiguousarray(a)
                entry.append((f.tell(), a.shape))
                f.write(memoryview(a).cast("B"))
            index.append(entry)
    return index


def stage(seq: LazyAssets, encode: Callable[[object], List[np.ndarray]], decode: Callable, folder: str,
          estimate: int, *, workers: int = 1, progress: bool = False, desc: str = "stage") -> bool:
    """Compute every item of ``seq`` once (in ``workers`` processes, one item in memory
    at a time each) into files under ``folder``, then read it from there: a cache
    miss costs a read instead of the computation. Skipped (False) when the free disk
    space is under ``estimate`` bytes plus 1 GiB."""
    import multiprocessing as mp

    from tqdm import tqdm

    n = len(seq)
    st = os.statvfs(folder)
    if st.f_bavail * st.f_frsize < estimate + (1 << 30):
        return False
    parts = max(1, min(n, 4 * workers))
    step = -(-n // parts)
    tasks = [(os.path.join(folder, f"{desc}-{k}.bin"), seq.load, encode, lo, min(n, lo + step))
             for k, lo in enumerate(range(0, n, step))]
    index: list = []
    with tqdm(total=n, desc=desc, unit="asset", file=__import__("sys").stderr, disable=not progress,
              dynamic_ncols=True) as bar:
        if workers > 1 and len(tasks) > 1:
            with mp.get_context("fork").Pool(min(workers, len(tasks))) as pool:
                for part in pool.imap(_stage_part, tasks):
                    index.append(part)
                    bar.update(len(part))
        else:
            for t in tasks:
                index.append(_stage_part(t))
                bar.update(len(index[-1]))
    flat = [[(k, off, shape) for off, shape in entry] for k, part in enumerate(index) for entry in part]
    seq.load = _Staged([t[0] for t in tasks], flat, decode)
    with seq._lock:
        seq._cache.clear()
        seq._held = seq.loads = 0
    return True
