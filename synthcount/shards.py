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

Format 2 (this version) adds, so that a shard describes itself to any HDF5 tool
(:func:`add_self_description`):

- ``object_names`` and ``background_names``: 1-D variable-length UTF-8 string
  datasets, one entry per item of the asset packs (``object_ids`` and
  ``background_id`` index them), and ``distractor_object_names`` when distractors
  come from a pack of their own (the distractors' ``object_ids`` index it). They are
  the only datasets whose first axis is not the image axis (``NAME_DATASETS``);
- on every per-object dataset an ``axes`` attribute naming what its last axis holds
  (``"object"`` for one value per object, else the components in stored order, e.g.
  ``"y0,x0,y1,x1"``), on every dataset measured in pixels or degrees a ``units``
  attribute, and a one-line ``description``;
- label maps compressed with gzip (level ``LABEL_GZIP_LEVEL``) by default: every
  HDF5 build has the deflate filter, while LZF exists only in h5py.

Format 1 shards (no names, no attributes, LZF label maps by default) are still read.

Every dataset is written with ``track_times=False`` and nothing else carries a
clock, so the same images give byte-identical shard files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ._io import WriteError, atomic_write, fsync_dir, sha256_file, tmp_name, write_json_atomic  # noqa: F401 (re-exported)

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "NAME_DATASETS",
    "LABEL_GZIP_LEVEL",
    "pack_names",
    "add_self_description",
    "REQUIRED_DATASETS",
    "REQUIRED_ATTRS",
    "shard_name",
    "shard_index_of",
    "write_shard",
    "ShardWriter",
    "sha256_file",
    "read_sidecar",
    "write_json_atomic",
    "read_manifest",
    "write_manifest",
    "check_schema",
    "label_map_problem",
    "verify_shard",
    "verify_dataset",
    "scan_shards",
]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # format versions this code reads (format 1: no names, no axes attributes)
NAME_DATASETS = ("object_names", "background_names", "distractor_object_names")  # one entry per pack item
# Deflate level of label maps. Measured on 1,000 real 161 x 161 maps (benchmarks/labels.py):
# level 3 writes 10,400 maps/s (LZF 6,900), reads 16,300 (LZF 7,000) and stores 45% of
# LZF's bytes; levels 1-2 store 10-20% more, levels 4 and 6 take 1.5-2x as long.
LABEL_GZIP_LEVEL = 3
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 256 << 20  # ~1.5 million shard entries; a larger manifest.json is refused, not read
MAX_IMAGES = 1 << 48  # num_images beyond this is no dataset's (and would overflow int64 sums)
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
    from ._io import open_regular

    try:
        with open_regular(_sidecar(path), "sha256 sidecar") as f:
            text = f.read(200).decode("ascii", errors="replace").strip()  # 64 hex digits: never read more
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None


# ----------------------------------------------------------------------------- format 2: self-description

# Per-image dataset -> (axes, units, description). ``axes`` is what the last axis holds
# (per-object datasets only); ``units`` where pixels or degrees apply.
_FIELD_INFO = {
    "images": (None, None, "RGB images, uint8 (image, y, x, channel)"),
    "label_maps": (None, None, "0 background, k = k-th pasted object (1-based): targets 1..N, distractors "
                               "N+1..N+K, (image, y, x)"),
    "index": (None, None, "global image index"),
    "count": (None, None, "number of targets N (the counted objects)"),
    "cumulative_area": (None, "pixels", "A: visible target pixels in the image (sum of object_areas where "
                                        "object_role is 0)"),
    "object_areas": ("object", "pixels", "visible pixels of object k at column k-1, 0 where absent"),
    "object_full_areas": ("object", "pixels", "pixels object k would cover if nothing occluded it, 0 where absent"),
    "object_ids": ("object", None, "index into object_names (distractors: distractor_object_names where "
                                   "present), -1 where absent"),
    "object_role": ("object", None, "0 target, 1 distractor, -1 absent"),
    "object_boxes": ("y0,x0,y1,x1", "pixels", "visible-pixel box, ends exclusive, -1 where absent"),
    "object_centroids": ("y,x", "pixels", "visible-pixel centroid (pixel-index coordinates), NaN where absent"),
    "object_position": ("y,x", "pixels", "top-left corner of the pasted patch, -1 where absent"),
    "object_patch_size": ("h,w", "pixels", "size of the pasted patch, -1 where absent"),
    "object_scale": ("object", None, "size factor relative to the asset, NaN where absent"),
    "object_angle": ("object", "degrees", "rotation, counter-clockwise, NaN where absent"),
    "object_flip": ("object", None, "1 = flipped horizontally"),
    "object_color": ("brightness,contrast,saturation", None, "colour jitter factors, NaN where absent"),
    "field_area": (None, "pixels", "area of the convex hull through the centres of all visible target pixels"),
    "mean_item_area": (None, "pixels", "A / N (0 when N = 0)"),
    "background_id": (None, None, "index into background_names"),
    "bg_crop": ("y,x,h,w", "pixels", "background crop in the prescaled background"),
    "min_visible": (None, None, "occlusion threshold t used for this image"),
    "ref_side": (None, "pixels", "reference longer side (independent area mode), NaN otherwise"),
    "target_area": (None, "pixels", "drawn cumulative area (decorrelated area mode), NaN otherwise"),
    "layout_tries": (None, None, "layouts drawn (1 = the first one fitted)"),
    "placement_maps": (None, None, "exact feasible-position maps computed"),
    "unfit_redraws": (None, None, "objects replaced as unable to be laid out N times (unfit='redraw')"),
    "num_distractors": (None, None, "number of distractors K (uncounted objects, labels N+1..N+K)"),
    "target_id": (None, None, "same mode: index into object_names of the counted object (also when N = 0); "
                              "-1 in mixed mode"),
    "exemplar_boxes": ("y0,x0,y1,x1", "pixels", "visible-pixel boxes of up to 3 targets (exemplars), -1 where "
                                                "absent"),
    "total_surface_area": (None, "pixels", "TSA: visible target pixels (= cumulative_area)"),
    "item_surface_area": (None, "pixels", "ISA: TSA / N (0 when N = 0)"),
    "sparsity": (None, "pixels", "field_area / N, NaN when N = 0"),
    "coverage": (None, None, "TSA / field_area, NaN when N = 0 or field_area = 0"),
    "total_perimeter": (None, "pixels", "summed boundary length (outer and holes, through boundary-pixel centres) "
                                        "of each target's visible pixels"),
    "log_size": (None, None, "log TSA + log ISA (natural logs; DeWind's size axis), NaN when N = 0"),
    "log_spacing": (None, None, "log field_area + log sparsity (natural logs; DeWind's spacing axis), NaN when "
                                "N = 0 or field_area = 0"),
    "stimulus_set": (None, None, "stimulus set of the image: index into the shard attribute stimulus_sets"),
    "design_target": ("log_n,log_size,log_spacing", None, "designed values aimed at (design dewind / match), "
                                                          "NaN without a design"),
    "class_counts": ("class", None, "targets of each of the image's classes (mixed mode with classes)"),
    "class_ids": ("class", None, "index into object_names of each of the image's classes"),
    "object_names": (None, None, "name of each object of the asset pack (object_ids index it)"),
    "background_names": (None, None, "name of each background of the asset pack (background_id indexes it)"),
    "distractor_object_names": (None, None, "name of each object of the distractor pack (the distractors' "
                                            "object_ids index it)"),
}


def pack_names(objects, backgrounds, distractor_objects=None) -> dict:
    """``{"object_names": [...], "background_names": [...]}`` of two asset packs, in pack
    order, and ``"distractor_object_names"`` when distractors have a pack of their own."""
    from .stream import object_names

    names = {"object_names": object_names(objects.objects),
             "background_names": list(backgrounds.background_names)}
    if distractor_objects is not None:
        names["distractor_object_names"] = object_names(distractor_objects.objects)
    return names


def add_self_description(f, names: Optional[Mapping[str, Sequence[str]]] = None) -> None:
    """Store the format-2 self-description in an open, writable shard file ``f``.

    Writes ``names`` (``NAME_DATASETS`` -> list of str) as 1-D UTF-8 string datasets
    and gives every dataset of ``f`` its ``axes`` / ``units`` / ``description``
    attributes. A per-object dataset not in the table still gets ``axes``: ``"object"``
    for (n, M), ``"c0,c1,..."`` for (n, M, K).
    """
    import h5py

    for key, values in (names or {}).items():
        if key not in NAME_DATASETS:
            raise ValueError(f"names must be keyed by {NAME_DATASETS}, got {key!r}")
        f.create_dataset(key, data=np.array([str(v) for v in values], dtype=object),
                         dtype=h5py.string_dtype("utf-8"), track_times=False)
    for key, d in f.items():
        axes, units, desc = _FIELD_INFO.get(key, (None, None, None))
        if axes is None and key.startswith("object_") and key not in NAME_DATASETS and d.ndim in (2, 3):
            axes = "object" if d.ndim == 2 else ",".join(f"c{i}" for i in range(d.shape[2]))
        for attr, value in (("axes", axes), ("units", units), ("description", desc)):
            if value is not None:
                d.attrs[attr] = value


def _filter(name: str, labels: bool = False) -> dict:
    """h5py keyword arguments of a compression name (label maps: ``LABEL_GZIP_LEVEL``)."""
    if name not in _COMP:
        raise ValueError(f"compression must be one of {sorted(_COMP)}, got {name!r}")
    kw = {"compression": _COMP[name]}
    if name == "gzip" and labels:
        kw["compression_opts"] = LABEL_GZIP_LEVEL
    return kw


def _attr_value(v):
    # h5py stores Python ints as int64 and str as variable-length UTF-8 text.
    if isinstance(v, (bool, np.bool_)):
        return np.int64(int(v))
    if isinstance(v, (int, np.integer)):
        return np.int64(v)
    return v


class ShardWriter:
    """Write one shard a block of images at a time, then finish it atomically.

    The file is written as ``<path>.tmp-<pid>-<random>`` with its disk space reserved
    before HDF5 writes a byte (so a full disk is one clean ``WriteError`` here; HDF5
    reports it from inside object destructors instead, and has crashed the process
    with SIGBUS/SIGSEGV doing so). :meth:`finish` adds the per-image records, cuts
    the file back to HDF5's end-of-file address, hashes and fsyncs it, writes the
    sidecar ``<stem>.sha256`` and only then renames it to ``path``. On any error the
    temporary file is removed, so a ``.h5`` name always means a complete shard.
    h5py releases the GIL while it writes, so a writer thread costs the thread that
    composes almost nothing.

    Parameters
    ----------
    path : str
        Final file name, ending in ``.h5``.
    n : int
        Images in the shard.
    size : (int, int)
        Image (height, width).
    attrs : dict
        Shard attributes (``REQUIRED_ATTRS`` at least); str, int or float values.
    compression, label_compression : {"none", "lzf", "gzip"}
        Filters for ``images`` and ``label_maps``; records are small and stored plain.
        Label maps use deflate level ``LABEL_GZIP_LEVEL``, images h5py's default (4).
    record_bytes : int
        Bytes the records will take (for the space reservation).
    names : dict, optional
        ``object_names`` / ``background_names`` (lists of str) to store in the shard
        (see :func:`pack_names`).
    """

    def __init__(self, path: str, n: int, size, attrs: Mapping[str, object], *, compression: str = "none",
                 label_compression: str = "gzip", record_bytes: int = 0,
                 names: Optional[Mapping[str, Sequence[str]]] = None):
        import h5py

        h, w = (int(v) for v in size)
        if n < 1 or h < 1 or w < 1:
            raise ValueError(f"a shard needs n >= 1 images of positive size, got n={n}, size={size}")
        for key in (compression, label_compression):
            if key not in _COMP:
                raise ValueError(f"compression must be one of {sorted(_COMP)}, got {key!r}")
        missing = [a for a in REQUIRED_ATTRS if a not in attrs]
        if missing:
            raise ValueError(f"shard attrs lack {missing}")
        self.path, self.n, self.size, self._names = path, n, (h, w), names
        self.tmp = tmp_name(path)
        self._f = None
        bound = int(1.01 * (n * h * w * 4 + record_bytes)) + 128 * (2 * n + 64) + (1 << 20)
        with self._guard():
            self._f = h5py.File(self.tmp, "w")
            reserve_space(self._f.id.get_vfd_handle(), bound, path)
            for k, v in attrs.items():
                self._f.attrs[k] = _attr_value(v)
            # One image per chunk: random access reads exactly one chunk.
            self._images = self._f.create_dataset("images", (n, h, w, 3), np.uint8, chunks=(1, h, w, 3),
                                                  compression=_COMP[compression], track_times=False)
            self._maps = self._f.create_dataset("label_maps", (n, h, w), np.uint8, chunks=(1, h, w),
                                                **_filter(label_compression, labels=True), track_times=False)

    @contextlib.contextmanager
    def _guard(self):
        """Any error: remove the temporary file; OS errors become WriteError naming ``path``."""
        try:
            yield
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError) and not isinstance(e, WriteError):
                raise WriteError(e.errno, f"cannot write {self.path}: {e.strerror or e}") from e
            raise

    def write(self, start: int, images: np.ndarray, label_maps: np.ndarray) -> None:
        """Images ``start .. start + len(images) - 1``: uint8 (b, H, W, 3) and (b, H, W)."""
        b = len(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.size + (3,) or label_maps.dtype != np.uint8 \
                or label_maps.shape != images.shape[:3] or not 0 <= start <= self.n - b:
            self.abort()
            raise ValueError(f"images must be uint8 (b, {self.size[0]}, {self.size[1]}, 3) with label maps "
                             f"(b, {self.size[0]}, {self.size[1]}) inside 0..{self.n}, got {images.dtype} "
                             f"{images.shape}, {label_maps.shape} at {start}")
        with self._guard():
            self._images[start:start + b] = images
            self._maps[start:start + b] = label_maps

    def finish(self, records: Mapping[str, np.ndarray]) -> str:
        """Add the per-image records (each with first axis n, written in the dict's
        order), close, and rename into place. Returns the file's hex sha256."""
        for key, arr in records.items():
            if key in ("images", "label_maps") or len(arr) != self.n:
                self.abort()
                raise ValueError(f"record {key!r} must be a per-image array with first axis {self.n}, "
                                 f"got shape {np.shape(arr)}")
        with self._guard():
            for k, arr in records.items():
                self._f.create_dataset(k, data=np.ascontiguousarray(arr), track_times=False)
            add_self_description(self._f, self._names)  # format 2: names, axes, units
            self._f.close()
            self._f = None
            truncate_to_eoa(self.tmp)  # drop the unused reservation: the bytes of a plain h5py write
            digest = sha256_file(self.tmp)
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            _write_sidecar(self.path, digest)  # before the rename: a finished shard always has its hash
            os.replace(self.tmp, self.path)
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        return digest

    def abort(self) -> None:
        """Drop the shard: close and remove the temporary file (safe to call twice)."""
        if self._f is not None:
            with contextlib.suppress(Exception):
                self._f.close()
            self._f = None
        with contextlib.suppress(OSError):
            os.remove(self.tmp)


def write_shard(path: str, images: np.ndarray, label_maps: np.ndarray, records: Mapping[str, np.ndarray],
                attrs: Mapping[str, object], *, compression: str = "none", label_compression: str = "gzip",
                names: Optional[Mapping[str, Sequence[str]]] = None) -> str:
    """Write one finished shard atomically and return its sha256 (see :class:`ShardWriter`).

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
        Label maps use deflate level ``LABEL_GZIP_LEVEL``, images h5py's default (4).
    names : dict, optional
        ``object_names`` / ``background_names`` (lists of str) to store in the shard
        (see :func:`pack_names`).

    Returns
    -------
    str
        Hex sha256 of the written file.
    """
    n = len(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or n == 0:
        raise ValueError(f"images must be uint8 (n>0, H, W, 3), got {images.dtype} {images.shape}")
    if label_maps.dtype != np.uint8 or label_maps.shape != images.shape[:3]:
        raise ValueError(f"label_maps must be uint8 {images.shape[:3]}, got {label_maps.dtype} {label_maps.shape}")
    w = ShardWriter(path, n, images.shape[1:3], attrs, compression=compression, label_compression=label_compression,
                    record_bytes=sum(np.asarray(a).nbytes for a in records.values()), names=names)
    w.write(0, images, label_maps)
    return w.finish(records)


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
    eoa = hdf5_eoa(path)
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > eoa:
            f.truncate(eoa)


def hdf5_eoa(path: str) -> int:
    """End-of-file address of an HDF5 file as its superblock on disk records it (see
    :func:`truncate_to_eoa`)."""
    with open(path, "rb") as f:
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
        return base + int.from_bytes(head[eof_at:eof_at + 8], "little")


def read_manifest(folder: str) -> dict:
    """Read ``folder/manifest.json``.

    Raises
    ------
    ValueError
        If the manifest is missing or not valid JSON of the expected shape.
    """
    from ._io import read_text_bounded

    path = os.path.join(folder, MANIFEST)
    if not os.path.lexists(path):
        found = scan_shard_names(folder)
        if found or os.path.exists(os.path.join(folder, "dataset.json")):
            raise ValueError(f"{folder}: no {MANIFEST} yet ({len(found)} finished shards): a generate run is "
                             f"writing this dataset or was stopped before listing them; rerun the same generate "
                             f"command (it keeps finished shards) or wait for it, then read it") from None
        raise ValueError(f"{folder}: not a synthcount dataset (no {MANIFEST})") from None
    try:
        man = json.loads(read_text_bounded(path, MAX_MANIFEST_BYTES, "manifest"))
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{path}: unreadable manifest ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(man, dict) or not isinstance(man.get("shards"), list):
        raise ValueError(f"{path}: manifest must be an object with a 'shards' list")
    for i, e in enumerate(man["shards"]):
        # Entries name files in this folder only: a path ("../x.h5", "/abs.h5") is refused,
        # so a manifest can never make a reader or verify follow it elsewhere.
        if not isinstance(e, dict) or not isinstance(e.get("file"), str) or shard_index_of(e["file"]) is None \
                or os.path.basename(e["file"]) != e["file"]:
            raise ValueError(f"{path}: shards[{i}] must be an object whose 'file' is a shard name such as "
                             f"shard-00000.h5 in this folder, got {_short(e)}")
        n = e.get("num_images")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_IMAGES:
            raise ValueError(f"{path}: shards[{i}] ({e['file']}): num_images must be an integer in "
                             f"0..{MAX_IMAGES}, got {_short(n)}")
        sha = e.get("sha256")
        if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            raise ValueError(f"{path}: shards[{i}] ({e['file']}): sha256 must be 64 hex digits or null, "
                             f"got {sha!r:.80}")
    total = man.get("num_images")
    if not isinstance(total, int) or isinstance(total, bool) or not 0 <= total <= MAX_IMAGES:
        raise ValueError(f"{path}: num_images must be an integer in 0..{MAX_IMAGES}, got {_short(total)}")
    return man


def _short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (an attacker's value may be huge)."""
    if isinstance(value, int) and abs(value) >= 10**limit:
        return f"an integer of {len(str(value))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def scan_shard_names(folder: str) -> List[str]:
    """Names of the finished shards (``shard-XXXXX.h5``) in ``folder``, sorted."""
    try:
        return sorted(n for n in os.listdir(folder) if shard_index_of(n) is not None)
    except OSError:
        return []


def scan_shards(folder: str) -> dict:
    """A manifest of ``folder`` made from its finished shards, without writing it:
    what :func:`write_manifest` would list (no missing sidecar is hashed). For
    ``verify`` while a run writes or after one was killed before its manifest."""
    return _manifest_of(folder, None, hash_missing=False)


def write_manifest(folder: str, num_shards_planned: Optional[int] = None, hash_missing: bool = True) -> dict:
    """Scan ``folder`` for finished shards and rewrite ``manifest.json`` atomically.

    Shards are listed in shard order with ``num_images`` (from their attributes) and
    ``sha256`` (from the sidecar written with the shard; hashed and the sidecar
    written if absent and ``hash_missing``). ``num_images`` is their total.
    """
    man = _manifest_of(folder, num_shards_planned, hash_missing)
    write_json_atomic(os.path.join(folder, MANIFEST), man)
    return man


def _manifest_of(folder: str, num_shards_planned: Optional[int], hash_missing: bool) -> dict:
    import h5py

    from ._io import check_regular

    entries = []
    for name in sorted(os.listdir(folder)):
        idx = shard_index_of(name)
        if idx is None or (num_shards_planned is not None and idx >= num_shards_planned):
            continue
        path = os.path.join(folder, name)
        check_regular(path, "shard")  # a FIFO would hang h5py
        digest = read_sidecar(path)
        if digest is None and hash_missing:
            digest = sha256_file(path)
            _write_sidecar(path, digest)
        try:
            with h5py.File(path, "r") as f:
                first = int(f.attrs["first_image_index"])
                n = int(f["images"].shape[0])
        except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
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


def _check_labels(f, name: str, problems: List[str], block: int = 256, maps: bool = True) -> None:
    """Label maps agree with count, roles, object_areas, object_full_areas and cumulative_area
    (``maps`` False: everything but the label maps' pixel counts, which a reader that
    decodes every map anyway checks as it goes: :func:`label_map_problem`)."""
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
    if "total_surface_area" in f:
        bad = np.nonzero(f["total_surface_area"][()].astype(np.int64) != cum)[0]
        if bad.size:
            problems.append(f"{name}: total_surface_area differs from cumulative_area at image {int(bad[0])} "
                            f"({bad.size} images)")
    if "stimulus_set" in f:
        try:
            sets = len(json.loads(f.attrs.get("stimulus_sets", '["standard"]')))
        except (TypeError, ValueError):
            sets = 0
            problems.append(f"{name}: attribute stimulus_sets is not a JSON list")
        st = f["stimulus_set"][()]
        bad = np.nonzero((st < 0) | (st >= sets))[0]
        if bad.size and sets:
            problems.append(f"{name}: stimulus_set outside the {sets} stimulus_sets at image {int(bad[0])}")
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
    if not maps:
        return
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


def _check_names(f, name: str, problems: List[str]) -> None:
    """Name datasets (format 2) are 1-D strings that the ids index. ``f``: the shard's
    datasets by name (a dict, or the open file)."""
    import h5py

    # (names dataset, the ids that index it, what they are); distractors index their
    # own pack's names where the shard has them.
    checks = [("background_names", f["background_id"][()] if "background_id" in f else None, "background_id")]
    if "object_ids" in f:
        ids = f["object_ids"][()]
        if "distractor_object_names" in f and "object_role" in f:
            role = f["object_role"][()]
            checks += [("object_names", np.where(role == 1, -1, ids), "object_ids"),
                       ("distractor_object_names", np.where(role == 1, ids, -1), "object_ids (distractors)")]
        else:
            checks.append(("object_names", ids, "object_ids"))
    for key, ids, what in checks:
        if key not in f:
            continue
        d = f[key]
        if not hasattr(d, "dtype") or d.ndim != 1 or h5py.check_string_dtype(d.dtype) is None:
            problems.append(f"{name}: schema: {key} must be a 1-D string dataset")
        elif ids is not None and ids.size and int(ids.max()) >= d.shape[0]:
            problems.append(f"{name}: {what} holds {int(ids.max())} but {key} has only {d.shape[0]} entries")


def _distractor_threshold(f) -> np.ndarray:
    """The distractors' visibility threshold per image (n, 1): the config's
    ``distractor_min_visible``, or each image's own ``min_visible`` when that is null."""
    t = f["min_visible"][()].astype(np.float64)[:, None]
    try:
        dm = json.loads(f.attrs["config"])["scene"].get("distractor_min_visible")
    except (KeyError, TypeError, ValueError, AttributeError):
        dm = None
    return t if dm is None else np.full_like(t, float(np.float32(dm)))


def check_schema(f, name: str, expected_n: Optional[int] = None, image_size: Optional[Tuple[int, int]] = None,
                 m: Optional[int] = None) -> List[str]:
    """Problems of an open shard's structure and metadata (empty list: usable).

    The one validation gate of every reader (:class:`synthcount.reader.Dataset`, hence
    export, preview, inspect and the VAE's data loading) and the first step of
    :func:`verify_shard`. It reads attributes, dataset headers and the small per-image
    columns it checks (``index``, ``count``, ``num_distractors``, ``object_ids``,
    ``background_id``), never an image or a label map: a few milliseconds per shard
    (benchmarks/README.md, "Readers' validation gate"). Checks: required datasets and
    attributes are there and are datasets (not groups or links); ``format_version`` is
    readable; ``images`` uint8 (n >= 1, H, W, 3) and ``label_maps`` uint8 (n, H, W);
    every per-image dataset has first axis n and the dtype kind and per-image shape of
    :func:`synthcount.schema.record_spec`; ``index`` runs ``first_image_index ..
    end_image_index - 1``; ``count`` and ``num_distractors`` fit the M object columns;
    ids index the names; ``config`` is JSON.

    Parameters
    ----------
    f : h5py.File
    name : str
        How messages name the shard.
    expected_n : int, optional
        Rows the manifest lists for it.
    image_size : (int, int), optional
        (H, W) every shard of the dataset shares.
    m : int, optional
        Object columns M every shard of the dataset shares.
    """
    import h5py

    # Every object looked at once, through h5py's low-level ids: a high-level f[k] costs
    # ~0.1-0.2 ms, and this gate runs on every shard a reader opens.
    links = f.id.links
    objs = {}
    for k in f.keys():
        if links.get_info(k.encode()).type == h5py.h5l.TYPE_HARD:
            oid = h5py.h5o.open(f.id, k.encode())
            objs[k] = _Header(f, k, oid) if isinstance(oid, h5py.h5d.DatasetID) else oid
    fattrs = f.attrs
    attr_names = set(fattrs.keys())
    missing = [k for k in REQUIRED_DATASETS if k not in objs and k not in f]
    missing_attrs = [a for a in REQUIRED_ATTRS if a not in attr_names]
    if missing or missing_attrs:
        return [f"{name}: schema: missing datasets {missing} / attributes {missing_attrs}"]
    # Soft and external links could point anywhere (another file, a device): refused.
    groups = [k for k in f.keys() if not isinstance(objs.get(k), _Header)]
    if groups:
        return [f"{name}: schema: {', '.join(groups[:5])} must be datasets (not groups or links)"]
    try:
        attrs = {a: int(fattrs[a]) for a in ("format_version", "seed", "shard_index", "first_image_index",
                                               "end_image_index")}
    except (TypeError, ValueError, OverflowError):
        return [f"{name}: schema: attributes format_version, seed, shard_index, first_image_index and "
                f"end_image_index must be integers"]
    if attrs["format_version"] not in READABLE_VERSIONS:
        return [f"{name}: format_version {attrs['format_version']} is not one this synthcount reads "
                f"{READABLE_VERSIONS}"]
    img, lm = objs["images"], objs["label_maps"]
    if img.dtype != np.uint8 or img.ndim != 4 or img.shape[3] != 3 or img.shape[0] < 1:
        return [f"{name}: schema: images must be uint8 (n >= 1, H, W, 3), got {img.dtype} {img.shape}"]
    n = img.shape[0]
    problems: List[str] = []
    if expected_n is not None and n != expected_n:
        problems.append(f"{name}: holds {n} images, manifest says {expected_n}")
    if image_size is not None and tuple(img.shape[1:3]) != tuple(image_size):
        problems.append(f"{name}: images are {img.shape[1]}x{img.shape[2]}, the dataset's "
                        f"{image_size[0]}x{image_size[1]} (mixed datasets)")
    if lm.dtype != np.uint8 or lm.shape[1:] != img.shape[1:3] or lm.ndim != 3:
        problems.append(f"{name}: schema: label_maps must be uint8 {img.shape[:3]}, got {lm.dtype} {lm.shape}")
    areas = objs["object_areas"]
    if areas.ndim != 2 or areas.shape[1] < 1:
        return problems + [f"{name}: schema: object_areas must be (n, M) with M >= 1, got {areas.shape}"]
    cols = areas.shape[1]
    if m is not None and cols != m:
        problems.append(f"{name}: {cols} object columns, the dataset's {m} (mixed datasets)")
    from .schema import record_spec

    spec = record_spec(cols)
    classes = None
    wrong_rows: List[str] = []
    for k, d in objs.items():
        if k in NAME_DATASETS:
            continue  # checked by _check_names
        if d.shape[:1] != (n,):
            wrong_rows.append(f"{k} {d.shape}")
            continue
        if k in ("images", "label_maps"):
            continue
        want = spec.get(k)
        if k in ("class_counts", "class_ids"):
            classes = d.shape[1:] if classes is None else classes
            want = (np.dtype(np.int32), classes if len(classes) == 1 else (-1,))
        if want is None:
            continue  # a field this version does not know: read as it is
        kind_ok = d.dtype.kind in ("iu" if want[0].kind in "iu" else "f")
        if not kind_ok or d.shape[1:] != want[1]:
            problems.append(f"{name}: schema: {k} must be {'integer' if want[0].kind in 'iu' else 'float'} "
                            f"(n{''.join(', ' + str(v) for v in want[1])}), got {d.dtype} {d.shape}")
    if wrong_rows:
        problems.insert(0, f"{name}: schema: {len(wrong_rows)} datasets do not have the images' first axis {n}: "
                           f"{', '.join(wrong_rows[:4])}{' ...' if len(wrong_rows) > 4 else ''}")
    if problems:
        return problems
    first, end = attrs["first_image_index"], attrs["end_image_index"]
    if end - first != n or not np.array_equal(objs["index"][()], np.arange(first, end)):
        problems.append(f"{name}: index does not run {first}..{end - 1} over its {n} images")
    count = objs["count"][()].astype(np.int64)
    k = objs["num_distractors"][()].astype(np.int64) if "num_distractors" in objs else np.zeros_like(count)
    bad = np.nonzero((count < 0) | (k < 0) | (count + k > cols))[0]
    if bad.size:
        problems.append(f"{name}: count + num_distractors outside 0..{cols} (the object columns) at image "
                        f"{int(bad[0])} ({bad.size} images)")
    for key in ("object_ids", "background_id"):
        if key in objs:
            ids = objs[key][()]
            if ids.size and int(ids.min()) < -1:
                problems.append(f"{name}: {key} holds {int(ids.min())}, below -1")
            elif ids.size and "object_names" not in objs and key == "object_ids" and int(ids.max()) >= _MAX_V1_IDS:
                problems.append(f"{name}: object_ids holds {int(ids.max())}, more objects than a pack can hold")
    try:
        json.loads(fattrs["config"])
    except (TypeError, ValueError, RecursionError):
        problems.append(f"{name}: attribute config is not JSON")
    _check_names(objs, name, problems)
    return problems


class _Header:
    """What :func:`check_schema` needs of a dataset (shape, dtype) from its low-level id;
    ``d[()]`` reads it through h5py as usual."""

    def __init__(self, f, name: str, oid):
        self._f, self._name = f, name
        self.shape, self.dtype = tuple(oid.shape), oid.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, sel):
        return self._f[self._name][sel]


_MAX_V1_IDS = 1 << 20  # format 1 stores no names: ids past a million objects are no pack's


def label_map_problem(label_map: np.ndarray, object_areas: np.ndarray) -> Optional[str]:
    """Why one label map (H, W) disagrees with its row of ``object_areas`` (M,), or None:
    the per-image form of :func:`verify_shard`'s label check, for readers that decode
    every map anyway (an export)."""
    m = int(object_areas.shape[0])
    top = int(label_map.max(initial=0))
    if top > m:
        return f"label map has label {top} > {m} (max_count + the most distractors)"
    hist = np.bincount(label_map.ravel(), minlength=m + 1)
    if not np.array_equal(hist[1:], object_areas):
        return f"label map has object pixel counts {hist[1:].tolist()} but object_areas {object_areas.tolist()}"
    return None


def verify_shard(path: str, expected_sha256: Optional[str] = None, *, decode_images: bool = True,
                 expected_n: Optional[int] = None, label_maps: bool = True) -> List[str]:
    """Problems found in one shard file (empty list: the shard is good).

    Checks: that it is a regular file, the sha256 (if ``expected_sha256``), that HDF5
    opens it, the schema (:func:`check_schema`: datasets, dtypes, shapes, row counts,
    index and id ranges, attributes), that every image chunk decodes (unless
    ``decode_images`` is False: an export decodes them anyway), and that the records
    agree with each other and the label maps with the counts and areas (the maps'
    pixel counts not if ``label_maps`` is False: an export checks each as it reads it).
    """
    import h5py

    from ._io import NotRegularFile, check_regular

    name = os.path.basename(path)
    try:
        check_regular(path, "shard")
    except NotRegularFile as e:
        return [f"{name}: missing" if not os.path.lexists(path) else f"{name}: {str(e).split(': ', 1)[-1]}"]
    if expected_sha256 is not None:
        got = sha256_file(path)
        if got != expected_sha256:
            return [f"{name}: sha256 {got[:12]}... does not match the manifest's {str(expected_sha256)[:12]}..."]
    problems: List[str] = []
    try:
        with h5py.File(path, "r") as f:
            problems = check_schema(f, name, expected_n)
            if problems:
                return problems
            if decode_images:
                # Decode every chunk (catches filter/compression corruption without a manifest).
                img = f["images"]
                for s in range(0, img.shape[0], 256):
                    img[s:s + 256]
            _check_labels(f, name, problems, maps=label_maps)
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError) as e:
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
    from ._io import read_text_bounded

    path = os.path.join(folder, "dataset.json")
    if not os.path.lexists(path):
        return None
    try:
        ident = json.loads(read_text_bounded(path, 16 << 20, "dataset.json"))
    except (OSError, ValueError, RecursionError) as e:
        problems.append(f"dataset.json: unreadable ({' '.join(str(e).split())[:200]})")
        return None
    cfg = ident.get("config") if isinstance(ident, dict) else None
    if not isinstance(cfg, dict):
        problems.append("dataset.json: has no 'config' object")
        return None
    return _strip_sources(cfg)


def _verify_bar(man: dict, path: str, progress: bool):
    import sys

    from tqdm import tqdm

    return tqdm(total=sum(int(e.get("num_images", 0)) for e in man["shards"]), unit="img", file=sys.stderr,
                disable=not progress, dynamic_ncols=True,
                desc=f"verify {os.path.basename(os.path.normpath(path))}")


def verify_dataset(path: str, progress: bool = False) -> List[str]:
    """Problems found in a dataset folder or a single shard file (empty: all good).

    For a folder: the manifest exists and is consistent (totals, order), every
    listed shard exists, its sha256 matches the manifest, its ``config`` attribute
    matches ``dataset.json`` and :func:`verify_shard` finds nothing; finished shards
    missing from the manifest are reported too. Each problem is one line naming the
    bad shard. ``progress`` shows a tqdm bar (images checked) on stderr. A folder with
    finished shards but no ``manifest.json`` yet (a run writing it, or killed before
    it listed them) has those shards checked against their sidecars (:func:`scan_shards`).
    """
    if os.path.isfile(path):
        return verify_shard(path, read_sidecar(path))  # the sidecar holds the sha256 made at writing
    if not os.path.isdir(path):
        return [f"{path}: no such dataset folder or shard file"]
    try:
        man = read_manifest(path)
    except ValueError as e:
        if os.path.lexists(os.path.join(path, MANIFEST)) or not scan_shard_names(path):
            return [str(e)]
        # No manifest yet (a run is writing, or was killed first): check the finished shards
        # against their sidecars; the totals are theirs.
        try:
            man = scan_shards(path)
        except OSError as e2:
            return [str(e2)]
    problems: List[str] = []
    listed = [e.get("file") for e in man["shards"]]
    total = 0
    prev_end = None
    ref = None  # (config, seed, image shape) every shard of one dataset shares
    bar = _verify_bar(man, path, progress)
    ident_cfg = _identity_config(path, problems)
    for e in man["shards"]:
        fname = str(e.get("file"))
        total += int(e.get("num_images", 0))
        sp = verify_shard(os.path.join(path, fname), e.get("sha256"))
        bar.update(int(e.get("num_images", 0)))
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
    bar.close()
    if total != man.get("num_images"):
        problems.append(f"manifest.json: num_images {man.get('num_images')} != sum over shards {total}")
    for name in sorted(os.listdir(path)):
        if shard_index_of(name) is not None and name not in listed:
            problems.append(f"{name}: finished shard not listed in manifest.json")
    return problems
