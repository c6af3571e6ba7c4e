"""What every exporter shares: the selection, per-image objects in export conventions,
image/array encoding, density maps, the split, and the staging folder that makes an
export appear complete or not at all.

Conventions (the same in every format):

- boxes: pixel edges, x first: ``[x, y, w, h]`` (COCO) or ``x0, y0, x1, y1`` with
  ``x1 = last column + 1`` (torchvision); the shards store ``y0, x0, y1, x1``;
- points: the visible-pixel centroid in pixel-index coordinates, x first (the centre
  of the top-left pixel is (0, 0)), as COCO keypoints and torchvision ``KeyPoints``;
- categories: one per object of the asset pack, ``category_id = object_id + 1``
  (0 stays free for "background"), named after the object (``object_names``);
- an object hidden entirely (possible only with min_visible t = 0) keeps its
  annotation with area 0, an empty mask, bbox ``[0, 0, 0, 0]`` and no point, and adds
  nothing to the density map.

Writing DEST (the workspace and its publication) is in :mod:`synthcount.export._staging`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..shards import shard_index_of

__all__ = ["ExportError", "ExportOptions", "ExportResult", "Item", "MissingExtraError", "categories",
           "check_checksums", "density_map",
           "encode_image", "encode_npy", "items", "object_names_of", "objects_of", "per_object_fields",
           "require", "selection", "split_of"]

class MissingExtraError(ImportError):
    """An exporter's library is not installed; the message names the extra to install."""


class ExportError(RuntimeError):
    """The dataset's content stopped an export half-way (e.g. labels that disagree with
    the pixels); DEST is left as it was."""


def require(module: str, fmt: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming the ``[export]`` extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"export --format {fmt} needs {module.split('.')[0]} from the [export] extra: "
                                f"pip install 'synthcount[export]'") from None


@dataclass(frozen=True)
class ExportOptions:
    """Per-export settings every writer sees (validated by ``export_dataset``)."""

    points: bool = False
    density: Optional[float] = None  # Gaussian sigma in pixels, or None
    image_format: str = "png"  # "png" or "jpg"
    test_fraction: float = 0.0
    split_seed: int = 0
    tar_size: int = 1000  # images per WebDataset tar shard


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes
    ----------
    dest : str
    format : str
    num_images, num_objects : int
    first_index, end_index : int
        Global image indices exported: ``first_index .. end_index - 1``.
    seconds, images_per_second : float
    files : list of str
        Top-level entries of ``dest``.
    recovered : list of str
        What was cleared before this export started, one line each: workspaces of
        earlier exports to ``dest`` that died (kill -9, power cut), and an earlier
        export put back where a killed ``overwrite`` had moved it aside.
    """

    dest: str
    format: str
    num_images: int = 0
    num_objects: int = 0
    first_index: int = 0
    end_index: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    files: List[str] = field(default_factory=list)
    recovered: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- selection


def selection(ds, shards: Optional[Tuple[int, int]], limit: Optional[int]) -> Tuple[int, int]:
    """Dataset positions ``[start, stop)`` of shards ``I..J-1`` (by shard index), then the first ``limit``.

    Raises
    ------
    ValueError
        ``shards`` not an I:J range of finished shards of ``ds``, or ``limit`` < 1.
    """
    start, stop = 0, len(ds)
    if shards is not None:
        i, j = (int(v) for v in shards)
        have = [shard_index_of(f) for f in ds.files]
        if len(ds.files) == 1 and have[0] is None:  # a single shard file under another name
            have = [int(ds.shard_attrs(0)["shard_index"])]
        missing = [k for k in range(i, j) if k not in have]
        if not 0 <= i < j or missing:
            raise ValueError(f"shards must be I:J with 0 <= I < J naming finished shards of the dataset "
                             f"(it has {sorted(h for h in have if h is not None)}), got {i}:{j}")
        pos = [p for p, k in enumerate(have) if i <= k < j]
        start, stop = int(ds.offsets[pos[0]]), int(ds.offsets[pos[-1] + 1])
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        stop = min(stop, start + int(limit))
    return start, stop


def check_checksums(ds, start: int, stop: int) -> None:
    """Every shard the images ``start .. stop-1`` come from passes what ``synthcount
    verify`` checks, before anything is exported: the sha256 recorded when it was
    written (manifest, or sidecar for a lone shard file), the schema, and that the
    records agree with each other. Two checks of verify happen as the export reads
    instead of in a second pass: each image chunk decodes (a failure stops the export)
    and each label map's pixel counts equal its ``object_areas`` (:func:`items`). An
    export that fails publishes nothing, so a shard that ``verify`` rejects is never
    exported.

    Raises
    ------
    ExportError
        Naming the first shard that fails, and what.
    """
    from ..shards import read_manifest, read_sidecar, verify_shard

    if os.path.isdir(ds.path):
        want = {os.path.join(ds.path, e["file"]): e.get("sha256") for e in read_manifest(ds.path)["shards"]}
    else:
        want = {ds.path: read_sidecar(ds.path)}
    for k, f in enumerate(ds.files):
        if int(ds.offsets[k + 1]) <= start or int(ds.offsets[k]) >= stop:
            continue
        n = int(ds.offsets[k + 1] - ds.offsets[k])
        problems = verify_shard(f, want.get(f) or None, decode_images=False, expected_n=n, label_maps=False)
        if problems:
            raise ExportError(f"{os.path.join(os.path.dirname(f), problems[0])}"
                              f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
                              f"run synthcount verify")


# ----------------------------------------------------------------------------- per image


@dataclass
class Item:
    """One image in export conventions (see the module docstring).

    ``record`` holds every per-image field of the shard, per-object ones cut to the
    ``count`` present objects.
    """

    index: int
    image: np.ndarray        # (H, W, 3) uint8 RGB
    label_map: np.ndarray    # (H, W) uint8, k = object k
    record: Dict[str, np.ndarray]
    count: int
    areas: np.ndarray        # (N,) int64 visible pixels
    boxes_xywh: np.ndarray   # (N, 4) int64 [x, y, w, h], [0, 0, 0, 0] for a hidden object
    points: np.ndarray       # (N, 2) float64 x, y; NaN for a hidden object
    category_ids: np.ndarray  # (N,) int64, object_id + 1
    split: str
    full: Optional[Dict[str, np.ndarray]] = None  # the record before the cut (distractors, exemplars)


def objects_of(rec: dict) -> Tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The present objects of one record (as ``Dataset[i]`` returns it) in export conventions.

    Returns
    -------
    count : int
    areas : ndarray, int64, (N,)
    boxes_xywh : ndarray, int64, (N, 4)
        ``[x, y, w, h]``; ``[0, 0, 0, 0]`` for an object hidden entirely.
    points : ndarray, float64, (N, 2)
        Visible-pixel centroid x, y; NaN for an object hidden entirely.
    category_ids : ndarray, int64, (N,)
        ``object_id + 1`` (1 when the shard has no ``object_ids``).
    """
    n = int(rec["count"])
    areas = np.asarray(rec["object_areas"])[:n].astype(np.int64)
    shown = areas > 0
    boxes = np.zeros((n, 4), np.int64)
    if "object_boxes" in rec:
        yx = np.asarray(rec["object_boxes"])[:n].astype(np.int64)  # y0, x0, y1, x1
        boxes[shown] = np.stack([yx[shown, 1], yx[shown, 0], yx[shown, 3] - yx[shown, 1],
                                 yx[shown, 2] - yx[shown, 0]], axis=1)
    points = np.full((n, 2), np.nan)
    if "object_centroids" in rec:
        cen = np.asarray(rec["object_centroids"])[:n].astype(np.float64)  # y, x
        points[shown] = cen[shown, ::-1]
    ids = np.asarray(rec["object_ids"])[:n].astype(np.int64) if "object_ids" in rec else np.zeros(n, np.int64)
    return n, areas, boxes, points, ids + 1


def yx_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(k, 4) boxes y0, x0, y1, x1 (ends exclusive) as [x, y, w, h]."""
    b = np.asarray(boxes, np.int64).reshape(-1, 4)
    return np.stack([b[:, 1], b[:, 0], b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]], axis=1)


def distractors_of(rec: dict) -> Tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distractors of one full record (labels N+1..N+K): their count K, visible
    areas (K,), boxes [x, y, w, h] (K, 4; zeros when hidden), centroids x, y (K, 2;
    NaN when hidden) and object ids (K,) into the distractors' names."""
    n, k = int(rec["count"]), int(rec.get("num_distractors", 0))
    sl = slice(n, n + k)
    areas = np.asarray(rec["object_areas"])[sl].astype(np.int64)
    shown = areas > 0
    boxes = np.zeros((k, 4), np.int64)
    boxes[shown] = yx_to_xywh(np.asarray(rec["object_boxes"])[sl][shown])
    points = np.full((k, 2), np.nan)
    points[shown] = np.asarray(rec["object_centroids"])[sl][shown, ::-1]
    return k, areas, boxes, points, np.asarray(rec["object_ids"])[sl].astype(np.int64)


def exemplars_of(rec: dict) -> np.ndarray:
    """The image's exemplar boxes (FSC-147 style, up to 3 visible targets) as [x, y, w, h]."""
    if "exemplar_boxes" not in rec:
        return np.zeros((0, 4), np.int64)
    b = np.asarray(rec["exemplar_boxes"]).reshape(-1, 4)
    return yx_to_xywh(b[(b >= 0).all(axis=1)])


def per_object_fields(ds) -> List[str]:
    """Fields of ``ds`` with one entry per object (first per-image axis M)."""
    m = ds.fields["object_areas"][1][0]
    return [k for k, (_dt, shp) in ds.fields.items() if k.startswith("object_") and shp[:1] == (m,)]


def items(ds, start: int, stop: int, opts: ExportOptions) -> Iterator[Item]:
    """:class:`Item` of every image ``start .. stop-1``, read in blocks; an image whose
    label map disagrees with its ``object_areas`` stops the export (ExportError)."""
    from ..shards import label_map_problem

    per_object = set(per_object_fields(ds))
    for pos, rec in enumerate(ds.iter_records(start, stop), start):
        image, label_map = rec.pop("image"), rec.pop("label_map")
        why = label_map_problem(label_map, np.asarray(rec["object_areas"]))
        if why is not None:  # verify's label check, on the map already decoded for the export
            k = int(np.searchsorted(ds.offsets, pos, side="right")) - 1
            raise ExportError(f"{ds.files[k]}: image {pos - int(ds.offsets[k])} (index {int(rec['index'])}): {why}; "
                              f"run synthcount verify")
        n, areas, boxes, points, cats = objects_of(rec)
        cut = {k: (v[:n] if k in per_object else v) for k, v in rec.items()}
        index = int(rec["index"])
        yield Item(index, image, label_map, cut, n, areas, boxes, points, cats,
                   split_of(np.array([index]), opts.test_fraction, opts.split_seed)[0], full=rec)


def categories(ds) -> List[str]:
    """Category names, position ``c`` = ``category_id c + 1`` = object id ``c``.

    The shard's ``object_names`` (made unique if two objects share a name); for
    format-1 shards, which hold none, ``object_<id>`` up to the largest id used.
    """
    names = ds.object_names
    if names is None:
        top = int(ds.column("object_ids").max(initial=-1)) if "object_ids" in ds.fields else 0
        return [f"object_{i}" for i in range(max(top + 1, 1))]
    seen: Dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def object_names_of(item: Item, names: Sequence[str]) -> List[str]:
    """Category names of ``item``'s objects."""
    return [names[c - 1] if 0 < c <= len(names) else f"object_{c - 1}" for c in item.category_ids.tolist()]


def split_of(index: np.ndarray, test_fraction: float, seed: int = 0) -> List[str]:
    """"train" or "test" per global image index: a hash of (seed, index) below
    ``test_fraction`` is "test". Independent of the selection and the format, so every
    export of a dataset splits it alike."""
    if test_fraction <= 0:
        return ["train"] * len(index)
    # splitmix64 of index + seed * golden ratio: a fixed, well-mixed uint64 per image.
    with np.errstate(over="ignore"):
        z = np.asarray(index, np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return ["test" if v < test_fraction else "train" for v in u]


def density_map(points: np.ndarray, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian density map (H, W) float32 that sums to the number of points.

    Each point (x, y in pixel-index coordinates; NaN rows are skipped) spreads a
    Gaussian of standard deviation ``sigma`` pixels over the pixel grid, normalised
    to 1 over the image: an object near the border keeps its full mass instead of
    losing the part of its Gaussian outside the image.
    """
    h, w = shape
    pts = points[~np.isnan(points).any(axis=1)] if len(points) else np.zeros((0, 2))
    if len(pts) == 0:
        return np.zeros((h, w), np.float32)
    # Separable: each Gaussian is an outer product of a row and a column profile,
    # each normalised to 1, so the sum of the map is exactly the number of points
    # and the whole map is one (N, H)^T @ (N, W) product.
    gy = np.exp(-0.5 * ((np.arange(h)[None, :] - pts[:, 1:2]) / sigma) ** 2)  # (N, H)
    gx = np.exp(-0.5 * ((np.arange(w)[None, :] - pts[:, 0:1]) / sigma) ** 2)  # (N, W)
    gy /= gy.sum(axis=1, keepdims=True)
    gx /= gx.sum(axis=1, keepdims=True)
    return (gy.T @ gx).astype(np.float32)


# ----------------------------------------------------------------------------- encoding


def encode_image(rgb_or_gray: np.ndarray, fmt: str = "png") -> bytes:
    """PNG (lossless, zlib level 1) or JPEG (quality 95) bytes of an RGB (H, W, 3) or
    single-channel (H, W) uint8 array.

    PNG level 1 stores the built-in composites in 41% of their raw bytes and encodes
    about 3x faster than level 6, which saves only 9% more; libpng's "fast filters"
    (OpenCV >= 4.11) take another 23% off the encoding time for 0.3% more bytes.
    """
    import cv2

    arr = cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2BGR) if rgb_or_gray.ndim == 3 else rgb_or_gray  # OpenCV: BGR
    if fmt == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        if hasattr(cv2, "IMWRITE_PNG_FILTER"):
            params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FAST_FILTERS]
        ok, buf = cv2.imencode(".png", arr, params)
    else:
        ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise ValueError(f"could not encode a {arr.shape} image as {fmt}")
    return buf.tobytes()


def encode_npy(arr: np.ndarray) -> bytes:
    """``.npy`` file bytes of ``arr``."""
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    return b.getvalue()
