"""HDF5 shard schema, the atomic shard writer, the manifest and ``verify``.

A dataset folder holds ``shard-00000.h5``, ``shard-00001.h5``, ... (only finished
shards carry the ``.h5`` ending; work in progress is ``shard-XXXXX.h5.tmp-<pid>-<random>``),
a sidecar ``shard-XXXXX.sha256`` per finished shard (written before the rename, so
the manifest never has to re-hash), ``dataset.json`` (the identity of the dataset,
see :mod:`synthcount.generate`) and ``manifest.json``::

    {"format_version": 1, "num_images": ..., "num_shards_planned": ..., "complete": ...,
     "shards": [{"file": "shard-00000.h5", "shard_index": 0, "first_image_index": 0,
                 "num_images": ..., "sha256": ...}, ...]}

Schema of one shard with ``n`` images of size ``H x W`` and ``M = max_count``:

- ``images`` uint8 (n, H, W, 3), RGB, one image per chunk;
- ``label_maps`` uint8 (n, H, W), 0 background, k = k-th pasted object (1-based),
  one map per chunk;
- ``index`` int64 (n,), global image index;
- ``count`` (n,) int, ``object_areas`` / ``object_full_areas`` (n, M) int,
  ``cumulative_area`` (n,) int, and one dataset per further key of the compositor's
  record (boxes, centroids, transform parameters, ...; see :mod:`synthcount.schema`), first axis n;
- attributes ``format_version``, ``synthcount_version``, ``config`` (JSON text),
  ``seed``, ``shard_index``, ``first_image_index``, ``end_image_index``.

Every dataset is written with ``track_times=False`` and nothing else carries a
clock, so the same images give byte-identical shard files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from typing import List, Mapping, Optional, Tuple

import numpy as np

from ._io import WriteError, atomic_write, fsync_dir, sha256_file, tmp_name, write_json_atomic  # noqa: F401 (re-exported)

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_DATASETS",
    "REQUIRED_ATTRS",
    "shard_name",
    "shard_index_of",
    "write_shard",
    "sha256_file",
    "read_sidecar",
    "write_json_atomic",
    "read_manifest",
    "write_manifest",
    "verify_shard",
    "verify_dataset",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_DATASETS = ("images", "label_maps", "index", "count", "object_areas", "object_full_areas",
                     "cumulative_area")
REQUIRED_ATTRS = ("format_version", "synthcount_version", "config", "seed", "shard_index",
                  "first_image_index", "end_image_index")
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")
_COMP = {"none": None, "lzf": "lzf", "gzip": "gzip"}


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00012.h5``."""
    return f"shard-{int(index):05d}.h5"


def shard_index_of(name: str) -> Optional[int]:
    """Shard index parsed from a finished shard's file name, or None if it is not one."""
    m = _SHARD_RE.match(os.path.basename(name))
    return int(m.group(1)) if m else None


def _sidecar(path: str) -> str:
    return path[:-3] + ".sha256" if path.endswith(".h5") else path + ".sha256"


def _write_sidecar(path: str, digest: str) -> None:
    with atomic_write(_sidecar(path), "w") as s:
        s.write(digest + "\n")


def read_sidecar(path: str) -> Optional[str]:
    """The sha256 recorded next to finished shard ``path``, or None if absent/garbled."""
    try:
        with open(_sidecar(path)) as f:
            text = f.read().strip()
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None


def _attr_value(v):
    # h5py stores Python ints as int64 and str as variable-length UTF-8 text.
    if isinstance(v, (bool, np.bool_)):
        return np.int64(int(v))
    if isinstance(v, (int, np.integer)):
        return np.int64(v)
    return v


def write_shard(path: str, images: np.ndarray, label_maps: np.ndarray, records: Mapping[str, np.ndarray],
                attrs: Mapping[str, object], *, compression: str = "none", label_compression: str = "lzf") -> str:
    """Write one finished shard atomically and return its sha256.

    The file is written as ``<path>.tmp-<pid>-<random>`` with its space reserved
    first, hashed and fsynced, the hash stored in the sidecar ``<stem>.sha256``, and
    only then renamed to ``path``; on any error (a full disk included: ``WriteError``
    naming the file) the temporary file is removed, so a ``.h5`` name always means a
    complete shard.

    Parameters
    ----------
    path : str
        Final file name, ending in ``.h5``.
    images : ndarray, uint8, shape (n, H, W, 3)
    label_maps : ndarray, uint8, shape (n, H, W)
    records : dict of str -> ndarray
        Per-image fields, each with first axis n (e.g. ``count`` (n,),
        ``object_areas`` (n, M)). Written in the dict's order.
    attrs : dict
        Shard attributes (``REQUIRED_ATTRS`` at least); str, int or float values.
    compression, label_compression : {"none", "lzf", "gzip"}
        Filters for ``images`` and ``label_maps``; records are small and stored plain.

    Returns
    -------
    str
        Hex sha256 of the written file.
    """
    import h5py

    n = len(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or n == 0:
        raise ValueError(f"images must be uint8 (n>0, H, W, 3), got {images.dtype} {images.shape}")
    if label_maps.dtype != np.uint8 or label_maps.shape != images.shape[:3]:
        raise ValueError(f"label_maps must be uint8 {images.shape[:3]}, got {label_maps.dtype} {label_maps.shape}")
    for key, arr in records.items():
        if key in ("images", "label_maps") or len(arr) != n:
            raise ValueError(f"record {key!r} must be a per-image array with first axis {n}, got shape {np.shape(arr)}")
    for key in (compression, label_compression):
        if key not in _COMP:
            raise ValueError(f"compression must be one of {sorted(_COMP)}, got {key!r}")
    missing = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing:
        raise ValueError(f"shard attrs lack {missing}")
    _, h, w, _ = images.shape
    # Disk space for the whole file is reserved before HDF5 writes a byte, so a full
    # disk is one clean WriteError here: HDF5 reports it from inside object
    # destructors instead, and has crashed the process with SIGBUS/SIGSEGV doing so.
    bound = int(1.01 * (images.nbytes + label_maps.nbytes + sum(np.asarray(a).nbytes for a in records.values())))
    bound += 128 * (2 * n + len(records)) + (1 << 20)  # chunk index and object headers
    tmp = tmp_name(path)
    try:
        with h5py.File(tmp, "w") as f:
            reserve_space(f.id.get_vfd_handle(), bound, path)
            for k, v in attrs.items():
                f.attrs[k] = _attr_value(v)
            # One image per chunk: random access reads exactly one chunk.
            f.create_dataset("images", data=images, chunks=(1, h, w, 3), compression=_COMP[compression],
                             track_times=False)
            f.create_dataset("label_maps", data=label_maps, chunks=(1, h, w),
                             compression=_COMP[label_compression], track_times=False)
            for k, arr in records.items():
                f.create_dataset(k, data=np.ascontiguousarray(arr), track_times=False)
        truncate_to_eoa(tmp)  # drop the unused reservation: the bytes of a plain h5py write
        digest = sha256_file(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _write_sidecar(path, digest)  # before the rename: a finished shard always has its hash
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return digest


def reserve_space(fd: int, nbytes: int, path: str) -> None:
    """Allocate ``nbytes`` for the open file ``fd`` now (``posix_fallocate``), so that
    writing up to that size cannot fail for lack of space later; raise WriteError
    naming ``path`` if the space is not there. Where the filesystem cannot reserve,
    compare with its free space instead."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
        return
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise WriteError(e.errno, f"cannot write {path}: {e.strerror} (it needs about "
                                      f"{nbytes / 2**20:.0f} MiB)") from None
    st = os.fstatvfs(fd)
    if st.f_bavail * st.f_frsize < nbytes:
        raise WriteError(errno.ENOSPC, f"cannot write {path}: No space left on device (it needs about "
                                       f"{nbytes / 2**20:.0f} MiB, {st.f_bavail * st.f_frsize / 2**20:.0f} MiB free)")


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def truncate_to_eoa(path: str) -> None:
    """Cut an HDF5 file (superblock at offset 0) to its end-of-file address, the end
    of the data HDF5 wrote: what remains of a ``reserve_space`` reservation goes.

    The address is read from the superblock (HDF5 file format specification: offset
    40 in versions 0, 44 in version 1, 28 in versions 2 and 3, relative to the base
    address; 8-byte offsets).
    """
    with open(path, "rb+") as f:
        head = f.read(48)
        if head[:8] != _HDF5_SIGNATURE:
            raise OSError(f"{path}: not an HDF5 file with its superblock at offset 0")
        version = head[8]
        if version in (0, 1):
            size_off, base_at = head[13], 24 if version == 0 else 28
            eof_at = base_at + 2 * size_off
        elif version in (2, 3):
            size_off, base_at = head[9], 12
            eof_at = base_at + 2 * size_off
        else:
            raise OSError(f"{path}: HDF5 superblock version {version} is not known here")
        if size_off != 8:
            raise OSError(f"{path}: HDF5 offsets of {size_off} bytes are not supported here")
        base = int.from_bytes(head[base_at:base_at + 8], "little")
        eoa = base + int.from_bytes(head[eof_at:eof_at + 8], "little")
        f.seek(0, os.SEEK_END)
        if f.tell() > eoa:
            f.truncate(eoa)


def read_manifest(folder: str) -> dict:
    """Read ``folder/manifest.json``.

    Raises
    ------
    ValueError
        If the manifest is missing or not valid JSON of the expected shape.
    """
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as f:
            man = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{folder}: not a synthcount dataset (no {MANIFEST})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(man, dict) or not isinstance(man.get("shards"), list):
        raise ValueError(f"{path}: manifest must be an object with a 'shards' list")
    for i, e in enumerate(man["shards"]):
        # Entries name files in this folder only: a path ("../x.h5", "/abs.h5") is refused,
        # so a manifest can never make a reader or verify follow it elsewhere.
        if not isinstance(e, dict) or not isinstance(e.get("file"), str) or shard_index_of(e["file"]) is None \
                or os.path.basename(e["file"]) != e["file"]:
            raise ValueError(f"{path}: shards[{i}] must be an object whose 'file' is a shard name such as "
                             f"shard-00000.h5 in this folder, got {e!r:.80}")
        n = e.get("num_images")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"{path}: shards[{i}] ({e['file']}): num_images must be a non-negative integer, got {n!r}")
        sha = e.get("sha256")
        if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            raise ValueError(f"{path}: shards[{i}] ({e['file']}): sha256 must be 64 hex digits or null, got {sha!r:.80}")
    total = man.get("num_images")
    if not isinstance(total, int) or isinstance(total, bool):
        raise ValueError(f"{path}: num_images must be an integer, got {total!r}")
    return man


def write_manifest(folder: str, num_shards_planned: Optional[int] = None, hash_missing: bool = True) -> dict:
    """Scan ``folder`` for finished shards and rewrite ``manifest.json`` atomically.

    Shards are listed in shard order with ``num_images`` (from their attributes) and
    ``sha256`` (from the sidecar written with the shard; hashed and the sidecar
    written if absent and ``hash_missing``). ``num_images`` is their total.
    """
    import h5py

    entries = []
    for name in sorted(os.listdir(folder)):
        idx = shard_index_of(name)
        if idx is None or (num_shards_planned is not None and idx >= num_shards_planned):
            continue
        path = os.path.join(folder, name)
        digest = read_sidecar(path)
        if digest is None and hash_missing:
            digest = sha256_file(path)
            _write_sidecar(path, digest)
        try:
            with h5py.File(path, "r") as f:
                first = int(f.attrs["first_image_index"])
                n = int(f["images"].shape[0])
        except (OSError, KeyError, ValueError) as e:
            raise OSError(f"{path}: unreadable shard ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); run synthcount verify") from None
        entries.append({"file": name, "shard_index": idx, "first_image_index": first,
                        "num_images": n, "sha256": digest})
    entries.sort(key=lambda e: e["shard_index"])
    man = {"format_version": FORMAT_VERSION,
           "num_images": int(sum(e["num_images"] for e in entries)),
           "num_shards_planned": num_shards_planned,
           "complete": num_shards_planned is not None and len(entries) == num_shards_planned,
           "shards": entries}
    write_json_atomic(os.path.join(folder, MANIFEST), man)
    return man


# ----------------------------------------------------------------------------- verify


def _check_roles(f, name: str, count: np.ndarray, m: int, problems: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    """``object_role`` per column (0 target, 1 distractor, -1 absent) and K per image.

    Datasets made before distractors have neither ``object_role`` nor
    ``num_distractors``: every column below ``count`` is then a target. Otherwise the
    roles must read targets 1..count, then num_distractors distractors, then absent.
    """
    cols = np.arange(m)[None, :]
    k = f["num_distractors"][()].astype(np.int64) if "num_distractors" in f else np.zeros_like(count)
    want = np.where(cols < count[:, None], 0, np.where(cols < (count + k)[:, None], 1, -1))
    if "object_role" not in f:
        return want, k
    role = f["object_role"][()].astype(np.int64)
    bad = np.nonzero((role != want).any(axis=1) | (k < 0) | (count + k > m))[0]
    if bad.size:
        problems.append(f"{name}: object_role at image {int(bad[0])} is {role[bad[0]].tolist()}, not count "
                        f"{int(count[bad[0]])} targets (0) then num_distractors {int(k[bad[0]])} distractors (1) "
                        f"({bad.size} images)")
    return role, k


def _check_exemplars(f, name: str, role: np.ndarray, areas: np.ndarray, problems: List[str]) -> None:
    """Each exemplar box is the box of a visible target of its image, and an image has
    min(3, visible targets) of them (the rest -1)."""
    if "exemplar_boxes" not in f:
        return
    ex = f["exemplar_boxes"][()].astype(np.int64)          # (n, E, 4)
    boxes = f["object_boxes"][()].astype(np.int64)         # (n, M, 4)
    visible = (role == 0) & (areas > 0)                    # (n, M)
    same = (ex[:, :, None, :] == boxes[:, None, :, :]).all(axis=3) & visible[:, None, :]  # (n, E, M)
    present = (ex != -1).any(axis=2)                       # (n, E)
    wrong = (present & ~same.any(axis=2)).any(axis=1)
    wrong |= present.sum(axis=1) != np.minimum(visible.sum(axis=1), ex.shape[1])
    wrong |= ((ex == -1).any(axis=2) & present).any(axis=1)
    bad = np.nonzero(wrong)[0]
    if bad.size:
        problems.append(f"{name}: exemplar_boxes of image {int(bad[0])} are not the boxes of up to "
                        f"{ex.shape[1]} visible targets ({bad.size} images)")


def _check_labels(f, name: str, problems: List[str], block: int = 256) -> None:
    """Label maps agree with count, roles, object_areas, object_full_areas and cumulative_area."""
    count = f["count"][()].astype(np.int64)
    areas = f["object_areas"][()].astype(np.int64)
    full = f["object_full_areas"][()].astype(np.int64)
    cum = f["cumulative_area"][()].astype(np.int64)
    n, m = areas.shape
    bad = np.nonzero((count < 0) | (count > m))[0]
    if bad.size:
        problems.append(f"{name}: count outside 0..{m} at image {int(bad[0])} ({bad.size} images)")
        return
    role, k = _check_roles(f, name, count, m, problems)
    bad = np.nonzero(cum != np.where(role == 0, areas, 0).sum(axis=1))[0]
    if bad.size:
        problems.append(f"{name}: cumulative_area differs from the sum of the targets' object_areas at image "
                        f"{int(bad[0])} ({bad.size} images)")
    bad = np.nonzero((full < areas).any(axis=1))[0]
    if bad.size:
        problems.append(f"{name}: object_full_areas < object_areas at image {int(bad[0])} ({bad.size} images)")
    cols = np.arange(m)[None, :]
    bad = np.nonzero(((cols >= (count + k)[:, None]) & (areas != 0)).any(axis=1))[0]
    if bad.size:
        problems.append(f"{name}: object_areas nonzero beyond count + num_distractors at image "
                        f"{int(bad[0])} ({bad.size} images)")
    present = cols < (count + k)[:, None]
    bad = np.nonzero((present & (full <= 0)).any(axis=1))[0]
    if bad.size:
        problems.append(f"{name}: an object within count + num_distractors has object_full_areas 0 at image "
                        f"{int(bad[0])}")
    elif "min_visible" in f:
        # Occlusion rule: visible / full >= t (t stored as float32: allow its rounding).
        t = np.where(role == 1, _distractor_threshold(f), f["min_visible"][()].astype(np.float64)[:, None])
        frac = np.where(present, areas / np.maximum(full, 1), 1.0)
        bad = np.nonzero((frac < t - 1e-6).any(axis=1))[0]
        if bad.size:
            problems.append(f"{name}: an object is less visible than its threshold (min_visible, or "
                            f"distractor_min_visible) at image {int(bad[0])}")
    _check_exemplars(f, name, role, areas, problems)
    if "class_counts" in f:
        cc = f["class_counts"][()].astype(np.int64)
        bad = np.nonzero((cc < 0).any(axis=1) | (cc.sum(axis=1) != count))[0]
        if bad.size:
            problems.append(f"{name}: class_counts do not add up to count at image {int(bad[0])} ({bad.size} images)")
    lm = f["label_maps"]
    for s in range(0, n, block):
        maps = lm[s:s + block]  # (b, H, W), a block at a time: never the whole shard
        b = len(maps)
        if int(maps.max(initial=0)) > m:
            i = int(np.nonzero(maps.reshape(b, -1).max(axis=1) > m)[0][0])
            problems.append(f"{name}: label map of image {s + i} has label > {m} (max_count + the most distractors)")
            return
        # Per-image histograms in one bincount: offset each image's labels by (m+1)*i.
        off = (np.arange(b, dtype=np.int64) * (m + 1))[:, None, None]
        hist = np.bincount((maps.astype(np.int64) + off).ravel(), minlength=b * (m + 1)).reshape(b, m + 1)
        diff = np.nonzero((hist[:, 1:] != areas[s:s + b]).any(axis=1))[0]
        if diff.size:
            i = int(diff[0])
            problems.append(f"{name}: label map of image {s + i} has object pixel counts {hist[i, 1:].tolist()} "
                            f"but object_areas {areas[s + i].tolist()}")
            return


def _distractor_threshold(f) -> np.ndarray:
    """The distractors' visibility threshold per image (n, 1): the config's
    ``distractor_min_visible``, or each image's own ``min_visible`` when that is null."""
    t = f["min_visible"][()].astype(np.float64)[:, None]
    try:
        dm = json.loads(f.attrs["config"])["scene"].get("distractor_min_visible")
    except (KeyError, TypeError, ValueError, AttributeError):
        dm = None
    return t if dm is None else np.full_like(t, float(np.float32(dm)))


def verify_shard(path: str, expected_sha256: Optional[str] = None) -> List[str]:
    """Problems found in one shard file (empty list: the shard is good).

    Checks: the sha256 (if ``expected_sha256``), that HDF5 opens it, the schema
    (required datasets, dtypes, first axes, attributes, index range), that every
    image chunk decodes, and that the label maps agree with the stored counts and areas.
    """
    import h5py

    name = os.path.basename(path)
    if not os.path.isfile(path):
        return [f"{name}: missing"]
    if expected_sha256 is not None:
        got = sha256_file(path)
        if got != expected_sha256:
            return [f"{name}: sha256 {got[:12]}... does not match the manifest's {str(expected_sha256)[:12]}..."]
    problems: List[str] = []
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_DATASETS if k not in f]
            missing_attrs = [a for a in REQUIRED_ATTRS if a not in f.attrs]
            if missing or missing_attrs:
                return [f"{name}: schema: missing datasets {missing} / attributes {missing_attrs}"]
            img, lm = f["images"], f["label_maps"]
            n = img.shape[0]
            if img.dtype != np.uint8 or img.ndim != 4 or img.shape[3] != 3:
                problems.append(f"{name}: schema: images must be uint8 (n, H, W, 3), got {img.dtype} {img.shape}")
            if lm.dtype != np.uint8 or lm.shape != img.shape[:3]:
                problems.append(f"{name}: schema: label_maps must be uint8 {img.shape[:3]}, got {lm.dtype} {lm.shape}")
            for k, d in f.items():
                if not isinstance(d, h5py.Dataset) or d.shape[:1] != (n,):
                    problems.append(f"{name}: schema: {k} must be a dataset with first axis {n}")
            for k in ("count", "object_areas", "object_full_areas", "cumulative_area", "index"):
                if f[k].dtype.kind not in "iu":
                    problems.append(f"{name}: schema: {k} must be integer, got {f[k].dtype}")
            first, end = int(f.attrs["first_image_index"]), int(f.attrs["end_image_index"])
            if end - first != n or not np.array_equal(f["index"][()], np.arange(first, end)):
                problems.append(f"{name}: index does not run {first}..{end - 1} over its {n} images")
            try:
                json.loads(f.attrs["config"])
            except (TypeError, ValueError):
                problems.append(f"{name}: attribute config is not JSON")
            if problems:
                return problems
            # Decode every chunk (catches filter/compression corruption without a manifest).
            for s in range(0, n, 256):
                img[s:s + 256]
            _check_labels(f, name, problems)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        problems.append(f"{name}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    return problems


def _strip_sources(cfg) -> dict:
    """A dataset config without its source paths (the same assets may be mounted
    elsewhere; ``dataset.json`` identifies them by their packs' fingerprints).
    ``distractor_objects`` stays when it is no path (None: the object pool; "builtin")."""
    if not isinstance(cfg, dict):
        return {}
    out = dict(cfg)
    if isinstance(out.get("sources"), dict):
        out["sources"] = {k: v for k, v in out["sources"].items() if not (
            k in ("objects", "backgrounds") or (k == "distractor_objects" and v not in (None, "builtin")))}
    return out


def _identity_config(folder: str, problems: List[str]) -> Optional[dict]:
    """The config recorded in ``folder/dataset.json`` (None if there is none)."""
    path = os.path.join(folder, "dataset.json")
    try:
        with open(path) as f:
            ident = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        problems.append(f"dataset.json: unreadable ({e})")
        return None
    cfg = ident.get("config") if isinstance(ident, dict) else None
    if not isinstance(cfg, dict):
        problems.append("dataset.json: has no 'config' object")
        return None
    return _strip_sources(cfg)


def verify_dataset(path: str) -> List[str]:
    """Problems found in a dataset folder or a single shard file (empty: all good).

    For a folder: the manifest exists and is consistent (totals, order), every
    listed shard exists, its sha256 matches the manifest, its ``config`` attribute
    matches ``dataset.json`` and :func:`verify_shard` finds nothing; finished shards
    missing from the manifest are reported too.
    Each problem is one line naming the bad shard.
    """
    if os.path.isfile(path):
        return verify_shard(path, read_sidecar(path))  # the sidecar holds the sha256 made at writing
    if not os.path.isdir(path):
        return [f"{path}: no such dataset folder or shard file"]
    try:
        man = read_manifest(path)
    except ValueError as e:
        return [str(e)]
    problems: List[str] = []
    listed = [e.get("file") for e in man["shards"]]
    total = 0
    prev_end = None
    ref = None  # (config, seed, image shape) every shard of one dataset shares
    ident_cfg = _identity_config(path, problems)
    for e in man["shards"]:
        fname = str(e.get("file"))
        total += int(e.get("num_images", 0))
        sp = verify_shard(os.path.join(path, fname), e.get("sha256"))
        problems.extend(sp)
        if not sp:
            import h5py

            with h5py.File(os.path.join(path, fname), "r") as f:
                n = int(f["images"].shape[0])
                first = int(f.attrs["first_image_index"])
                k = int(f.attrs["shard_index"])
                cfg = json.loads(f.attrs["config"])
                mine = (cfg, int(f.attrs["seed"]), tuple(f["images"].shape[1:]))
            if n != int(e.get("num_images", -1)):
                problems.append(f"{fname}: holds {n} images, manifest says {e.get('num_images')}")
            size = cfg.get("shard_size") if isinstance(cfg, dict) else None
            if k != shard_index_of(fname) or (isinstance(size, int) and first != k * size):
                problems.append(f"{fname}: attributes say shard {k} from image {first}, "
                                f"not what its name and shard size ({size}) imply")
            if ident_cfg is not None and _strip_sources(cfg) != ident_cfg:
                diff = sorted(k for k in set(ident_cfg) | set(cfg) if ident_cfg.get(k) != _strip_sources(cfg).get(k))
                problems.append(f"{fname}: its config differs from dataset.json's (in {', '.join(diff)}): "
                                f"a shard of another dataset")
            if ref is None:
                ref = (fname, mine)
            elif mine != ref[1]:
                what = "config" if mine[0] != ref[1][0] else "seed" if mine[1] != ref[1][1] else "image size"
                problems.append(f"{fname}: made with another {what} than {ref[0]} (mixed datasets)")
            if prev_end is not None and first < prev_end:
                problems.append(f"{fname}: listed out of order (first image {first} < {prev_end})")
            prev_end = first + n
    if total != man.get("num_images"):
        problems.append(f"manifest.json: num_images {man.get('num_images')} != sum over shards {total}")
    for name in sorted(os.listdir(path)):
        if shard_index_of(name) is not None and name not in listed:
            problems.append(f"{name}: finished shard not listed in manifest.json")
    return problems
